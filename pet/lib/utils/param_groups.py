"""Sorting a model's parameters into optimizer param groups: a pure function of the model and
plain values (``GroupingSpec``); ``grouping_spec(cfg)`` is the config adapter.

Every trainable parameter gets exactly one rule (a custom rule by name, else the first
registered rule that matches, else "default"), with the backbone lr factor on top, and so one
lr and weight decay. Parameters with identical hyper-parameters share one param group:
multi-tensor and fused kernels work per group, so a handful of groups steps several times
faster than one group per tensor.
"""
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn
from yacs.config import CfgNode

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

BACKBONE_PREFIX = "backbone."


@dataclass(frozen=True)
class GroupingSpec:
    """The plain values that decide every parameter's lr and weight decay
    (``SOLVER.OPTIMIZER``'s documentation says what each means)."""

    base_lr: float
    weight_decay: float
    bias_lr_factor: float = 1.0
    backbone_lr_factor: float = 1.0
    weight_decay_bias: float = 0.0
    weight_decay_norm: float = 0.0
    weight_decay_embed: float = 0.0
    embed_keywords: Tuple[str, ...] = ()
    # (KEYWORD, LR_FACTOR, WEIGHT_DECAY_FACTOR); the longest KEYWORD in a full name wins.
    custom_rules: Tuple[Tuple[str, float, float], ...] = ()


@dataclass(frozen=True)
class ParamRule:
    """A registry entry: which parameters a rule takes and the (lr, weight decay) it gives.

    ``matches(module, param_name, spec)``: ``module`` owns the parameter directly.
    """

    matches: Callable[[nn.Module, str, GroupingSpec], bool]
    hyperparams: Callable[[GroupingSpec], Tuple[float, float]]


# Tried in registration order; a parameter no rule takes gets DEFAULT_RULE.
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
DEFAULT_RULE = "default"


def grouping_spec(optimizer: CfgNode) -> GroupingSpec:
    """The grouping values of an already validated ``SOLVER.OPTIMIZER``."""
    return GroupingSpec(
        base_lr=optimizer.BASE_LR,
        weight_decay=optimizer.WEIGHT_DECAY,
        bias_lr_factor=optimizer.BIAS_LR_FACTOR,
        backbone_lr_factor=optimizer.BACKBONE_LR_FACTOR,
        weight_decay_bias=optimizer.WEIGHT_DECAY_BIAS,
        weight_decay_norm=optimizer.WEIGHT_DECAY_NORM,
        weight_decay_embed=optimizer.WEIGHT_DECAY_EMBED,
        embed_keywords=tuple(optimizer.EMBED_KEYWORDS),
        custom_rules=tuple(tuple(rule) for rule in optimizer.CUSTOM_RULES),
    )


@dataclass(frozen=True)
class ParamAssignment:
    """Why one parameter gets its hyper-parameters: the answer of ``explain_params``."""

    name: str
    param: torch.Tensor
    rule: str  # "custom", a PARAM_RULES name ("norm", "embed", "bias") or "default"
    backbone: bool
    lr: float
    weight_decay: float


def custom_rule(name: str, custom_rules) -> Optional[Tuple[str, float, float]]:
    """The CUSTOM_RULES entry whose keyword is the longest one in the full ``name``, or None."""
    matches = [rule for rule in custom_rules if rule[0] in name]
    return max(matches, key=lambda rule: len(rule[0])) if matches else None


def param_rule(module: nn.Module, param_name: str, spec: GroupingSpec) -> str:
    """The name of the first registered rule that takes parameter ``param_name`` of
    ``module``, else "default"."""
    for name in PARAM_RULES:
        if PARAM_RULES.get(name).matches(module, param_name, spec):
            return name
    return DEFAULT_RULE


def rule_hyperparams(rule: str, backbone: bool, spec: GroupingSpec,
                     custom: Optional[Tuple[str, float, float]] = None) -> Tuple[float, float]:
    """(lr, weight_decay) of ``rule``; ``custom`` is the matching CUSTOM_RULES entry of the
    "custom" rule."""
    if rule == "custom":
        lr, weight_decay = spec.base_lr * custom[1], spec.weight_decay * custom[2]
    elif rule == DEFAULT_RULE:
        lr, weight_decay = spec.base_lr, spec.weight_decay
    else:
        lr, weight_decay = PARAM_RULES.get(rule).hyperparams(spec)
    if backbone:
        lr *= spec.backbone_lr_factor
    return lr, weight_decay


def explain_params(model: nn.Module, spec: GroupingSpec) -> List[ParamAssignment]:
    """One ``ParamAssignment`` per trainable parameter, in module order.

    Frozen parameters (``requires_grad=False``) are left out; a parameter shared by several
    modules appears once, under the first name and module that owns it.
    """
    seen = set()
    assignments = []
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            name = f"{module_name}.{param_name}" if module_name else param_name
            custom = custom_rule(name, spec.custom_rules)
            rule = "custom" if custom else param_rule(module, param_name, spec)
            backbone = name.startswith(BACKBONE_PREFIX)
            lr, weight_decay = rule_hyperparams(rule, backbone, spec, custom)
            assignments.append(ParamAssignment(name, param, rule, backbone, lr, weight_decay))
    return assignments


def build_param_groups(model: nn.Module, spec: GroupingSpec) -> List[Dict]:
    """Param groups for ``torch.optim``: one per distinct (lr, weight_decay), in order of first
    appearance, each holding ``(name, param)`` pairs so torch records ``param_names``.

    Raises ValueError when the model has no trainable parameter.
    """
    groups: Dict[Tuple[float, float], Dict] = {}
    for item in explain_params(model, spec):
        key = (item.lr, item.weight_decay)
        if key not in groups:
            groups[key] = {
                "params": [],
                "lr": item.lr,
                "initial_lr": item.lr,
                "weight_decay": item.weight_decay,
            }
        groups[key]["params"].append((item.name, item.param))
    if not groups:
        raise ValueError(f"{type(model).__name__} has no trainable parameter to optimize")
    return list(groups.values())
