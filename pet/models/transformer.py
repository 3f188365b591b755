"""A small transformer for the 8x8 digits: every pixel is a token.

Each pixel's intensity level (0..16) is looked up in an ``nn.Embedding``, a learned position
embedding and a class token are added, pre-norm encoder blocks mix the tokens, and the head
reads the class token. It exercises every param rule: embedding, position embedding and class
token ("embed"), LayerNorm ("norm"), biases, and the ``backbone``/``head`` split.
"""
import torch
from torch import nn

from pet.data.digits import IMAGE_SIZE, MAX_LEVEL

NUM_PIXELS = IMAGE_SIZE * IMAGE_SIZE


class PixelTokenEncoder(nn.Module):
    """Levels (N, 1, 8, 8) -> class-token features (N, embed_dim)."""

    def __init__(self, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float,
                 dropout: float) -> None:
        super().__init__()
        self.pixel_embed = nn.Embedding(MAX_LEVEL + 1, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, NUM_PIXELS + 1, embed_dim))
        block = nn.TransformerEncoderLayer(
            embed_dim,
            num_heads,
            dim_feedforward=int(embed_dim * mlp_ratio),
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        # Nested tensors only pay off with padding masks, which pixel tokens never have.
        self.blocks = nn.TransformerEncoder(block, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(embed_dim)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pixel_embed.weight, std=0.02)

    def forward(self, levels: torch.Tensor) -> torch.Tensor:
        tokens = self.pixel_embed(levels.long().flatten(1))
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + self.pos_embed
        return self.norm(self.blocks(tokens))[:, 0]


class DigitsTransformer(nn.Module):
    """``backbone``: ``PixelTokenEncoder``; ``head``: one linear layer on the class token.

    ``forward`` takes (N, 1, 8, 8) intensity levels and returns (N, classes) logits.
    """

    def __init__(self, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float,
                 dropout: float, num_classes: int) -> None:
        super().__init__()
        self.backbone = PixelTokenEncoder(embed_dim, depth, num_heads, mlp_ratio, dropout)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, levels: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(levels))
