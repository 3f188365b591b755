"""Build a ``torch.optim.Optimizer``: param groups, kernel, clipping.

The core is config-free: ``build_optimizer(model, OptimizerSpec)``. ``optimizer_spec(cfg)``
validates ``SOLVER.OPTIMIZER`` once and turns it into that spec, and Pet's
``Optimizer(model, cfg.SOLVER.OPTIMIZER).build()`` is the two in a row.
"""
import inspect
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch
from torch import nn
from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
from yacs.config import CfgNode

from pet.lib.config.errors import ConfigError
from pet.lib.config.validate import validate_optimizer
from pet.lib.utils.grad_clip import CLIP_TYPES, ClipSpec, GradientClipping
from pet.lib.utils.param_groups import GroupingSpec, build_param_groups, grouping_spec
from pet.lib.utils.registry import Registry

_OPT = "SOLVER.OPTIMIZER"
# Typed config keys and the keyword argument each becomes, for every class that takes it.
TYPED_KEYS = {"momentum": "MOMENTUM", "nesterov": "NESTEROV", "betas": "BETAS", "eps": "EPS",
              "alpha": "RMSPROP_ALPHA"}


def _init_keywords(cls: type) -> List[str]:
    return list(inspect.signature(cls.__init__).parameters)


@dataclass(frozen=True)
class OptimizerInfo:
    """A registry entry: the torch class and what it supports.

    ``fused``/``foreach``: torch has that kernel for it; ``momentum``/``betas``: it takes that
    argument (what a momentum schedule would drive). ``clipped``: the class that clips in
    ``step()``.
    """

    cls: type
    clipped: type
    fused: bool
    foreach: bool
    momentum: bool
    betas: bool

    @property
    def keywords(self) -> List[str]:
        """The keyword arguments of the class's constructor."""
        return _init_keywords(self.cls)


_CLIPPED: Dict[type, type] = {}


def clipped_class(cls: type) -> type:
    """``cls`` with clipping in ``step()``: a module-level class (``ClippedSGD``, ...) so that
    clipped optimizers pickle like plain ones."""
    if cls not in _CLIPPED:
        name = f"Clipped{cls.__name__}"
        clipped = type(name, (GradientClipping, cls), {
            "__module__": __name__, "__qualname__": name,
            "__doc__": f"{cls.__name__} that clips gradients in ``step()``."})
        globals()[name] = clipped
        _CLIPPED[cls] = clipped
    return _CLIPPED[cls]


def optimizer_info(cls: type, fused: Optional[bool] = None) -> OptimizerInfo:
    """The registry entry of a ``torch.optim.Optimizer`` subclass; capabilities not declared
    are read off its constructor's arguments."""
    keywords = _init_keywords(cls)
    return OptimizerInfo(cls=cls, clipped=clipped_class(cls),
                         fused="fused" in keywords if fused is None else fused,
                         foreach="foreach" in keywords, momentum="momentum" in keywords,
                         betas="betas" in keywords)


# ``@OPTIMIZERS.register()`` on an optimizer class registers it under the class's name.
OPTIMIZERS = Registry("optimizer", make_entry=lambda obj: obj if isinstance(obj, OptimizerInfo)
                      else optimizer_info(obj))
OPTIMIZERS.register(optimizer_info(torch.optim.SGD), name="SGD")
OPTIMIZERS.register(optimizer_info(torch.optim.AdamW), name="ADAMW")
OPTIMIZERS.register(optimizer_info(torch.optim.Adam), name="ADAM")
# torch has no fused RMSprop kernel (its constructor takes no ``fused``).
OPTIMIZERS.register(optimizer_info(torch.optim.RMSprop), name="RMSPROP")
ClippedSGD, ClippedAdamW, ClippedAdam, ClippedRMSprop = (
    clipped_class(c) for c in (torch.optim.SGD, torch.optim.AdamW, torch.optim.Adam, torch.optim.RMSprop))


@dataclass(frozen=True)
class OptimizerSpec:
    """Everything ``build_optimizer`` needs, as plain values.

    ``name``: an OPTIMIZERS name; ``options``: the class's keyword arguments besides lr and
    weight_decay (momentum, betas, ...); ``implementation``: auto, fused, foreach or loop;
    ``clip``: None for no clipping.
    """

    name: str
    grouping: GroupingSpec
    options: Dict[str, Any] = field(default_factory=dict)
    implementation: str = "auto"
    clip: Optional[ClipSpec] = None


def optimizer_spec(optimizer: CfgNode) -> OptimizerSpec:
    """Validate ``SOLVER.OPTIMIZER`` (ConfigError naming the key) and return its spec."""
    name = OPTIMIZERS.check(optimizer.TYPE, f"{_OPT}.TYPE")
    validate_optimizer(optimizer)
    clip_type = CLIP_TYPES.check(optimizer.CLIP_GRADIENTS.CLIP_TYPE, f"{_OPT}.CLIP_GRADIENTS.CLIP_TYPE")
    info = OPTIMIZERS.get(name)
    implementation = optimizer.IMPLEMENTATION.lower()
    if implementation == "fused" and not info.fused:
        fused = ", ".join(n for n in OPTIMIZERS if OPTIMIZERS.get(n).fused)
        raise ConfigError(f"{_OPT}.IMPLEMENTATION: 'fused' is not available for TYPE {optimizer.TYPE}; "
                          f"allowed: auto, foreach, loop (fused exists for {fused})")
    options = {arg: tuple(optimizer[key]) if isinstance(optimizer[key], (list, tuple)) else optimizer[key]
               for arg, key in TYPED_KEYS.items() if arg in info.keywords}
    if options.get("nesterov") and not options.get("momentum", 0) > 0:
        raise ConfigError(f"{_OPT}.NESTEROV: True needs {_OPT}.MOMENTUM > 0, "
                          f"got MOMENTUM={optimizer.MOMENTUM}")
    clip = optimizer.CLIP_GRADIENTS
    return OptimizerSpec(
        name=name,
        grouping=grouping_spec(optimizer),
        options=options,
        implementation=implementation,
        clip=ClipSpec(clip_type, clip.CLIP_VALUE, clip.NORM_TYPE) if clip.ENABLED else None,
    )


def sparse_gradient_params(model: nn.Module) -> List[str]:
    """Names of the trained parameters whose gradients are sparse: the weights of
    ``nn.Embedding``/``nn.EmbeddingBag`` built with ``sparse=True``."""
    return [f"{module_name}.weight" if module_name else "weight"
            for module_name, module in model.named_modules()
            if isinstance(module, (nn.Embedding, nn.EmbeddingBag)) and module.sparse
            and module.weight.requires_grad]


def check_sparse_gradients(names: List[str], spec: OptimizerSpec) -> None:
    """ConfigError when ``spec`` cannot step the sparse gradients of the params ``names``: only
    SGD's loop and foreach kernels take them, and no clip can (torch's clips cannot either);
    checked at build time, before a run fails at its first step."""
    if not names:
        return
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    what = f"sparse gradients ({shown}: an embedding with sparse=True)"
    if OPTIMIZERS.get(spec.name).cls is not torch.optim.SGD:
        raise ConfigError(f"{_OPT}.TYPE: {spec.name!r} cannot step {what}; allowed with "
                          f"sparse gradients: 'SGD', or build the embedding with sparse=False")
    if spec.implementation == "fused":
        raise ConfigError(f"{_OPT}.IMPLEMENTATION: 'fused' cannot step {what}; "
                          f"allowed: auto, foreach, loop")
    if spec.clip is not None:
        raise ConfigError(f"{_OPT}.CLIP_GRADIENTS.ENABLED: True cannot clip {what}; "
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
    if implementation == "fused":
        if not info.fused:
            raise ValueError(f"{_OPT}.IMPLEMENTATION: 'fused' is not available for "
                             f"{info.cls.__name__}; allowed: auto, foreach, loop")
        return dict(fused=True)
    if implementation == "foreach":
        return dict(foreach=True)
    if implementation == "loop":
        return dict(foreach=False)
    if info.fused and _fused_supported(params) and not sparse:
        return dict(fused=True)
    return dict(foreach=info.foreach and all(p.is_cuda for p in params))


def build_optimizer(model: nn.Module, spec: OptimizerSpec) -> torch.optim.Optimizer:
    """The optimizer of ``spec`` over ``model``'s param groups, every group's ``initial_lr``
    set; it clips inside ``step()`` when ``spec.clip`` is set.

    Raises ConfigError when the spec cannot step the model's sparse gradients, ValueError when
    the model has nothing to train.
    """
    info = OPTIMIZERS.get(spec.name)
    sparse = sparse_gradient_params(model)
    check_sparse_gradients(sparse, spec)
    groups = build_param_groups(model, spec.grouping)
    tensors = [p for group in groups for _, p in group["params"]]
    kwargs = dict(spec.options, lr=spec.grouping.base_lr, weight_decay=spec.grouping.weight_decay)
    kwargs.update(implementation_kwargs(spec.implementation, info, tensors, sparse=bool(sparse)))
    if spec.clip is None:
        return info.cls(groups, **kwargs)
    return info.clipped(groups, clip_type=spec.clip.clip_type, clip_value=spec.clip.clip_value,
                        norm_type=spec.clip.norm_type, **kwargs)


class Optimizer:
    """``Optimizer(model, cfg.SOLVER.OPTIMIZER).build()`` returns the configured optimizer.

    The config is validated here, once (ConfigError on a bad value). Param groups follow
    ``param_groups.build_param_groups``; clipping, when enabled, runs inside ``step()``.
    """

    def __init__(self, model: nn.Module, optimizer: CfgNode) -> None:
        self.model = model
        self.spec = optimizer_spec(optimizer)

    def get_params(self) -> List[Dict]:
        """The param groups (see ``build_param_groups``)."""
        return build_param_groups(self.model, self.spec.grouping)

    def build(self) -> torch.optim.Optimizer:
        """Return the ``torch.optim.Optimizer``, with every group's ``initial_lr`` set."""
        return build_optimizer(self.model, self.spec)
