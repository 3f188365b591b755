"""Defaults of the ``DATA`` section: the data set, its held-out split and the training batches."""
from yacs.config import CfgNode as CN

DATA = CN()
# The data set, a name in the DATASETS registry (pet.data): "digits", the 1797 8x8
# handwritten digits that ship inside scikit-learn (no download), or your own: a function
# build(DATA node) -> (train, test) torch Datasets of (input, label) items, registered with
# @DATASETS.register(name="x") in a CUSTOM_IMPORTS module (README "Your own model and data").
DATA.DATASET = "digits"
# Where a data set read from disk finds its files (your build function reads it; the digits
# ignore it).
DATA.ROOT = ""
# Fraction of the images held out for evaluation, in (0, 1) (a random subset, fixed by SPLIT_SEED).
DATA.TEST_FRACTION = 0.2
# Seed of the train/test split, kept apart from SEED so that every run of a study is
# evaluated on the same held-out images.
DATA.SPLIT_SEED = 0
# Training images per iteration (one optimizer step).
DATA.BATCH_SIZE = 32
# Drop the last, smaller batch of each epoch so every step sees BATCH_SIZE images.
DATA.DROP_LAST = True
# Shift each training image by up to this many pixels in x and y (0 disables the
# augmentation); drawn from torch's generator, which the loader seeds per item from
# (SEED, epoch, index) so a resumed run sees the same shifts.
DATA.MAX_SHIFT = 0
# DataLoader worker processes per training process; 0 reads the items in the training
# process; -1: from the CPUs of each of this machine's training processes, all but one on a
# GPU, a quarter on the CPU (whose training threads need the rest), at most 4. A batch is the
# same whatever the count (each item has its own random state).
DATA.NUM_WORKERS = -1
# Batches each worker reads ahead (torch's prefetch_factor; used with workers).
DATA.PREFETCH_FACTOR = 2
