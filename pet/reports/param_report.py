"""What the optimizer does to each parameter, in words a user can check before training.

Everything here reads the answers of ``param_groups.explain_params`` and the groups of the real
optimizer (the rules are not written a second time) and adds what those leave out: frozen
parameters, the param group each tensor lands in, and warnings for the classic grouping mistakes.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from torch import nn

from pet.lib.utils.param_groups import NORM_MODULE_TYPES, ParamAssignment

FROZEN = "frozen"


@dataclass(frozen=True)
class ParamRow:
    """One parameter of the model: its rule, hyper-parameters and param group (None if frozen)."""

    name: str
    shape: Tuple[int, ...]
    rule: str  # a rule_label, or "frozen"
    lr: Optional[float]
    weight_decay: Optional[float]
    group: Optional[int]


@dataclass(frozen=True)
class GroupRow:
    """One param group of the optimizer and what it holds."""

    index: int
    lr: float
    weight_decay: float
    rules: Tuple[str, ...]
    tensors: int
    elements: int


def rule_label(assignment: ParamAssignment) -> str:
    """The rule that fired for a parameter, then the modifiers that changed its values:
    "norm", "bias+backbone", "custom[head]", "default+backbone+layer_decay[block 2]+global",
    "default+muon", ... (a custom key is shown with its KEY)."""
    rule = f"{assignment.rule}[{assignment.custom_key}]" if assignment.custom_key else assignment.rule
    modifiers = assignment.modifiers or (("backbone",) if assignment.backbone else ())
    return "+".join((rule,) + tuple(modifiers))


def group_rules(param_groups: Sequence[Dict],
                assignments: Sequence[ParamAssignment]) -> List[Tuple[str, ...]]:
    """For each optimizer param group, the rule labels of its parameters in order of first
    appearance (a group merges every rule that shares its lr and weight decay)."""
    label_of = {id(a.param): rule_label(a) for a in assignments}
    rules = []
    for group in param_groups:
        labels = [label_of[id(p)] for p in group["params"]]
        rules.append(tuple(dict.fromkeys(labels)))
    return rules


def param_rows(model: nn.Module, assignments: Sequence[ParamAssignment],
               param_groups: Sequence[Dict]) -> List[ParamRow]:
    """One row per parameter of ``model`` in ``named_parameters`` order, frozen ones included."""
    assignment_of = {id(a.param): a for a in assignments}
    group_of = {id(p): index for index, group in enumerate(param_groups) for p in group["params"]}
    rows = []
    for name, param in model.named_parameters():
        shape = tuple(param.shape)
        assignment = assignment_of.get(id(param))
        if assignment is None:
            rows.append(ParamRow(name, shape, FROZEN, None, None, None))
        else:
            rows.append(ParamRow(name, shape, rule_label(assignment), assignment.lr,
                                 assignment.weight_decay, group_of[id(param)]))
    return rows


def group_rows(param_groups: Sequence[Dict], assignments: Sequence[ParamAssignment]) -> List[GroupRow]:
    """One row per optimizer param group: its lr at the top of the schedule (``initial_lr``),
    weight decay, rules and how many tensors and elements it holds."""
    return [
        GroupRow(
            index=index,
            lr=group.get("initial_lr", group["lr"]),
            weight_decay=group.get("weight_decay", 0.0),
            rules=rules,
            tensors=len(group["params"]),
            elements=sum(p.numel() for p in group["params"]),
        )
        for index, (group, rules) in enumerate(zip(param_groups, group_rules(param_groups, assignments)))
    ]


def looks_like_norm(module: nn.Module) -> bool:
    """A module whose class name or running statistics say it normalizes (FrozenBN, a
    hand-written LayerNorm, ...), whether or not it is one of NORM_MODULE_TYPES."""
    name = type(module).__name__
    buffers = dict(module.named_buffers(recurse=False))
    return "Norm" in name or "BN" in name or "running_mean" in buffers or "running_var" in buffers


def grouping_warnings(model: nn.Module, assignments: Sequence[ParamAssignment]) -> List[str]:
    """The classic grouping mistakes, one sentence each.

    - a module that looks like a normalization layer but is not an instance of
      NORM_MODULE_TYPES: its parameters silently get the default or bias rule;
    - a 1-D (or scalar) parameter, bias- or scale-like, that no rule matched and that gets
      weight decay > 0 (not repeated for the parameters of a module named by the first check).
    """
    assignment_of = {id(a.param): a for a in assignments}
    warnings = []
    flagged = set()
    for module_name, module in model.named_modules():
        if isinstance(module, NORM_MODULE_TYPES) or not looks_like_norm(module):
            continue
        # Only trainable parameters matter: a norm without them is optimized by nobody.
        owned = [assignment_of[id(p)] for p in module.parameters(recurse=False) if id(p) in assignment_of]
        if not owned:
            continue
        flagged.update(id(a.param) for a in owned)
        got = ", ".join(f"{a.name}: {rule_label(a)}, weight decay {a.weight_decay:g}" for a in owned)
        warnings.append(
            f"{module_name} ({type(module).__name__}) looks like a normalization layer but is not "
            f"one of the recognized norm types (pet.lib.utils.param_groups.NORM_MODULE_TYPES), "
            f"so its parameters did not get the norm rule ({got})"
        )
    for a in assignments:
        if a.rule == "default" and a.param.ndim <= 1 and a.weight_decay > 0 and id(a.param) not in flagged:
            warnings.append(
                f"{a.name} (shape {tuple(a.param.shape)}) is bias- or scale-like but matched no "
                f"norm, bias or embed rule: it gets the default rule with weight decay {a.weight_decay:g}"
            )
    return warnings
