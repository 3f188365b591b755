"""A small transformer for the 8x8 digits, on tokens of pixel-level embeddings.

Each pixel's intensity level (0..16) is looked up in an ``nn.Embedding``; a token is a
``patch_size`` x ``patch_size`` patch, the concatenation of its pixels' embeddings. A learned
position embedding and a class token are added, pre-norm encoder blocks mix the tokens, and the
head reads the class token. It exercises every param rule: embedding, position embedding and
class token ("embed"), LayerNorm ("norm"), biases, and the ``backbone``/``head`` split.
"""
import torch
from torch import nn

from pet.data.digits import IMAGE_SIZE, MAX_LEVEL


class PatchTokenEncoder(nn.Module):
    """Levels (N, 1, 8, 8) -> class-token features (N, embed_dim)."""

    def __init__(self, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float,
                 dropout: float, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        num_patches = (IMAGE_SIZE // patch_size) ** 2
        self.pixel_embed = nn.Embedding(MAX_LEVEL + 1, embed_dim // patch_size ** 2)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim))
        block = nn.TransformerEncoderLayer(
            embed_dim,
            num_heads,
            dim_feedforward=int(embed_dim * mlp_ratio),
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        # Nested tensors only pay off with padding masks, which image tokens never have.
        self.blocks = nn.TransformerEncoder(block, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(embed_dim)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pixel_embed.weight, std=0.02)

    def tokens(self, levels: torch.Tensor) -> torch.Tensor:
        """(N, 1, 8, 8) levels -> (N, patches, embed_dim) patch tokens, patches in row order."""
        p = self.patch_size
        n = levels.shape[0]
        pixels = self.pixel_embed(levels.long().view(n, IMAGE_SIZE // p, p, IMAGE_SIZE // p, p))
        # (n, rows, py, cols, px, d) -> (n, rows, cols, py, px, d): a patch's pixels side by side.
        return pixels.permute(0, 1, 3, 2, 4, 5).reshape(n, (IMAGE_SIZE // p) ** 2, -1)

    def forward(self, levels: torch.Tensor) -> torch.Tensor:
        tokens = self.tokens(levels)
        cls = self.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + self.pos_embed
        return self.norm(self.blocks(tokens))[:, 0]


class DigitsTransformer(nn.Module):
    """``backbone``: ``PatchTokenEncoder``; ``head``: one linear layer on the class token.

    ``forward`` takes (N, 1, 8, 8) intensity levels and returns (N, classes) logits.
    """

    def __init__(self, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float,
                 dropout: float, patch_size: int, num_classes: int) -> None:
        super().__init__()
        self.backbone = PatchTokenEncoder(embed_dim, depth, num_heads, mlp_ratio, dropout, patch_size)
        self.head = nn.Linear(embed_dim, num_classes)

    def fsdp_blocks(self):
        """The encoder layers: what SOLVER.DISTRIBUTED.STRATEGY fsdp shards one by one."""
        return list(self.backbone.blocks.layers)

    def forward(self, levels: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(levels))
