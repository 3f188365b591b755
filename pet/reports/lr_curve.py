"""The learning rate of every param group over a whole schedule, as training will see it.

The values come from stepping the training ``LearningRateScheduler`` on the real optimizer, not
from a second implementation of the formulas, so a plot of them cannot disagree with a run.
"""
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

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
    scheduler, _, lrs, _ = record_curves(optimizer, solver, iter_per_epoch)
    return scheduler, lrs


# A schedule longer than this many iterations is drawn from as many, evenly spread, with its
# warm-up end and milestones (each with the iteration before it): stepping a schedule of 440
# million iterations one by one would take hours.
MAX_POINTS = 20_001


def sampled_iterations(scheduler: LearningRateScheduler, max_points: int) -> List[int]:
    """Iterations 0..max_iter to record: all of them, or ``max_points`` evenly spread plus the
    warm-up end and the milestones with the iteration before each (where the curve jumps)."""
    max_iter = scheduler.max_iter
    if max_iter + 1 <= max_points:
        return list(range(max_iter + 1))
    marks = {scheduler.warmup_iters, *scheduler.milestones}
    spread = {round(k * max_iter / (max_points - 1)) for k in range(max_points)}
    jumps = {i for mark in marks for i in (mark - 1, mark)}
    return sorted(i for i in spread | jumps if 0 <= i <= max_iter)


def record_curves(optimizer: torch.optim.Optimizer, solver: CfgNode, iter_per_epoch: int = -1,
                  max_points: Optional[int] = None, iterations: Optional[List[int]] = None
                  ) -> Tuple[LearningRateScheduler, List[int], List[List[float]], Dict[str, List[float]]]:
    """(the scheduler, the iterations recorded, ``lrs[g][k]`` group g's lr at the k-th of them,
    the other scheduled hyper-parameters by name: ``momentum`` when the schedule cycles it, and
    each key of SOLVER.SCHEDULER.PARAMS, its value in a group built with START).

    Every iteration 0..max_iter is recorded, or, past ``max_points``, a sample of them
    (``sampled_iterations``), or the sorted ``iterations`` given (another schedule's sample);
    each set by the scheduler's own ``load_state_dict`` (the way a resumed run jumps to its
    iteration).
    """
    with warnings.catch_warnings():
        # Nothing is trained here, so torch's "scheduler.step() before optimizer.step()" is moot.
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
        scheduler = LearningRateScheduler(optimizer, solver, iter_per_epoch=iter_per_epoch)
        if iterations is None:
            iterations = sampled_iterations(scheduler, max_points or scheduler.max_iter + 1)
        every = len(iterations) == scheduler.max_iter + 1
        lrs: List[List[float]] = [[] for _ in optimizer.param_groups]
        for iteration in iterations:
            if iteration > 0:
                if every:
                    scheduler.step()
                else:
                    scheduler.load_state_dict({"iteration": iteration})
            for curve, group in zip(lrs, optimizer.param_groups):
                curve.append(group["lr"])
    others: Dict[str, List[float]] = {}
    if scheduler.cycles_momentum:
        others["momentum"] = [scheduler.schedule.momentum(i) for i in iterations]
    for schedule in scheduler.param_schedules:
        others[schedule.param] = [schedule.value(i) for i in iterations]
    return scheduler, iterations, lrs, others


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
