"""Defaults of the run-level keys and of the ``TEST`` section: seeding, logging, evaluation."""
from yacs.config import CfgNode as CN

# Seed of the model init, the data order, the augmentation and dropout. Same seed, same
# config, same machine: the same final weights, bit for bit, even across --resume.
SEED = 0
# torch intra-op CPU threads (0 keeps torch's default, one per core). The default job's small
# models run fastest on one thread (more threads cost more in synchronization than they save,
# and much more when the cores are shared), and one thread gives the same results on any
# machine: results are bit-exact only between runs with the same number of threads.
NUM_THREADS = 1
# Write a metrics line (metrics.json, log.txt) every this many iterations; the gradient norm
# (grad_norm) is measured on these iterations only (the other steps only check finiteness).
LOG_PERIOD = 20

TEST = CN()
# Evaluate on the held-out images every this many iterations (0: only at the end).
TEST.EVAL_ITERS = 0
# Evaluate every this many epochs (replaces EVAL_ITERS when set).
TEST.EVAL_EPOCHS = None
# Images per evaluation batch (no effect on the result, only on speed and memory).
TEST.BATCH_SIZE = 512
