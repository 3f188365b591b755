"""Defaults of the ``MODEL`` section: which small network the job trains."""
from yacs.config import CfgNode as CN

MODEL = CN()
# The network: "cnn" (conv + BatchNorm) or "transformer" (pixel tokens + LayerNorm).
MODEL.TYPE = "cnn"
# Number of output classes (10 for the digits).
MODEL.NUM_CLASSES = 10
# Path of a .pth file whose "model" weights initialize the network before training (fine-tuning
# or --eval-only); "" trains from the seeded random init. Ignored by --resume.
MODEL.WEIGHTS = ""

MODEL.CNN = CN()
# Output channels of the three 3x3 conv layers (each followed by BatchNorm and ReLU).
MODEL.CNN.CHANNELS = (32, 64, 128)
# Width of the hidden fully connected layer of the head.
MODEL.CNN.HIDDEN_DIM = 128
# Dropout probability before the last linear layer, in [0, 1).
MODEL.CNN.DROPOUT = 0.2

MODEL.TRANSFORMER = CN()
# Width of every token (embedding dimension); must be divisible by NUM_HEADS.
MODEL.TRANSFORMER.EMBED_DIM = 64
# Number of encoder blocks.
MODEL.TRANSFORMER.DEPTH = 2
# Attention heads per block.
MODEL.TRANSFORMER.NUM_HEADS = 4
# Width of each block's MLP as a multiple of EMBED_DIM.
MODEL.TRANSFORMER.MLP_RATIO = 2.0
# Dropout probability inside the blocks, in [0, 1).
MODEL.TRANSFORMER.DROPOUT = 0.1
