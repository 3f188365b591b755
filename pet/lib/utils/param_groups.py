"""Sorting a model's parameters into optimizer param groups: a pure function of the model and
plain values (``GroupingSpec``); ``grouping_spec(cfg)`` is the config adapter.

Every trainable parameter gets exactly one rule (a custom key by name, else the first rule of
``param_rules.PARAM_RULES`` that matches, else "default"), then the modifiers on top: the
backbone lr factor, the layer-wise lr decay, the global multipliers and, for TYPE MUON, which
of the two updates steps it. Parameters with identical hyper-parameters share one param group:
multi-tensor and fused kernels work per group, so a handful of groups steps several times
faster than one group per tensor (MMEngine's one group per tensor).
"""
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn
from yacs.config import CfgNode

from pet.lib.config.errors import ConfigError
from pet.lib.utils.param_rules import (  # noqa: F401  (re-exported: the names users know)
    CUSTOM_RULE, DEFAULT_RULE, NORM_MODULE_TYPES, PARAM_RULES, CustomKey, GroupingSpec, MuonSplit,
    ParamRule, block_index, custom_key, layer_decay_scale, param_rule, rule_hyperparams)
from pet.lib.utils.registry import Registry

BACKBONE_PREFIX = "backbone."
_OPT = "SOLVER.OPTIMIZER"


def custom_keys_of(entries) -> Tuple[CustomKey, ...]:
    """``SOLVER.OPTIMIZER.CUSTOM_KEYS`` (validated mappings, any case) as ``CustomKey``s."""
    keys = []
    for entry in entries:
        fields = {str(k).upper(): v for k, v in dict(entry).items()}
        keys.append(CustomKey(fields["KEY"], float(fields.get("LR_MULT", 1.0)),
                              float(fields.get("DECAY_MULT", 1.0))))
    return tuple(keys)


def grouping_spec(optimizer: CfgNode, muon: bool = False) -> GroupingSpec:
    """The grouping values of an already validated ``SOLVER.OPTIMIZER``; ``muon``: split the
    parameters between Muon and AdamW (TYPE MUON)."""
    split = None
    if muon:
        split = MuonSplit(adamw_keys=tuple(optimizer.MUON.ADAMW_KEYS),
                          adamw_lr_mult=optimizer.MUON.ADAMW_LR_MULT)
    return GroupingSpec(
        base_lr=optimizer.BASE_LR,
        weight_decay=optimizer.WEIGHT_DECAY,
        bias_lr_factor=optimizer.BIAS_LR_FACTOR,
        backbone_lr_factor=optimizer.BACKBONE_LR_FACTOR,
        weight_decay_bias=optimizer.WEIGHT_DECAY_BIAS,
        weight_decay_norm=optimizer.WEIGHT_DECAY_NORM,
        weight_decay_embed=optimizer.WEIGHT_DECAY_EMBED,
        embed_keywords=tuple(optimizer.EMBED_KEYWORDS),
        custom_keys=custom_keys_of(optimizer.CUSTOM_KEYS),
        dwconv_decay_mult=optimizer.DWCONV_DECAY_MULT,
        flat_decay_mult=optimizer.FLAT_DECAY_MULT,
        lr_mult=optimizer.LR_MULT,
        decay_mult=optimizer.DECAY_MULT,
        layer_decay=optimizer.LAYER_DECAY,
        block_pattern=optimizer.LAYER_DECAY_BLOCK_PATTERN,
        freeze=tuple(optimizer.FREEZE),
        rules=tuple(PARAM_RULES.check(name, f"{_OPT}.RULES") for name in optimizer.RULES),
        muon=split,
    )


@dataclass(frozen=True)
class ParamAssignment:
    """Why one parameter gets its hyper-parameters: the answer of ``explain_params``.

    ``rule``: "custom", a PARAM_RULES name ("norm", "embed", "bias", "dwconv", "flat", ...) or
    "default"; ``custom_key``: the key of the "custom" rule; ``modifiers``: what changed the
    rule's values after it ("backbone", "layer_decay[block 3]", "global", "muon"/"adamw");
    ``options``: extra param-group entries (``use_muon``).
    """

    name: str
    param: torch.Tensor
    rule: str
    backbone: bool
    lr: float
    weight_decay: float
    custom_key: Optional[str] = None
    modifiers: Tuple[str, ...] = ()
    options: Tuple[Tuple[str, Any], ...] = ()


def trainable_params(model: nn.Module, freeze: Tuple[str, ...] = ()):
    """(module, param_name, full name, param) of every trainable parameter in module order; a
    shared one once (under its first owner); names containing a ``freeze`` entry left out."""
    seen = set()
    for module_name, module in model.named_modules():
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            name = f"{module_name}.{param_name}" if module_name else param_name
            if not any(word in name for word in freeze):
                yield module, param_name, name, param


def freeze_params(model: nn.Module, patterns: Tuple[str, ...]) -> List[str]:
    """Set ``requires_grad=False`` on every parameter whose full name contains one of
    ``patterns`` (SOLVER.OPTIMIZER.FREEZE); returns their names.

    Raises ConfigError naming a pattern that matches no parameter (a typo must not silently
    train what was meant to be frozen).
    """
    if not patterns:  # the usual case: skip a walk over every parameter (2 us of 15 per tensor)
        return []
    named = list(model.named_parameters())
    for pattern in patterns:
        if not any(pattern in name for name, _ in named):
            raise ConfigError(f"{_OPT}.FREEZE: {pattern!r} matches no parameter of "
                              f"{type(model).__name__}; names look like {_examples(named)}")
    frozen = [name for name, p in named if any(pattern in name for pattern in patterns)]
    for name, p in named:
        if name in frozen:
            p.requires_grad_(False)
    return frozen


def _examples(named) -> str:
    names = [name for name, _ in named]
    return ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")


def _check_custom_keys_match(spec: GroupingSpec, names: List[str]) -> None:
    for entry in spec.custom_keys:
        if not any(entry.key in name for name in names):
            raise ConfigError(
                f"{_OPT}.CUSTOM_KEYS: KEY {entry.key!r} matches no trainable parameter; "
                f"names look like {', '.join(names[:4])}{', ...' if len(names) > 4 else ''}")


def _num_blocks(spec: GroupingSpec, pattern, names: List[str]) -> int:
    blocks = [b for b in (block_index(name, pattern) for name in names) if b is not None]
    if not blocks:
        raise ConfigError(
            f"{_OPT}.LAYER_DECAY_BLOCK_PATTERN: {spec.block_pattern!r} finds no block number in "
            f"any parameter name (LAYER_DECAY={spec.layer_decay:g} needs one); names look like "
            f"{', '.join(names[:4])}")
    return max(blocks) + 1


def _muon_side(assignment_rule: str, name: str, param: torch.Tensor, split: MuonSplit) -> bool:
    """True when Muon steps the parameter: a 2-D hidden weight matrix (not an embedding, not
    named by ``adamw_keys``, e.g. the head)."""
    return (param.ndim == 2 and assignment_rule != "embed"
            and not any(word in name for word in split.adamw_keys))


def explain_params(model: nn.Module, spec: GroupingSpec) -> List[ParamAssignment]:
    """One ``ParamAssignment`` per trainable parameter, in module order.

    Frozen parameters (``requires_grad=False`` or named by ``spec.freeze``) are left out; a
    parameter shared by several modules appears once, under the first name and module that owns
    it. Raises ConfigError when a custom key matches no trainable parameter, or LAYER_DECAY is on
    and the block pattern finds no block.
    """
    params = list(trainable_params(model, spec.freeze))
    names = [name for _, _, name, _ in params]
    _check_custom_keys_match(spec, names)
    pattern = re.compile(spec.block_pattern)
    num_blocks = _num_blocks(spec, pattern, names) if spec.layer_decay != 1.0 else 0
    seen_block = False
    assignments = []
    for module, param_name, name, param in params:
        custom = custom_key(name, spec.custom_keys)
        rule = "custom" if custom else param_rule(module, param_name, spec)
        lr, weight_decay = rule_hyperparams(rule, spec, custom)
        modifiers, options = [], ()
        backbone = name.startswith(BACKBONE_PREFIX)
        if backbone:
            lr *= spec.backbone_lr_factor
            modifiers.append("backbone")
        if spec.layer_decay != 1.0:
            block = block_index(name, pattern)
            seen_block = seen_block or block is not None
            scale = layer_decay_scale(spec.layer_decay, num_blocks, block, before_blocks=not seen_block)
            if scale != 1.0:
                lr *= scale
                modifiers.append(f"layer_decay[{'embed' if block is None else f'block {block}'}]")
        if spec.lr_mult != 1.0 or spec.decay_mult != 1.0:
            lr, weight_decay = lr * spec.lr_mult, weight_decay * spec.decay_mult
            modifiers.append("global")
        if spec.muon is not None:
            use_muon = _muon_side(rule, name, param, spec.muon)
            if not use_muon:
                lr *= spec.muon.adamw_lr_mult
            modifiers.append("muon" if use_muon else "adamw")
            options = (("use_muon", use_muon),)
        assignments.append(ParamAssignment(name, param, rule, backbone, lr, weight_decay,
                                           custom.key if custom else None, tuple(modifiers), options))
    return assignments


def build_param_groups(model: nn.Module, spec: GroupingSpec) -> List[Dict]:
    """Param groups for ``torch.optim``: one per distinct (lr, weight_decay, options), in order
    of first appearance, each holding ``(name, param)`` pairs so torch records ``param_names``.

    Raises ValueError when the model has no trainable parameter, ConfigError as
    ``explain_params``.
    """
    groups: Dict[Tuple, Dict] = {}
    for item in explain_params(model, spec):
        key = (item.lr, item.weight_decay, item.options)
        if key not in groups:
            groups[key] = {"params": [], "lr": item.lr, "initial_lr": item.lr,
                           "weight_decay": item.weight_decay, **dict(item.options)}
        groups[key]["params"].append((item.name, item.param))
    if not groups:
        raise ValueError(f"{type(model).__name__} has no trainable parameter to optimize")
    return list(groups.values())


# A whole param-group builder (MMEngine's optimizer "constructor"): (model, GroupingSpec) ->
# torch param groups (dicts with "params"; "lr"/"weight_decay" default to the spec's base
# values). Selected by SOLVER.OPTIMIZER.PARAM_GROUPS_BUILDER.
PARAM_GROUPS_BUILDERS = Registry("param groups builder")
PARAM_GROUPS_BUILDERS.register(build_param_groups, name="default")


def run_builder(name: str, model: nn.Module, spec: GroupingSpec) -> List[Dict]:
    """The param groups of the registered builder ``name``, every group's lr, weight decay and
    ``initial_lr`` filled in from the spec where the builder left them out."""
    builder: Callable = PARAM_GROUPS_BUILDERS.get(name)
    groups = [dict(group) for group in builder(model, spec)]
    for group in groups:
        group.setdefault("lr", spec.base_lr)
        group.setdefault("weight_decay", spec.weight_decay)
        group.setdefault("initial_lr", group["lr"])
    if not groups:
        raise ValueError(f"{type(model).__name__} has no trainable parameter to optimize")
    return groups


def assignments_of_groups(model: nn.Module, groups: List[Dict], rule: str) -> List[ParamAssignment]:
    """The ``ParamAssignment``s that a builder's ``groups`` imply (its rules are its own, so
    each parameter's rule is reported as ``rule``, e.g. "builder:mine")."""
    name_of = {id(p): name for name, p in model.named_parameters()}
    assignments = []
    for group in groups:
        for item in group["params"]:
            name, param = item if isinstance(item, tuple) else (name_of.get(id(item), "?"), item)
            assignments.append(ParamAssignment(name, param, rule, name.startswith(BACKBONE_PREFIX),
                                               group["lr"], group["weight_decay"]))
    return assignments
