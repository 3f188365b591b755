"""The small models of the default job, built from ``cfg.MODEL`` through the MODELS registry."""
from torch import nn
from yacs.config import CfgNode

from pet.lib.utils.registry import Registry
from pet.models.cnn import DigitsCNN
from pet.models.gan import DigitsGAN
from pet.models.transformer import DigitsTransformer

# name -> build(MODEL config) -> nn.Module; ``@MODELS.register(name="x")`` adds one.
MODELS = Registry("model")


@MODELS.register(name="cnn")
def build_cnn(model_cfg: CfgNode) -> nn.Module:
    """Three conv + BatchNorm layers and a two-layer head."""
    return DigitsCNN(
        channels=tuple(model_cfg.CNN.CHANNELS),
        hidden_dim=model_cfg.CNN.HIDDEN_DIM,
        num_classes=model_cfg.NUM_CLASSES,
        dropout=model_cfg.CNN.DROPOUT,
    )


@MODELS.register(name="transformer")
def build_transformer(model_cfg: CfgNode) -> nn.Module:
    """A small ViT over pixel patches (embeddings, pos_embed, cls_token, LayerNorm)."""
    t = model_cfg.TRANSFORMER
    return DigitsTransformer(
        embed_dim=t.EMBED_DIM,
        depth=t.DEPTH,
        num_heads=t.NUM_HEADS,
        mlp_ratio=t.MLP_RATIO,
        dropout=t.DROPOUT,
        patch_size=t.PATCH_SIZE,
        num_classes=model_cfg.NUM_CLASSES,
    )


@MODELS.register(name="digits_gan")
def build_digits_gan(model_cfg: CfgNode) -> nn.Module:
    """An AC-GAN (generator + discriminator with a class head) for SOLVER.OPTIMIZERS; it is
    evaluated by its discriminator's classifier."""
    return DigitsGAN(num_classes=model_cfg.NUM_CLASSES)


def build_model(cfg: CfgNode) -> nn.Module:
    """The network named by ``cfg.MODEL.TYPE``.

    Its init draws from torch's global RNG: seed it (``torch.manual_seed``) before calling.
    Raises ConfigError for an unknown type.
    """
    name = MODELS.check(cfg.MODEL.TYPE, "MODEL.TYPE")
    return MODELS.get(name)(cfg.MODEL)


__all__ = ["MODELS", "DigitsCNN", "DigitsGAN", "DigitsTransformer", "build_model"]
