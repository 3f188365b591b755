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
# Write a metrics line (metrics.json, log.txt) every this many iterations. These iterations
# (with each evaluation and the last) are the only ones that read values back from the device
# (the loss, the gradient norm, grad_norm, measured on them only, the skip counts): the other
# steps never wait for the GPU.
LOG_PERIOD = 20
# Bit-exact runs on CUDA: cuDNN's deterministic algorithms without benchmark autotuning (whose
# choice can change from run to run) and torch.use_deterministic_algorithms (warning, not
# failing, where an op has none), so a run killed and resumed ends bit-identical to one never
# interrupted. False lets cuDNN autotune (cudnn.benchmark) for speed, run-to-run exactness
# lost. No effect on the CPU, which is deterministic at a fixed NUM_THREADS.
DETERMINISTIC = True
# TensorFloat-32 (10-bit mantissa) for float32 matmuls and convolutions on Ampere and later
# GPUs: faster, less exact. False computes float32 in float32 (torch's default for matmuls;
# torch's own default for cuDNN convolutions is TF32). No effect on the CPU or on AMP's
# half-precision ops.
TF32 = False

TEST = CN()
# Evaluate on the held-out images every this many iterations (0: only at the end).
TEST.EVAL_ITERS = 0
# Evaluate every this many epochs (replaces EVAL_ITERS when set).
TEST.EVAL_EPOCHS = None
# Images per evaluation batch (no effect on the result, only on speed and memory).
TEST.BATCH_SIZE = 512
