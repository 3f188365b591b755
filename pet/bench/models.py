"""Models whose parameter layout matters for optimizer speed, used by tools/benchmark_solver.py.

``VisionTransformer`` at its defaults is ViT-S/16 (22M parameters in 152 tensors: weights, biases,
LayerNorms, a position embedding and a class token); ``ResNet`` at its defaults is ResNet-18
(11.7M parameters in 62 tensors, mostly conv weights and BatchNorm affines). Both keep their
trunk under ``backbone`` and the classifier under ``head``, so the grouping rules
(BACKBONE_LR_FACTOR, norm, bias and embedding decay) split them into several param groups.
"""
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class TransformerBlock(nn.Module):
    """Pre-norm attention and MLP, with the parameter names timm's ViT uses."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, int(dim * mlp_ratio))
        self.fc2 = nn.Linear(int(dim * mlp_ratio), dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(self.norm1(x)).view(batch, tokens, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, tokens, dim)
        x = x + self.proj(attn)
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViTBackbone(nn.Module):
    """Patch embedding, class token, position embedding, blocks and the final norm."""

    def __init__(self, image_size: int, patch_size: int, dim: int, depth: int, num_heads: int,
                 mlp_ratio: float) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        num_tokens = 1 + (image_size // patch_size) ** 2
        self.pos_embed = nn.Parameter(torch.randn(1, num_tokens, dim) * .02)
        self.blocks = nn.Sequential(*[TransformerBlock(dim, num_heads, mlp_ratio)
                                      for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(images).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.pos_embed
        return self.norm(self.blocks(x))[:, 0]


class VisionTransformer(nn.Module):
    """A ViT classifier; the defaults are ViT-S/16 on 224x224 images with 1000 classes."""

    def __init__(self, image_size: int = 224, patch_size: int = 16, dim: int = 384,
                 depth: int = 12, num_heads: int = 6, mlp_ratio: float = 4.0,
                 num_classes: int = 1000) -> None:
        super().__init__()
        self.backbone = ViTBackbone(image_size, patch_size, dim, depth, num_heads, mlp_ratio)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a (projected when the shape changes) shortcut."""

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """A ResNet classifier; the defaults are ResNet-18 (two blocks per stage, width 64)."""

    def __init__(self, width: int = 64, blocks_per_stage: Sequence[int] = (2, 2, 2, 2),
                 num_classes: int = 1000) -> None:
        super().__init__()
        layers = [nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                  nn.MaxPool2d(3, 2, 1)]
        in_channels = width
        for stage, num_blocks in enumerate(blocks_per_stage):
            channels = width * 2 ** stage
            for index in range(num_blocks):
                layers.append(BasicBlock(in_channels, channels, 2 if index == 0 and stage else 1))
                in_channels = channels
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.backbone = nn.Sequential(*layers)
        self.head = nn.Linear(in_channels, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images))
