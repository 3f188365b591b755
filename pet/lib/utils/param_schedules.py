"""Schedules of hyper-parameters other than the lr (SOLVER.SCHEDULER.PARAMS): the self-supervised
recipes' weight decay cosine 0.04 -> 0.4 (DINO, iBOT, EVA), a momentum ramp, any numeric
param-group key, as MMEngine's param schedulers take any ``param_name``.

Each one reuses an lr policy's pure factor curve ``f(i)`` (warm-up included) and maps it
linearly so that the top of the curve (f = 1) is START and its end (f at the last iteration)
is END:

    value(i) = END + (START - END) * (f(i) - f_end) / (1 - f_end)

so COSINE gives ``END + (START - END) * (1 + cos(pi * i / T)) / 2``, DINO's
``cosine_scheduler``. A policy whose curve ends where it starts (a warm-up alone) gives
``START * f(i)`` and needs END = START. Each param group keeps its ratio to START, as each
group's lr keeps its ratio to BASE_LR: a group built with weight decay 0 stays at 0.
"""
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

import torch
from yacs.config import CfgNode

from pet.lib.config.errors import ConfigError
from pet.lib.utils.compiled_step import write_value
from pet.lib.utils.lr_schedules import Schedule

_PARAMS = "SOLVER.SCHEDULER.PARAMS"
# Keys of an entry besides PARAM, START and END: the policy and the lengths of its curve.
CURVE_KEYS = ("POLICY", "TOTAL_ITERS", "TOTAL_EPOCHS", "STEPS", "GAMMA", "LR_POW",
              "WARM_UP_ITERS", "WARM_UP_EPOCHS", "WARM_UP_FACTOR", "WARM_UP_METHOD")
# Keys no entry may schedule: the lr has its own schedule; the rest are not hyper-parameters.
NOT_SCHEDULABLE = ("lr", "initial_lr", "params", "param_names")


@dataclass(frozen=True)
class ParamSchedule:
    """``param`` (a param-group key) from ``start`` to ``end`` along ``curve``'s factor."""

    param: str
    start: float
    end: float
    curve: Schedule

    def value(self, iteration: int) -> float:
        """The value at ``iteration`` of a group built with ``start``."""
        factor = self.curve.factor(iteration)
        final = self.curve.factor(self.curve.max_iter)
        if final == 1.0:
            return self.start * factor
        return self.end + (self.start - self.end) * (factor - final) / (1.0 - final)

    @property
    def initial_key(self) -> str:
        """The param-group key holding a group's value at the top of the schedule."""
        return f"initial_{self.param}"


def _entry_prefix(index: int) -> str:
    return f"{_PARAMS}[{index}]"


def _number(entry: Mapping[str, Any], key: str, prefix: str) -> float:
    value = entry.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{prefix}.{key}: expected a finite number, got {value!r}")
    return float(value)


def build_param_schedules(scheduler: CfgNode, iter_per_epoch: Optional[int],
                          build_schedule) -> List[ParamSchedule]:
    """Validate SOLVER.SCHEDULER.PARAMS and build each entry's schedule (``build_schedule``:
    the lr's config adapter, applied to the entry's curve over SOLVER.SCHEDULER's lengths,
    without its warm-up unless the entry sets one). Raises ConfigError naming the entry."""
    entries = scheduler.get("PARAMS", ())
    if not isinstance(entries, (list, tuple)):
        raise ConfigError(f"{_PARAMS}: expected a list of {{PARAM, START, END, ...}}, got {entries!r}")
    schedules: List[ParamSchedule] = []
    for index, entry in enumerate(entries):
        prefix = _entry_prefix(index)
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{prefix}: expected a mapping {{PARAM, START, END, ...}}, got {entry!r}")
        unknown = sorted(set(entry) - {"PARAM", "START", "END", *CURVE_KEYS})
        if unknown:
            raise ConfigError(f"{prefix}.{unknown[0]}: unknown key; allowed: PARAM, START, END, "
                              f"{', '.join(CURVE_KEYS)}")
        param = entry.get("PARAM")
        if not isinstance(param, str) or not param:
            raise ConfigError(f"{prefix}.PARAM: expected a param-group key such as weight_decay, got {param!r}")
        if param in NOT_SCHEDULABLE:
            raise ConfigError(f"{prefix}.PARAM: {param!r} cannot be scheduled here"
                              + ("; the lr follows SOLVER.SCHEDULER itself" if "lr" in param else ""))
        if any(s.param == param for s in schedules):
            raise ConfigError(f"{prefix}.PARAM: {param!r} is scheduled twice")
        start, end = _number(entry, "START", prefix), _number(entry, "END", prefix)
        if start == 0.0:
            raise ConfigError(f"{prefix}.START: must not be 0 (each param group keeps its ratio to START)")
        if end * start < 0:  # torch's optimizers refuse a negative weight decay, momentum, eps, ...
            raise ConfigError(f"{prefix}.END: {end:g} has the other sign than START ({start:g}); a scheduled "
                              f"{param} must not cross 0")
        curve = build_schedule(_curve_node(scheduler, entry), iter_per_epoch, prefix)
        if curve.factor(curve.max_iter) == 1.0 and end != start:
            raise ConfigError(f"{prefix}.END: POLICY {curve.policy} does not decay, so END must equal "
                              f"START ({start:g}), got {end:g}")
        schedules.append(ParamSchedule(param, start, end, curve))
    return schedules


def _curve_node(scheduler: CfgNode, entry: Mapping[str, Any]) -> CfgNode:
    """SOLVER.SCHEDULER with the entry's curve keys: COSINE, no warm-up and no floor unless the
    entry sets them; an entry's TOTAL_ITERS or WARM_UP_ITERS replaces the epochs' form."""
    node = scheduler.clone()
    node.defrost()
    node.POLICY, node.WARM_UP_ITERS, node.WARM_UP_EPOCHS = "COSINE", 0, None
    node.MIN_LR, node.MIN_LR_FACTOR, node.PHASES, node.PARAMS = None, 0.0, (), ()
    for key in CURVE_KEYS:
        if key in entry:
            if key == "TOTAL_ITERS":
                node.TOTAL_EPOCHS = None
            if key == "WARM_UP_ITERS":
                node.WARM_UP_EPOCHS = None
            node[key] = tuple(entry[key]) if isinstance(entry[key], list) else entry[key]
    return node


def check_params_in_groups(schedules: List[ParamSchedule], optimizer: torch.optim.Optimizer) -> None:
    """ConfigError naming the key and the optimizer when a scheduled key is not a number in
    every param group (a key the optimizer does not have, or a pair such as betas)."""
    name = type(optimizer).__name__
    for index, schedule in enumerate(schedules):
        for group in optimizer.param_groups:
            value = group.get(schedule.param)
            check_param_key(index, schedule.param, name, [k for k in group if not k.startswith("initial_")])
            if isinstance(value, torch.Tensor) and value.dim() == 0 and value.is_floating_point():
                continue  # a compiled step's value (compiled_step.py)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{_entry_prefix(index)}.PARAM: {name}'s {schedule.param!r} is "
                                  f"{value!r}, not a number: it cannot be scheduled")


def check_param_key(index: int, param: str, optimizer_name: str, keys: List[str]) -> None:
    """ConfigError naming the entry, the key and the optimizer when ``param`` is not one of the
    optimizer's param-group ``keys``."""
    if param not in keys:
        shown = ", ".join(k for k in keys if k not in NOT_SCHEDULABLE)
        raise ConfigError(f"{_entry_prefix(index)}.PARAM: {optimizer_name} has no param-group key "
                          f"{param!r}; its keys: {shown}")


def write_params(schedules: List[ParamSchedule], param_groups: List[Dict[str, Any]],
                 iteration: int) -> None:
    """Every scheduled key of every group at ``iteration``: the schedule's value times the
    group's ratio to START (its ``initial_<key>``, recorded the first time)."""
    for schedule in schedules:
        value = schedule.value(iteration)
        for group in param_groups:
            initial = group.get(schedule.initial_key)
            if initial is None:
                initial = group[schedule.initial_key] = float(group[schedule.param])
            write_value(group, schedule.param, value * (initial / schedule.start))
