"""The vocabulary of parameter rules: which parameters a rule takes and the (lr, weight decay) it
gives, as plain values (``GroupingSpec``) and a registry (``PARAM_RULES``).

MMEngine's ``paramwise_cfg`` in YACS form: ``custom_keys`` (``CustomKey``, the longest key
wins), ``bias_lr_mult``/``bias_decay_mult`` (the bias rule), ``norm_decay_mult`` (norm),
``dwconv_decay_mult`` (dwconv), ``flat_decay_mult`` (flat), plus BEiT's layer-wise lr decay
(``block_index``). ``param_groups`` applies them; nothing here reads a config.
"""
import re
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

from torch import nn

from pet.lib.utils.registry import Registry

# Subclasses count too (isinstance), e.g. a NaiveSyncBatchNorm derived from BatchNorm2d.
NORM_MODULE_TYPES: Tuple[type, ...] = (
    nn.modules.batchnorm._BatchNorm,  # BatchNorm1d/2d/3d, SyncBatchNorm, lazy variants
    nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm,  # InstanceNorm1d/2d/3d
    nn.LayerNorm,
    nn.LocalResponseNorm,
    nn.RMSNorm,
)

# timm-style block names and the shipped transformer's (``blocks.layers.3.``): one group, N.
DEFAULT_BLOCK_PATTERN = r"(?:^|\.)(?:blocks|layers|layer)\.(\d+)\."


@dataclass(frozen=True)
class CustomKey:
    """A parameter whose full name contains ``key`` gets lr x ``lr_mult`` and
    WEIGHT_DECAY x ``decay_mult`` in place of its other rules (MMEngine's ``custom_keys``)."""

    key: str
    lr_mult: float = 1.0
    decay_mult: float = 1.0


@dataclass(frozen=True)
class MuonSplit:
    """How TYPE MUON splits the parameters: 2-D weights go to Muon unless an embedding or named
    by ``adamw_keys``; the rest to AdamW, whose lr is the rule's lr x ``adamw_lr_mult``."""

    adamw_keys: Tuple[str, ...] = ("head", "classifier")
    adamw_lr_mult: float = 1.0


@dataclass(frozen=True)
class GroupingSpec:
    """The plain values that decide every parameter's lr and weight decay
    (``SOLVER.OPTIMIZER``'s documentation in ``pet/lib/config/solver.py`` says what each means)."""

    base_lr: float
    weight_decay: float
    bias_lr_factor: float = 1.0
    backbone_lr_factor: float = 1.0
    weight_decay_bias: float = 0.0
    weight_decay_norm: float = 0.0
    weight_decay_embed: float = 0.0
    embed_keywords: Tuple[str, ...] = ()
    custom_keys: Tuple[CustomKey, ...] = ()
    dwconv_decay_mult: float = 1.0
    flat_decay_mult: float = 1.0
    lr_mult: float = 1.0
    decay_mult: float = 1.0
    layer_decay: float = 1.0
    block_pattern: str = DEFAULT_BLOCK_PATTERN
    freeze: Tuple[str, ...] = ()
    # None: the PARAM_RULES registry's order (every registered rule).
    rules: Optional[Tuple[str, ...]] = None
    muon: Optional[MuonSplit] = None


@dataclass(frozen=True)
class ParamRule:
    """A registry entry: which parameters a rule takes and the (lr, weight decay) it gives.

    ``matches(module, param_name, spec)``: ``module`` owns the parameter directly
    (``getattr(module, param_name)`` is the tensor).
    """

    matches: Callable[[nn.Module, str, GroupingSpec], bool]
    hyperparams: Callable[[GroupingSpec], Tuple[float, float]]


def is_depthwise_conv(module: nn.Module) -> bool:
    """A convolution with one filter group per input channel (MMEngine's test for dwconv)."""
    return (isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1
            and module.groups == module.in_channels)


# Tried in registration order (or SOLVER.OPTIMIZER.RULES' order); a parameter no rule takes gets
# DEFAULT_RULE. A rule whose multiplier is 1.0 (off) does not fire, so explain shows the rest.
PARAM_RULES = Registry("param rule")
PARAM_RULES.register(ParamRule(
    matches=lambda module, param_name, spec: isinstance(module, NORM_MODULE_TYPES),
    hyperparams=lambda spec: (spec.base_lr, spec.weight_decay_norm),
), name="norm")
PARAM_RULES.register(ParamRule(
    matches=lambda module, param_name, spec: (isinstance(module, nn.Embedding) or
                                              any(word in param_name for word in spec.embed_keywords)),
    hyperparams=lambda spec: (spec.base_lr, spec.weight_decay_embed),
), name="embed")
PARAM_RULES.register(ParamRule(
    matches=lambda module, param_name, spec: param_name == "bias" or param_name.endswith("_bias"),
    hyperparams=lambda spec: (spec.base_lr * spec.bias_lr_factor, spec.weight_decay_bias),
), name="bias")
PARAM_RULES.register(ParamRule(
    matches=lambda module, param_name, spec: (spec.dwconv_decay_mult != 1.0 and param_name == "weight"
                                              and is_depthwise_conv(module)),
    hyperparams=lambda spec: (spec.base_lr, spec.weight_decay * spec.dwconv_decay_mult),
), name="dwconv")
PARAM_RULES.register(ParamRule(
    matches=lambda module, param_name, spec: (spec.flat_decay_mult != 1.0
                                              and getattr(module, param_name).ndim <= 1),
    hyperparams=lambda spec: (spec.base_lr, spec.weight_decay * spec.flat_decay_mult),
), name="flat")
DEFAULT_RULE = "default"
CUSTOM_RULE = "custom"


def custom_key(name: str, custom_keys: Tuple[CustomKey, ...]) -> Optional[CustomKey]:
    """The custom key that is the longest one contained in the full ``name``, or None."""
    matches = [entry for entry in custom_keys if entry.key in name]
    return max(matches, key=lambda entry: len(entry.key)) if matches else None


def param_rule(module: nn.Module, param_name: str, spec: GroupingSpec) -> str:
    """The name of the first rule (of ``spec.rules``, else every registered one) that takes
    parameter ``param_name`` of ``module``, else "default"."""
    for name in (spec.rules if spec.rules is not None else PARAM_RULES.names()):
        if PARAM_RULES.get(name).matches(module, param_name, spec):
            return PARAM_RULES.canonical(name)
    return DEFAULT_RULE


def rule_hyperparams(rule: str, spec: GroupingSpec,
                     custom: Optional[CustomKey] = None) -> Tuple[float, float]:
    """(lr, weight_decay) of ``rule`` before the modifiers (backbone, layer decay, global);
    ``custom`` is the matching key of the "custom" rule."""
    if rule == CUSTOM_RULE:
        return spec.base_lr * custom.lr_mult, spec.weight_decay * custom.decay_mult
    if rule == DEFAULT_RULE:
        return spec.base_lr, spec.weight_decay
    return PARAM_RULES.get(rule).hyperparams(spec)


def block_index(name: str, pattern: "re.Pattern") -> Optional[int]:
    """The block number N that ``pattern``'s first group finds in the full ``name``, or None."""
    found = pattern.search(name)
    return int(found.group(1)) if found else None


def layer_decay_scale(decay: float, num_blocks: int, block: Optional[int], before_blocks: bool) -> float:
    """BEiT's lr scale: the embeddings (everything before the first block) decay^(L+1), block i
    decay^(L-i), everything after the last block 1."""
    if block is not None:
        return decay ** (num_blocks - block)
    return decay ** (num_blocks + 1) if before_blocks else 1.0
