"""Defaults of the run-level keys and of the ``TEST`` section: seeding, logging, evaluation."""
from yacs.config import CfgNode as CN

# Seed of the model init, the data order, the augmentation and dropout. Same seed, same
# config, same machine: the same final weights, bit for bit, even across --resume.
SEED = 0
# torch intra-op CPU threads (0 keeps torch's default). Results are bit-exact only between runs
# with the same number of threads.
NUM_THREADS = 0
# Write a metrics line (metrics.json, log.txt) every this many iterations.
LOG_PERIOD = 20

TEST = CN()
# Evaluate on the held-out images every this many iterations (0: only at the end).
TEST.EVAL_ITERS = 0
# Evaluate every this many epochs (replaces EVAL_ITERS when set).
TEST.EVAL_EPOCHS = None
# Images per evaluation batch (no effect on the result, only on speed and memory).
TEST.BATCH_SIZE = 512
