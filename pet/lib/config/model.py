"""Defaults of the ``MODEL`` section: which small network the job trains."""
from yacs.config import CfgNode as CN

MODEL = CN()
# The network, a name in the MODELS registry (pet.models): "cnn" (conv + BatchNorm) or
# "transformer" (pixel tokens + LayerNorm).
MODEL.TYPE = "cnn"
# Where the model trains: "auto" (CUDA when available, else the CPU), "cpu", "cuda" or
# "cuda:N". Under torchrun each process takes the GPU of its LOCAL_RANK when "auto" or "cuda".
MODEL.DEVICE = "auto"
# Number of output classes (10 for the digits).
MODEL.NUM_CLASSES = 10
# Path of a .pth file whose "model" weights initialize the network before training (fine-tuning
# or --eval-only); "" trains from the seeded random init. Ignored by --resume.
MODEL.WEIGHTS = ""

# An exponential moving average of the weights (timm's ModelEmaV3, MMEngine's EMAHook), evaluated
# beside the trained weights ("ema_accuracy") and saved in every checkpoint under "ema".
MODEL.EMA = CN()
MODEL.EMA.ENABLED = False
# ema = DECAY * ema + (1 - DECAY) * weights, for every parameter; buffers (BatchNorm statistics)
# are copied. In [0, 1).
MODEL.EMA.DECAY = 0.999
# Update the average every this many iterations (after the optimizer step).
MODEL.EMA.EVERY = 1
# Warm up the decay (timm): decay_t = min(DECAY, 1 - (1 + t) ** (-2/3)) at the t-th update, so
# the first updates follow the weights closely.
MODEL.EMA.WARMUP = False

# torch.compile the trained model (MMEngine's compile=True, timm's --torchcompile): the model
# (inside DistributedDataParallel under torchrun, as torch recommends) is compiled for the
# training steps; with SOLVER.OPTIMIZERS each optimizer's submodule, which the model's
# train_step calls. Evaluation and the EMA run the same weights eagerly. Checkpoints are the same
# as an eager run's (no "_orig_mod." prefixes): a run resumes with either setting.
MODEL.COMPILE = CN()
MODEL.COMPILE.ENABLED = False
# torch.compile's mode: "default", "reduce-overhead" (CUDA graphs), "max-autotune",
# "max-autotune-no-cudagraphs".
MODEL.COMPILE.MODE = "default"
# One graph for the whole forward pass: a model that cannot be traced as one is refused before
# training (without it, each graph break is logged once, with where it happened). Not with
# SOLVER.OPTIMIZERS: their submodules' inputs exist only inside train_step, so nothing can be
# traced before training.
MODEL.COMPILE.FULLGRAPH = False
# Dynamic shapes: None (torch decides: static first, dynamic once a shape changes), True, False.
MODEL.COMPILE.DYNAMIC = None

MODEL.CNN = CN()
# Output channels of the three 3x3 conv layers (each followed by BatchNorm and ReLU).
MODEL.CNN.CHANNELS = (16, 32, 64)
# Width of the hidden fully connected layer of the head.
MODEL.CNN.HIDDEN_DIM = 64
# Dropout probability before the last linear layer, in [0, 1).
MODEL.CNN.DROPOUT = 0.2

MODEL.TRANSFORMER = CN()
# Side of the square image patch that makes one token, in pixels: 1 (64 pixel tokens), 2 (16
# tokens) or 4 (4 tokens). Fewer tokens train much faster on a CPU.
MODEL.TRANSFORMER.PATCH_SIZE = 2
# Width of every token; must be divisible by NUM_HEADS and by PATCH_SIZE**2 (a token is the
# concatenation of its PATCH_SIZE**2 pixels' embeddings, EMBED_DIM / PATCH_SIZE**2 wide each).
MODEL.TRANSFORMER.EMBED_DIM = 64
# Number of encoder blocks.
MODEL.TRANSFORMER.DEPTH = 2
# Attention heads per block.
MODEL.TRANSFORMER.NUM_HEADS = 4
# Width of each block's MLP as a multiple of EMBED_DIM.
MODEL.TRANSFORMER.MLP_RATIO = 2.0
# Dropout probability inside the blocks (attention weights and MLP), in [0, 1).
MODEL.TRANSFORMER.DROPOUT = 0.0
