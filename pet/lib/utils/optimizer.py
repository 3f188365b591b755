"""Build a ``torch.optim.Optimizer`` from ``SOLVER.OPTIMIZER``: param groups, kernel, clipping."""
from dataclasses import dataclass
from typing import Callable, Dict, List

import torch
from torch import nn
from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
from yacs.config import CfgNode

from pet.lib.config.errors import ConfigError
from pet.lib.config.validate import FUSED_OPTIMIZER_TYPES, OPTIMIZER_TYPES, validate_optimizer
from pet.lib.utils.grad_clip import GradientClipping
from pet.lib.utils.param_groups import build_param_groups


@dataclass(frozen=True)
class OptimizerInfo:
    """A registry entry: the torch class, its config-derived options and what it supports."""

    cls: type
    options: Callable[[CfgNode], Dict]
    has_fused: bool


def _sgd_options(cfg: CfgNode) -> Dict:
    return dict(momentum=cfg.MOMENTUM, nesterov=cfg.NESTEROV)


def _adam_options(cfg: CfgNode) -> Dict:
    return dict(betas=tuple(cfg.BETAS), eps=cfg.EPS)


def _rmsprop_options(cfg: CfgNode) -> Dict:
    return dict(alpha=cfg.RMSPROP_ALPHA, eps=cfg.EPS, momentum=cfg.MOMENTUM)


OPTIMIZERS: Dict[str, OptimizerInfo] = {
    "SGD": OptimizerInfo(torch.optim.SGD, _sgd_options, has_fused=True),
    "ADAMW": OptimizerInfo(torch.optim.AdamW, _adam_options, has_fused=True),
    "ADAM": OptimizerInfo(torch.optim.Adam, _adam_options, has_fused=True),
    "RMSPROP": OptimizerInfo(torch.optim.RMSprop, _rmsprop_options, has_fused=False),
}
assert tuple(OPTIMIZERS) == OPTIMIZER_TYPES, "the registry and the validated names must agree"
assert tuple(name for name, info in OPTIMIZERS.items() if info.has_fused) == FUSED_OPTIMIZER_TYPES


class ClippedSGD(GradientClipping, torch.optim.SGD):
    """SGD that clips gradients in ``step()``."""


class ClippedAdamW(GradientClipping, torch.optim.AdamW):
    """AdamW that clips gradients in ``step()``."""


class ClippedAdam(GradientClipping, torch.optim.Adam):
    """Adam that clips gradients in ``step()``."""


class ClippedRMSprop(GradientClipping, torch.optim.RMSprop):
    """RMSprop that clips gradients in ``step()``."""


# Module-level classes (not made on the fly) so clipped optimizers pickle like plain ones.
CLIPPED_CLASSES = {
    torch.optim.SGD: ClippedSGD,
    torch.optim.AdamW: ClippedAdamW,
    torch.optim.Adam: ClippedAdam,
    torch.optim.RMSprop: ClippedRMSprop,
}


def sparse_gradient_params(model: nn.Module) -> List[str]:
    """Names of the trained parameters whose gradients are sparse: the weights of
    ``nn.Embedding``/``nn.EmbeddingBag`` built with ``sparse=True``."""
    return [f"{module_name}.weight" if module_name else "weight"
            for module_name, module in model.named_modules()
            if isinstance(module, (nn.Embedding, nn.EmbeddingBag)) and module.sparse
            and module.weight.requires_grad]


def check_sparse_gradients(names: List[str], cfg: CfgNode) -> None:
    """ConfigError when ``cfg`` cannot step the sparse gradients of the params ``names``: only
    SGD's loop and foreach kernels take them, and no clip can (torch's clips cannot either);
    checked at build time, before a run fails at its first step."""
    if not names:
        return
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    what = f"sparse gradients ({shown}: an embedding with sparse=True)"
    if cfg.TYPE.upper() != "SGD":
        raise ConfigError(f"SOLVER.OPTIMIZER.TYPE: {cfg.TYPE!r} cannot step {what}; allowed with "
                          f"sparse gradients: 'SGD', or build the embedding with sparse=False")
    if cfg.IMPLEMENTATION.lower() == "fused":
        raise ConfigError(f"SOLVER.OPTIMIZER.IMPLEMENTATION: 'fused' cannot step {what}; "
                          f"allowed: auto, foreach, loop")
    if cfg.CLIP_GRADIENTS.ENABLED:
        raise ConfigError(f"SOLVER.OPTIMIZER.CLIP_GRADIENTS.ENABLED: True cannot clip {what}; "
                          f"allowed with sparse gradients: False")


def _fused_supported(params: List[torch.Tensor]) -> bool:
    # torch's own list of devices with fused optimizer kernels (CPU and CUDA among them).
    devices = _get_fused_kernels_supported_devices()
    return all(p.is_floating_point() and not p.is_sparse and p.device.type in devices
               for p in params)


def implementation_kwargs(implementation: str, info: OptimizerInfo,
                          params: List[torch.Tensor], sparse: bool = False) -> Dict:
    """torch's ``fused``/``foreach`` arguments for IMPLEMENTATION (auto, fused, foreach, loop).

    auto picks fused where torch has a fused kernel for the optimizer, the params' devices and
    dtypes, and no gradient is ``sparse`` (one pass over the memory: the fastest everywhere);
    else foreach when every param is on CUDA, where it is torch's fast path; else the loop,
    which on the CPU beats foreach (RMSprop on a 22M-parameter ViT: foreach takes 1.2-1.7x the
    loop's time; see tools/benchmark_solver.py).
    Raises ValueError when "fused" is forced on an optimizer without a fused kernel.
    """
    implementation = implementation.lower()
    if implementation == "fused":
        if not info.has_fused:
            raise ValueError(
                f"SOLVER.OPTIMIZER.IMPLEMENTATION: 'fused' is not available for "
                f"{info.cls.__name__}; allowed: auto, foreach, loop"
            )
        return dict(fused=True)
    if implementation == "foreach":
        return dict(foreach=True)
    if implementation == "loop":
        return dict(foreach=False)
    if info.has_fused and _fused_supported(params) and not sparse:
        return dict(fused=True)
    return dict(foreach=all(p.is_cuda for p in params))


class Optimizer:
    """``Optimizer(model, cfg.SOLVER.OPTIMIZER).build()`` returns the configured optimizer.

    The config is validated here (ConfigError on a bad value). Param groups follow
    ``param_groups.build_param_groups``; clipping, when enabled, runs inside ``step()``.
    """

    def __init__(self, model: nn.Module, optimizer: CfgNode) -> None:
        validate_optimizer(optimizer)
        self.model = model
        self.cfg = optimizer
        self.optimizer_type = optimizer.TYPE.upper()
        self.clip_gradients = optimizer.CLIP_GRADIENTS

    def get_params(self) -> List[Dict]:
        """The param groups (see ``build_param_groups``)."""
        return build_param_groups(self.model, self.cfg)

    def build(self) -> torch.optim.Optimizer:
        """Return the ``torch.optim.Optimizer``, with every group's ``initial_lr`` set."""
        info = OPTIMIZERS[self.optimizer_type]
        sparse = sparse_gradient_params(self.model)
        check_sparse_gradients(sparse, self.cfg)
        groups = self.get_params()
        tensors = [p for group in groups for _, p in group["params"]]
        kwargs = dict(info.options(self.cfg), lr=self.cfg.BASE_LR, weight_decay=self.cfg.WEIGHT_DECAY)
        kwargs.update(implementation_kwargs(self.cfg.IMPLEMENTATION, info, tensors,
                                            sparse=bool(sparse)))
        if not self.clip_gradients.ENABLED:
            return info.cls(groups, **kwargs)
        return CLIPPED_CLASSES[info.cls](
            groups,
            clip_type=self.clip_gradients.CLIP_TYPE.lower(),
            clip_value=self.clip_gradients.CLIP_VALUE,
            norm_type=self.clip_gradients.NORM_TYPE,
            **kwargs,
        )
