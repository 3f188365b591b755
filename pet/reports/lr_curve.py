"""The learning rate of every param group over a whole schedule, as training will see it.

The values come from stepping the training ``LearningRateScheduler`` on the real optimizer, not
from a second implementation of the formulas, so a plot of them cannot disagree with a run.
"""
import warnings
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import torch
from yacs.config import CfgNode

from pet.lib.utils.lr_scheduler import LearningRateScheduler


@dataclass(frozen=True)
class LrCurve:
    """The lr at iterations 0..max_iter shared by one or more param groups."""

    label: str  # the rule labels of its groups joined by "/", e.g. "default/norm"
    groups: Tuple[int, ...]  # indices into optimizer.param_groups
    lrs: Tuple[float, ...]


def record_lrs(optimizer: torch.optim.Optimizer, solver: CfgNode,
               iter_per_epoch: int = -1) -> Tuple[LearningRateScheduler, List[List[float]]]:
    """Step a fresh ``LearningRateScheduler`` over ``optimizer`` from iteration 0 to max_iter.

    Returns (the scheduler, ``lrs``) where ``lrs[g][i]`` is group g's lr at iteration i; the last
    entry is the lr at max_iter, where the schedule ends. The groups' lrs are left at max_iter.
    Raises ConfigError on a bad SCHEDULER config.
    """
    scheduler, lrs, _ = record_curves(optimizer, solver, iter_per_epoch)
    return scheduler, lrs


def record_curves(optimizer: torch.optim.Optimizer, solver: CfgNode, iter_per_epoch: int = -1
                  ) -> Tuple[LearningRateScheduler, List[List[float]], Dict[str, List[float]]]:
    """``record_lrs`` and the other scheduled hyper-parameters at every iteration, by name:
    ``momentum`` when the schedule cycles it (one value for every group), and each key of
    SOLVER.SCHEDULER.PARAMS (its value in a group built with START); empty when none."""
    with warnings.catch_warnings():
        # Nothing is trained here, so torch's "scheduler.step() before optimizer.step()" is moot.
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
        scheduler = LearningRateScheduler(optimizer, solver, iter_per_epoch=iter_per_epoch)
        lrs = [[group["lr"]] for group in optimizer.param_groups]
        for _ in range(scheduler.max_iter):
            scheduler.step()
            for curve, group in zip(lrs, optimizer.param_groups):
                curve.append(group["lr"])
    iterations = range(scheduler.max_iter + 1)
    others: Dict[str, List[float]] = {}
    if scheduler.cycles_momentum:
        others["momentum"] = [scheduler.schedule.momentum(i) for i in iterations]
    for schedule in scheduler.param_schedules:
        others[schedule.param] = [schedule.value(i) for i in iterations]
    return scheduler, lrs, others


def distinct_curves(lrs: Sequence[Sequence[float]], rules: Sequence[Tuple[str, ...]]) -> List[LrCurve]:
    """Merge groups whose lr curves are identical (e.g. same lr, different weight decay), in
    order of first appearance; ``rules[g]`` are the rule labels of group g."""
    merged = {}
    for index, (curve, group_rules) in enumerate(zip(lrs, rules)):
        key = tuple(curve)
        groups, labels = merged.setdefault(key, ([], []))
        groups.append(index)
        labels.extend(rule for rule in group_rules if rule not in labels)
    return [LrCurve("/".join(labels), tuple(groups), key) for key, (groups, labels) in merged.items()]
