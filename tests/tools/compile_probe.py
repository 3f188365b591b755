"""A user's model that dynamo cannot trace as one graph (a CUSTOM_IMPORTS module for
tests/tools/test_compile.py)."""
import torch
from torch import nn

from pet.models import MODELS, build_cnn


class BreakingNet(nn.Module):
    def __init__(self, model_cfg):
        super().__init__()
        self.net = build_cnn(model_cfg)

    def forward(self, x):
        x = x.float()
        torch._dynamo.graph_break()  # what a print() or a .item() in a forward pass does
        return self.net(x)


MODELS.register(BreakingNet, name="breaking_net")
