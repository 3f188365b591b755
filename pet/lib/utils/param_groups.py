"""Sorting a model's parameters into optimizer param groups: a pure function of model and config.

Every trainable parameter gets exactly one rule (a custom rule by name, else norm, embed, bias
or default, with the backbone lr factor on top), and so one lr and weight decay. Parameters
with identical hyper-parameters share one param group: multi-tensor and fused kernels work per
group, so a handful of groups steps several times faster than one group per tensor.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn
from yacs.config import CfgNode

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
class ParamAssignment:
    """Why one parameter gets its hyper-parameters: the answer of ``explain_params``."""

    name: str
    param: torch.Tensor
    rule: str  # "custom", "norm", "embed", "bias" or "default"
    backbone: bool
    lr: float
    weight_decay: float


def custom_rule(name: str, custom_rules) -> Optional[Tuple[str, float, float]]:
    """The CUSTOM_RULES entry whose keyword is the longest one in the full ``name``, or None."""
    matches = [rule for rule in custom_rules if rule[0] in name]
    return max(matches, key=lambda rule: len(rule[0])) if matches else None


def param_rule(module: nn.Module, param_name: str, embed_keywords: Tuple[str, ...]) -> str:
    """The built-in rule for parameter ``param_name`` owned directly by ``module``."""
    if isinstance(module, NORM_MODULE_TYPES):
        return "norm"
    if isinstance(module, nn.Embedding) or any(word in param_name for word in embed_keywords):
        return "embed"
    if param_name == "bias" or param_name.endswith("_bias"):
        return "bias"
    return "default"


def rule_hyperparams(rule: str, backbone: bool, optimizer: CfgNode,
                     custom: Optional[Tuple[str, float, float]] = None) -> Tuple[float, float]:
    """(lr, weight_decay) for a rule under ``SOLVER.OPTIMIZER``; ``custom`` is the matching
    CUSTOM_RULES entry of the "custom" rule."""
    lr = optimizer.BASE_LR
    if rule == "custom":
        lr = optimizer.BASE_LR * custom[1]
        weight_decay = optimizer.WEIGHT_DECAY * custom[2]
    elif rule == "norm":
        weight_decay = optimizer.WEIGHT_DECAY_NORM
    elif rule == "embed":
        weight_decay = optimizer.WEIGHT_DECAY_EMBED
    elif rule == "bias":
        lr = optimizer.BASE_LR * optimizer.BIAS_LR_FACTOR
        weight_decay = optimizer.WEIGHT_DECAY_BIAS
    else:
        weight_decay = optimizer.WEIGHT_DECAY
    if backbone:
        lr *= optimizer.BACKBONE_LR_FACTOR
    return lr, weight_decay


def explain_params(model: nn.Module, optimizer: CfgNode) -> List[ParamAssignment]:
    """One ``ParamAssignment`` per trainable parameter, in module order.

    Frozen parameters (``requires_grad=False``) are left out; a parameter shared by several
    modules appears once, under the first name and module that owns it.
    """
    embed_keywords = tuple(optimizer.EMBED_KEYWORDS)
    seen = set()
    assignments = []
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            name = f"{module_name}.{param_name}" if module_name else param_name
            custom = custom_rule(name, optimizer.CUSTOM_RULES)
            rule = "custom" if custom else param_rule(module, param_name, embed_keywords)
            backbone = name.startswith(BACKBONE_PREFIX)
            lr, weight_decay = rule_hyperparams(rule, backbone, optimizer, custom)
            assignments.append(ParamAssignment(name, param, rule, backbone, lr, weight_decay))
    return assignments


def build_param_groups(model: nn.Module, optimizer: CfgNode) -> List[Dict]:
    """Param groups for ``torch.optim``: one per distinct (lr, weight_decay), in order of first
    appearance, each holding ``(name, param)`` pairs so torch records ``param_names``.

    Raises ValueError when the model has no trainable parameter.
    """
    groups: Dict[Tuple[float, float], Dict] = {}
    for item in explain_params(model, optimizer):
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
