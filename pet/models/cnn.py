"""A small CNN for the 8x8 digits: conv + BatchNorm backbone, fully connected head."""
from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn

from pet.data.digits import IMAGE_SIZE, MAX_LEVEL


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 conv (no bias: the BatchNorm after it has one) + BatchNorm + ReLU, size kept."""
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        bn=nn.BatchNorm2d(out_channels),
        relu=nn.ReLU(inplace=True),
    ))


class DigitsCNN(nn.Module):
    """``backbone``: three conv-BN-ReLU layers, the last two followed by 2x2 max pooling
    (8x8 -> 4x4 -> 2x2); ``head``: linear + ReLU + dropout + linear.

    ``forward`` takes (N, 1, 8, 8) intensity levels (0..16, any dtype) and returns (N, classes)
    logits.
    """

    def __init__(self, channels: Sequence[int], hidden_dim: int, num_classes: int,
                 dropout: float) -> None:
        super().__init__()
        c1, c2, c3 = channels
        # Named layers, so parameter names read "backbone.conv1.bn.weight" in logs and errors.
        self.backbone = nn.Sequential(OrderedDict(
            conv1=conv_bn_relu(1, c1),
            conv2=conv_bn_relu(c1, c2),
            pool2=nn.MaxPool2d(2),
            conv3=conv_bn_relu(c2, c3),
            pool3=nn.MaxPool2d(2),
            flatten=nn.Flatten(),
        ))
        feature_dim = c3 * (IMAGE_SIZE // 4) ** 2
        self.head = nn.Sequential(OrderedDict(
            fc1=nn.Linear(feature_dim, hidden_dim),
            relu=nn.ReLU(inplace=True),
            dropout=nn.Dropout(dropout),
            fc2=nn.Linear(hidden_dim, num_classes),
        ))

    def forward(self, levels: torch.Tensor) -> torch.Tensor:
        images = levels.float() / MAX_LEVEL
        return self.head(self.backbone(images))
