"""The small models of the default job, built from ``cfg.MODEL``."""
from torch import nn
from yacs.config import CfgNode

# One list of names, shared with the config validation so the two always agree.
from pet.lib.config.validate_job import MODEL_TYPES
from pet.models.cnn import DigitsCNN
from pet.models.transformer import DigitsTransformer


def build_model(cfg: CfgNode) -> nn.Module:
    """The network named by ``cfg.MODEL.TYPE`` ("cnn" or "transformer").

    Its init draws from torch's global RNG: seed it (``torch.manual_seed``) before calling.
    Raises ValueError for an unknown type.
    """
    model_cfg = cfg.MODEL
    if model_cfg.TYPE == "cnn":
        return DigitsCNN(
            channels=tuple(model_cfg.CNN.CHANNELS),
            hidden_dim=model_cfg.CNN.HIDDEN_DIM,
            num_classes=model_cfg.NUM_CLASSES,
            dropout=model_cfg.CNN.DROPOUT,
        )
    if model_cfg.TYPE == "transformer":
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
    raise ValueError(f"MODEL.TYPE: unknown model {model_cfg.TYPE!r}; allowed: {', '.join(MODEL_TYPES)}")


__all__ = ["MODEL_TYPES", "DigitsCNN", "DigitsTransformer", "build_model"]
