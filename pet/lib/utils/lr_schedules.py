"""Learning-rate schedules as pure closed-form functions of the iteration.

A ``Schedule`` holds only numbers in iterations and answers ``factor(i)``: the multiplier of each
param group's lr at iteration ``i``. Nothing is counted or accumulated, so any iteration can be
evaluated (and resumed) exactly.
"""
import bisect
import math
from dataclasses import dataclass
from typing import Optional, Tuple

from yacs.config import CfgNode

from pet.lib.config.validate import validate_scheduler


def warmup_factor(method: str, iteration: int, warmup_iters: int, start_factor: float) -> float:
    """Warm-up multiplier: CONSTANT gives ``start_factor``, LINEAR ramps from ``start_factor``
    at iteration 0 towards 1 at ``warmup_iters``; 1 from ``warmup_iters`` on."""
    if iteration >= warmup_iters:
        return 1.0
    if method == "CONSTANT":
        return start_factor
    if method == "LINEAR":
        return start_factor + (1.0 - start_factor) * iteration / warmup_iters
    raise ValueError(f"unknown warm-up method {method!r}")


def step_factor(iteration: int, milestones: Tuple[int, ...], gamma: float) -> float:
    """``gamma`` to the power of the number of milestones <= ``iteration``."""
    return gamma ** bisect.bisect_right(milestones, iteration)


def cosine_factor(iteration: int, start: int, end: int, min_factor: float) -> float:
    """Half a cosine from 1 at ``start`` down to ``min_factor`` at ``end``."""
    progress = (iteration - start) / (end - start)
    return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def poly_factor(iteration: int, start: int, end: int, power: float, min_factor: float) -> float:
    """``(1 - progress) ** power`` from 1 at ``start`` down to ``min_factor`` at ``end``."""
    progress = (iteration - start) / (end - start)
    return min_factor + (1.0 - min_factor) * (1.0 - progress) ** power


@dataclass(frozen=True)
class Schedule:
    """A schedule with every length in iterations.

    ``factor(i)`` is the lr multiplier at iteration ``i``; past ``max_iter`` it stays at its
    value for ``max_iter``.
    """

    policy: str
    max_iter: int
    warmup_iters: int
    warmup_factor: float
    warmup_method: str
    milestones: Tuple[int, ...]
    gamma: float
    lr_pow: float
    min_lr_factor: float

    def factor(self, iteration: int) -> float:
        i = min(max(iteration, 0), self.max_iter)
        warmup = warmup_factor(self.warmup_method, i, self.warmup_iters, self.warmup_factor)
        if self.policy == "STEP":
            return warmup * step_factor(i, self.milestones, self.gamma)
        if self.policy == "COSINE":
            if i < self.warmup_iters:
                return warmup
            return cosine_factor(i, self.warmup_iters, self.max_iter, self.min_lr_factor)
        if self.policy == "POLY":
            if i < self.warmup_iters:
                return warmup
            return poly_factor(i, self.warmup_iters, self.max_iter, self.lr_pow, self.min_lr_factor)
        if self.policy == "STEP_COSINE":
            last = self.milestones[-1]
            if i < last:
                return warmup * step_factor(i, self.milestones, self.gamma)
            decayed = self.gamma ** len(self.milestones)
            return decayed * cosine_factor(i, last, self.max_iter, self.min_lr_factor)
        raise ValueError(f"unknown policy {self.policy!r}")


def build_schedule(scheduler: CfgNode, iter_per_epoch: Optional[int] = None) -> Schedule:
    """Validate ``SOLVER.SCHEDULER`` and convert it to a ``Schedule`` in iterations.

    In epoch mode (TOTAL_EPOCHS set) the length and STEPS are epochs times ``iter_per_epoch``;
    WARM_UP_EPOCHS likewise replaces WARM_UP_ITERS. Raises ConfigError on a bad config.
    """
    validate_scheduler(scheduler, iter_per_epoch)
    if scheduler.TOTAL_EPOCHS is None:
        max_iter = scheduler.TOTAL_ITERS
        milestones = tuple(int(round(step)) for step in scheduler.STEPS)
    else:
        max_iter = int(round(scheduler.TOTAL_EPOCHS * iter_per_epoch))
        milestones = tuple(int(round(step * iter_per_epoch)) for step in scheduler.STEPS)
    if scheduler.WARM_UP_EPOCHS is None:
        warmup_iters = scheduler.WARM_UP_ITERS
    else:
        warmup_iters = int(round(scheduler.WARM_UP_EPOCHS * iter_per_epoch))
    return Schedule(
        policy=scheduler.POLICY.upper(),
        max_iter=max_iter,
        warmup_iters=warmup_iters,
        warmup_factor=float(scheduler.WARM_UP_FACTOR),
        warmup_method=scheduler.WARM_UP_METHOD.upper(),
        milestones=milestones,
        gamma=float(scheduler.GAMMA),
        lr_pow=float(scheduler.LR_POW),
        min_lr_factor=float(scheduler.MIN_LR_FACTOR),
    )
