"""The torch adapter of ``Schedule``: writes ``factor(i) * initial_lr`` into every param group;
and ``build_schedule``, the config adapter that validates ``SOLVER.SCHEDULER`` once."""
import logging
from typing import Any, Dict, List, Optional

import torch
from torch.optim import lr_scheduler
from yacs.config import CfgNode

from pet.lib.config.validate import validate_scheduler
from pet.lib.utils.lr_schedules import LR_POLICIES, Schedule

logger = logging.getLogger(__name__)

__all__ = ["LR_POLICIES", "LearningRateScheduler", "Schedule", "build_schedule"]


def build_schedule(scheduler: CfgNode, iter_per_epoch: Optional[int] = None) -> Schedule:
    """Validate ``SOLVER.SCHEDULER`` and convert it to a ``Schedule`` in iterations.

    In epoch mode (TOTAL_EPOCHS set) the length and STEPS are epochs times ``iter_per_epoch``;
    WARM_UP_EPOCHS likewise replaces WARM_UP_ITERS. Raises ConfigError on a bad config.
    """
    policy = LR_POLICIES.check(scheduler.POLICY, "SOLVER.SCHEDULER.POLICY")
    entry = LR_POLICIES.get(policy)
    validate_scheduler(scheduler, iter_per_epoch, uses_milestones=entry.uses_milestones,
                       decays_from_last_milestone=entry.decays_from_last_milestone)
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
        policy=policy,
        max_iter=max_iter,
        warmup_iters=warmup_iters,
        warmup_factor=float(scheduler.WARM_UP_FACTOR),
        warmup_method=scheduler.WARM_UP_METHOD.upper(),
        milestones=milestones,
        gamma=float(scheduler.GAMMA),
        lr_pow=float(scheduler.LR_POW),
        min_lr_factor=float(scheduler.MIN_LR_FACTOR),
    )


def lr_change_ratio(old: float, new: float, eps: float = 1e-10) -> float:
    """How many times larger the bigger of two lrs is than the smaller one (>= 1)."""
    return max(new / max(old, eps), old / max(new, eps))


class LearningRateScheduler(lr_scheduler._LRScheduler):
    """One ``step()`` per iteration; the lr of every group is ``factor(i) * initial_lr``.

    Args:
        optimizer: the optimizer whose groups it drives. Each group's ``initial_lr`` (set by
            ``Optimizer.build``; else its current ``lr``) is the lr at the top of the schedule.
        solver: the ``SOLVER`` config (its SCHEDULER section is validated here).
        start_iter: the iteration whose lr is set at construction.
        iter_per_epoch: iterations per epoch, needed by epoch-based configs.
        last_epoch: torch's resume convention (the last iteration done); the iteration after
            construction is ``last_epoch + 1``. Give this or ``start_iter``, not both.

    Raises:
        ConfigError on a bad SCHEDULER config; ValueError when both ``start_iter`` and
        ``last_epoch`` are given.

    The state is the iteration alone: ``load_state_dict`` restores the iteration (and the
    evaluation ``info``) and keeps this run's schedule and base lrs, so a run resumed with a
    longer schedule or moved milestones follows the new config.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        solver: CfgNode,
        start_iter: int = 0,
        iter_per_epoch: int = -1,
        last_epoch: int = -1,
    ) -> None:
        if start_iter != 0 and last_epoch != -1:
            raise ValueError(
                f"give start_iter ({start_iter}) or last_epoch ({last_epoch}), not both"
            )
        self.schedule = build_schedule(solver.SCHEDULER, iter_per_epoch)
        self.max_iter = self.schedule.max_iter
        self.warmup_iters = self.schedule.warmup_iters
        self.milestones = self.schedule.milestones
        self.base_lr = solver.OPTIMIZER.BASE_LR
        self.log_lr_change_threshold = solver.SCHEDULER.LOG_LR_CHANGE_THRESHOLD
        self.info = dict(best_acc=0.0, best_epoch=1, cur_acc=0.0, cur_epoch=1)
        self.lr_factor = None
        for group in optimizer.param_groups:
            # A tensor lr is written in place every step: initial_lr must be a copy (as torch).
            lr = group["lr"]
            group.setdefault("initial_lr", lr.clone() if isinstance(lr, torch.Tensor) else lr)
        start = start_iter if last_epoch == -1 else last_epoch + 1
        # torch's constructor takes one step from last_epoch, landing on `start`.
        super().__init__(optimizer, last_epoch=start - 1)

    @property
    def iteration(self) -> int:
        """The iteration whose lr the groups hold now."""
        return self.last_epoch

    def get_lr(self) -> List[float]:
        lr_factor = self.schedule.factor(self.last_epoch)
        self._log_change(lr_factor)
        self.lr_factor = lr_factor
        return [lr_factor * base_lr for base_lr in self.base_lrs]

    def _get_closed_form_lr(self) -> List[float]:
        return self.get_lr()

    def _log_change(self, lr_factor: float) -> None:
        if self.lr_factor is None or lr_factor == self.lr_factor:
            return
        # A linear ramp changes the lr by large ratios at every early iteration, as configured:
        # logging each would bury the changes worth seeing (milestones, a constant warm-up's end).
        if self.schedule.warmup_method == "LINEAR" and self.last_epoch <= self.warmup_iters:
            return
        if lr_change_ratio(self.lr_factor, lr_factor) > self.log_lr_change_threshold:
            if lr_factor * self.base_lr > 1e-7:
                logger.info(
                    "Changing learning rate %.7f -> %.7f at iteration %d",
                    self.lr_factor * self.base_lr,
                    lr_factor * self.base_lr,
                    self.last_epoch,
                )

    def state_dict(self) -> Dict[str, Any]:
        """The progress only: plain numbers, loadable with ``torch.load(weights_only=True)``."""
        return {"iteration": self.last_epoch, "info": dict(self.info)}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Resume at the saved iteration under this scheduler's (the current config's) schedule."""
        self.info.update(state_dict.get("info", {}))
        self.lr_factor = None
        self.last_epoch = int(state_dict["iteration"]) - 1
        self._update_lr()
