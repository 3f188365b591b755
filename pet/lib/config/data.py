"""Defaults of the ``DATA`` section: the data set, its held-out split and the training batches."""
from yacs.config import CfgNode as CN

DATA = CN()
# The data set, a name in the DATASETS registry (pet.data): "digits", the 1797 8x8
# handwritten digits that ship inside scikit-learn (no download).
DATA.DATASET = "digits"
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
# augmentation); the shifts are a pure function of (SEED, epoch) so a resumed run sees the same.
DATA.MAX_SHIFT = 0
