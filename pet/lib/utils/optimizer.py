"""Build a ``torch.optim.Optimizer``: param groups, kernel, clipping.

The core is config-free: ``build_optimizer(model, OptimizerSpec)``. ``optimizer_spec(cfg)``
validates ``SOLVER.OPTIMIZER`` once and turns it into that spec, and Pet's
``Optimizer(model, cfg.SOLVER.OPTIMIZER).build()`` is the two in a row. The optimizer classes
and what each supports are in ``optimizers_torch.OPTIMIZERS``.
"""
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch
from torch import nn
from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
from yacs.config import CfgNode

from pet.lib.config.errors import ConfigError, first_line
from pet.lib.config.validate import check_bool, validate_optimizer
from pet.lib.utils.compiled_step import set_hyperparameter_form
from pet.lib.utils.grad_clip import CLIP_TYPES, ClipSpec
from pet.lib.utils.shards import is_sharded
from pet.lib.utils.optimizers_torch import (  # noqa: F401  (re-exported)
    BUILDER_KEYWORDS, OPTIMIZERS, REFUSED, TYPED_KEYS, OptimizerInfo, clipped_class, optimizer_info)
from pet.lib.utils.param_groups import (
    PARAM_GROUPS_BUILDERS, GroupingSpec, freeze_params, grouping_spec, run_builder)

_OPT = "SOLVER.OPTIMIZER"
ClippedSGD, ClippedAdamW, ClippedAdam, ClippedRMSprop = (
    clipped_class(c) for c in (torch.optim.SGD, torch.optim.AdamW, torch.optim.Adam, torch.optim.RMSprop))
_DECAY_KEYS = ("WEIGHT_DECAY", "WEIGHT_DECAY_BIAS", "WEIGHT_DECAY_NORM", "WEIGHT_DECAY_EMBED")


@dataclass(frozen=True)
class OptimizerSpec:
    """Everything ``build_optimizer`` needs, as plain values.

    ``name``: an OPTIMIZERS name; ``options``: the class's keyword arguments besides lr and
    weight_decay (momentum, betas, KWARGS, ...); ``implementation``: auto, fused, foreach or
    loop; ``clip``: None for no clipping; ``builder``: a PARAM_GROUPS_BUILDERS name.
    """

    name: str
    grouping: GroupingSpec
    options: Dict[str, Any] = field(default_factory=dict)
    implementation: str = "auto"
    clip: Optional[ClipSpec] = None
    builder: str = "default"
    # SOLVER.OPTIMIZER.COMPILE: hyper-parameters as tensors for a compiled step (compiled_step.py).
    compile: bool = False


def check_type(value: Any) -> str:
    """The canonical OPTIMIZERS name of SOLVER.OPTIMIZER.TYPE; ConfigError naming the allowed
    names, or why a torch optimizer is refused (LBFGS)."""
    if isinstance(value, str) and value.upper() in REFUSED:
        raise ConfigError(f"{_OPT}.TYPE: {value!r} is not supported: {REFUSED[value.upper()]}; "
                          f"allowed: {', '.join(OPTIMIZERS.names())}")
    return OPTIMIZERS.check(value, f"{_OPT}.TYPE")


def _cfg_value(optimizer: CfgNode, dotted: str) -> Any:
    node = optimizer
    for part in dotted.split("."):
        node = node[part]
    return tuple(node) if isinstance(node, list) else node


def optimizer_options(optimizer: CfgNode, name: str) -> Dict[str, Any]:
    """The constructor keywords of TYPE ``name``: the typed keys it reads (a None value leaves
    the class's default) and ``KWARGS``; ConfigError naming a keyword the class does not take
    (with the allowed ones) or one that has a typed key."""
    info = OPTIMIZERS.get(name)
    options = {}
    for typed in TYPED_KEYS:
        value = _cfg_value(optimizer, typed.key)
        if typed.key in info.typed_keys and value is not None:
            options[typed.keyword] = value
    typed_keywords = {info.typed_keyword(key): key for key in info.typed_keys}
    allowed = [k for k in info.keywords if k not in BUILDER_KEYWORDS and k not in typed_keywords]
    for keyword, value in optimizer.KWARGS.items():
        where = f"{_OPT}.KWARGS.{keyword}"
        if keyword in typed_keywords:
            raise ConfigError(f"{where}: set it with {_OPT}.{typed_keywords[keyword]} (a typed key), "
                              f"not KWARGS")
        if keyword not in allowed:
            raise ConfigError(f"{where}: {name} ({info.cls.__module__}.{info.cls.__qualname__}) takes "
                              f"no keyword {keyword!r}; allowed: {', '.join(allowed) or 'none'}"
                              + (f" (and the typed keys {', '.join(info.typed_keys)})" if info.typed_keys else ""))
        options[keyword] = tuple(value) if isinstance(value, list) else value
    return options


def optimizer_spec(optimizer: CfgNode) -> OptimizerSpec:
    """Validate ``SOLVER.OPTIMIZER`` (ConfigError naming the key) and return its spec; no
    model is needed."""
    name = check_type(optimizer.TYPE)
    validate_optimizer(optimizer)
    clip_type = CLIP_TYPES.check(optimizer.CLIP_GRADIENTS.CLIP_TYPE, f"{_OPT}.CLIP_GRADIENTS.CLIP_TYPE")
    builder = PARAM_GROUPS_BUILDERS.check(optimizer.PARAM_GROUPS_BUILDER, f"{_OPT}.PARAM_GROUPS_BUILDER")
    info = OPTIMIZERS.get(name)
    implementation = optimizer.IMPLEMENTATION.lower()
    if implementation == "fused" and not info.fused:
        fused = ", ".join(n for n in OPTIMIZERS if OPTIMIZERS.get(n).fused)
        raise ConfigError(f"{_OPT}.IMPLEMENTATION: 'fused' is not available for TYPE {optimizer.TYPE}; "
                          f"allowed: auto, foreach, loop (fused exists for {fused})")
    if implementation == "foreach" and not info.foreach:
        raise ConfigError(f"{_OPT}.IMPLEMENTATION: 'foreach' is not available for TYPE {optimizer.TYPE}; "
                          f"allowed: auto, loop")
    check_bool(optimizer.COMPILE, f"{_OPT}.COMPILE")
    if optimizer.COMPILE:
        if implementation not in ("auto", "loop"):
            raise ConfigError(f"{_OPT}.IMPLEMENTATION: {implementation!r} with {_OPT}.COMPILE True; allowed: "
                              f"auto, loop (the compiled step generates its own kernel from the loop)")
        implementation = "loop"
    if not info.weight_decay:
        for key in _DECAY_KEYS:
            if optimizer[key] != 0:
                raise ConfigError(f"{_OPT}.{key}: TYPE {name} takes no weight decay; allowed: 0, "
                                  f"got {optimizer[key]!r}")
    options = optimizer_options(optimizer, name)
    if options.get("nesterov") and not options.get("momentum", 0) > 0:
        raise ConfigError(f"{_OPT}.NESTEROV: True needs {_OPT}.MOMENTUM > 0, "
                          f"got MOMENTUM={optimizer.MOMENTUM}")
    clip = optimizer.CLIP_GRADIENTS
    return OptimizerSpec(
        name=name,
        grouping=grouping_spec(optimizer, muon=info.muon_split),
        options=options,
        implementation=implementation,
        clip=ClipSpec(clip_type, clip.CLIP_VALUE, clip.NORM_TYPE) if clip.ENABLED else None,
        builder=builder,
        compile=optimizer.COMPILE,
    )


def sparse_gradient_params(model: nn.Module) -> List[str]:
    """Names of the trained parameters whose gradients are sparse: the weights of
    ``nn.Embedding``/``nn.EmbeddingBag`` built with ``sparse=True``."""
    return [f"{module_name}.weight" if module_name else "weight"
            for module_name, module in model.named_modules()
            if isinstance(module, (nn.Embedding, nn.EmbeddingBag)) and module.sparse
            and module.weight.requires_grad]


def check_sparse_gradients(names: List[str], spec: OptimizerSpec, model: Optional[nn.Module] = None) -> None:
    """ConfigError when ``spec`` cannot step the sparse gradients of the params ``names``: only
    SGD's loop and foreach kernels and SparseAdam take them, and no clip can (torch's clips
    cannot either); SparseAdam takes nothing else. Checked at build time, before a run fails
    at its first step."""
    info = OPTIMIZERS.get(spec.name)
    if info.sparse_only and model is not None:
        dense = [n for n, p in model.named_parameters() if p.requires_grad and n not in names]
        if dense:
            shown = ", ".join(dense[:3]) + (f" and {len(dense) - 3} more" if len(dense) > 3 else "")
            raise ConfigError(f"{_OPT}.TYPE: {spec.name!r} steps only sparse gradients (embeddings "
                              f"with sparse=True), and {shown} have dense ones; allowed for this "
                              f"model: {', '.join(n for n in OPTIMIZERS if not OPTIMIZERS.get(n).sparse_only)}")
    if not names:
        return
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    what = f"sparse gradients ({shown}: an embedding with sparse=True)"
    if info.cls is not torch.optim.SGD and not info.sparse_only:
        raise ConfigError(f"{_OPT}.TYPE: {spec.name!r} cannot step {what}; allowed with "
                          f"sparse gradients: 'SGD', 'SPARSEADAM', or build the embedding with sparse=False")
    if spec.implementation == "fused":
        raise ConfigError(f"{_OPT}.IMPLEMENTATION: 'fused' cannot step {what}; "
                          f"allowed: auto, foreach, loop")
    if spec.clip is not None:
        raise ConfigError(f"{_OPT}.CLIP_GRADIENTS.ENABLED: True cannot clip {what}; "
                          f"allowed with sparse gradients: False")


# The optimizers whose fused kernels step sharded (FSDP2's DTensor) parameters: torch 2.13's
# DTensor has sharding rules for _fused_adam_ and _fused_adamw_ alone (the others raise).
FUSED_ON_SHARDS = ("Adam", "AdamW")
# The registry's optimizers that cannot step sharded parameters at all: Muon orthogonalizes
# whole matrices and Adafactor factors whole ones (a shard's rows are not the matrix), torch's
# Rprop has no DTensor path for its sign masks, SparseAdam takes sparse gradients only.
NOT_ON_SHARDS = ("MUON", "ADAFACTOR", "RPROP", "SPARSEADAM")


def _fused_on_shards(info: OptimizerInfo) -> bool:
    return any(c.__name__ in FUSED_ON_SHARDS for c in info.cls.__mro__)


def check_on_shards(spec: OptimizerSpec) -> None:
    """ConfigError when the optimizer of ``spec`` cannot step sharded parameters
    (SOLVER.DISTRIBUTED.STRATEGY fsdp): a type that needs whole tensors, or a fused kernel
    torch has no sharded form of."""
    if spec.name in NOT_ON_SHARDS:
        allowed = ", ".join(n for n in OPTIMIZERS.names() if n not in NOT_ON_SHARDS)
        raise ConfigError(f"{_OPT}.TYPE: {spec.name} cannot step parameters sharded by SOLVER.DISTRIBUTED."
                          f"STRATEGY fsdp; allowed there: {allowed} (or use ddp)")
    info = OPTIMIZERS.get(spec.name)
    if spec.implementation == "fused" and not _fused_on_shards(info):
        raise ConfigError(f"{_OPT}.IMPLEMENTATION: 'fused' cannot step {info.cls.__name__} on sharded "
                          f"parameters (SOLVER.DISTRIBUTED.STRATEGY fsdp: torch's fused kernels take them "
                          f"for {', '.join(FUSED_ON_SHARDS)}); allowed: auto, foreach, loop")


def _fused_supported(params: List[torch.Tensor], info: OptimizerInfo) -> bool:
    # torch's own list of devices with fused optimizer kernels (CPU and CUDA among them).
    devices = _get_fused_kernels_supported_devices()
    if params and is_sharded(params[0]) and not _fused_on_shards(info):
        return False
    return all(p.is_floating_point() and not p.is_sparse and p.device.type in devices
               for p in params)


def implementation_kwargs(implementation: str, info: OptimizerInfo,
                          params: List[torch.Tensor], sparse: bool = False) -> Dict:
    """torch's ``fused``/``foreach`` arguments for IMPLEMENTATION (auto, fused, foreach, loop).

    auto picks fused where torch has a fused kernel for the optimizer, the params' devices and
    dtypes, and no gradient is ``sparse`` (one pass over the memory: the fastest everywhere);
    else foreach when every param is on CUDA, where it is torch's fast path; else the loop,
    which on the CPU beats foreach (RMSprop on a 22M-parameter ViT: foreach takes 1.2-1.7x the
    loop's time; see tools/benchmark_solver.py). A class with neither argument gets none.
    Raises ValueError when "fused" is forced on an optimizer without a fused kernel.
    """
    if implementation == "fused":
        if not info.fused:
            raise ValueError(f"{_OPT}.IMPLEMENTATION: 'fused' is not available for "
                             f"{info.cls.__name__}; allowed: auto, foreach, loop")
        return dict(fused=True)
    if not info.foreach:
        return {}
    if implementation == "foreach":
        return dict(foreach=True)
    if implementation == "loop":
        return dict(foreach=False)
    if info.fused and _fused_supported(params, info) and not sparse:
        return dict(fused=True)
    return dict(foreach=all(p.is_cuda for p in params))


def build_optimizer(model: nn.Module, spec: OptimizerSpec) -> torch.optim.Optimizer:
    """The optimizer of ``spec`` over ``model``'s param groups, every group's ``initial_lr``
    set; it clips inside ``step()`` when ``spec.clip`` is set. Parameters named by
    ``spec.grouping.freeze`` get ``requires_grad=False`` first.

    Raises ConfigError when the spec cannot step the model (sparse gradients, a FREEZE or
    CUSTOM_KEYS entry matching no parameter, a value the torch class refuses), ValueError when
    the model has nothing to train.
    """
    info = OPTIMIZERS.get(spec.name)
    freeze_params(model, spec.grouping.freeze)
    sparse = sparse_gradient_params(model)
    check_sparse_gradients(sparse, spec, model)
    groups = run_builder(spec.builder, model, spec.grouping)
    tensors = [p[1] if isinstance(p, tuple) else p for group in groups for p in group["params"]]
    if tensors and is_sharded(tensors[0]):
        check_on_shards(spec)
    kwargs = dict(spec.options, lr=spec.grouping.base_lr)
    if info.weight_decay:  # else every decay is 0 (optimizer_spec) and torch ignores the key
        kwargs["weight_decay"] = spec.grouping.weight_decay
    kwargs.update(implementation_kwargs(spec.implementation, info, tensors, sparse=bool(sparse)))
    try:
        if spec.clip is None:
            optimizer = info.cls(groups, **kwargs)
        else:
            optimizer = info.clipped(groups, clip_type=spec.clip.clip_type, clip_value=spec.clip.clip_value,
                                     norm_type=spec.clip.norm_type, **kwargs)
        if spec.compile:
            set_hyperparameter_form(optimizer, compiled=True)
        return optimizer
    except ValueError as e:
        shown = ", ".join(f"{k}={v!r}" for k, v in spec.options.items())
        raise ConfigError(f"{_OPT}: {info.cls.__name__}({shown}) refused its arguments: "
                          f"{first_line(e)}") from None


class Optimizer:
    """``Optimizer(model, cfg.SOLVER.OPTIMIZER).build()`` returns the configured optimizer.

    The config is validated here, once (ConfigError on a bad value). Param groups follow
    ``param_groups.build_param_groups`` (or the configured builder); clipping, when enabled,
    runs inside ``step()``.
    """

    def __init__(self, model: nn.Module, optimizer: CfgNode) -> None:
        self.model = model
        self.spec = optimizer_spec(optimizer)

    def get_params(self) -> List[Dict]:
        """The param groups (see ``build_param_groups``)."""
        return run_builder(self.spec.builder, self.model, self.spec.grouping)

    def build(self) -> torch.optim.Optimizer:
        """Return the ``torch.optim.Optimizer``, with every group's ``initial_lr`` set."""
        return build_optimizer(self.model, self.spec)
