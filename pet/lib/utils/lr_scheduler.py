"""The torch adapter of ``Schedule``: writes ``factor(i) * initial_lr`` into every param group;
and ``build_schedule``, the config adapter that validates ``SOLVER.SCHEDULER`` once."""
import dataclasses
import logging
from typing import Any, Callable, Dict, List, Mapping, Optional

import torch
from torch.optim import lr_scheduler
from yacs.config import CfgNode

from pet.lib.config.errors import ConfigError
from pet.lib.config.validate import validate_scheduler
from pet.lib.config.validate_schedule import (
    phase_lengths,
    validate_phase_keys,
    validate_phases_list,
    validate_policy_keys,
)
# Imported for their registrations too, torch's policies first (the order the names are listed in).
from pet.lib.utils import lr_policies_torch  # noqa: F401  isort: skip
from pet.lib.utils import lr_phases  # noqa: E402  isort: skip
from pet.lib.utils.compiled_step import write_beta1, write_value
from pet.lib.utils.lr_schedules import LR_POLICIES, Schedule
from pet.lib.utils.param_schedules import (
    ParamSchedule,
    build_param_schedules,
    check_params_in_groups,
    write_params,
)

logger = logging.getLogger(__name__)

__all__ = ["LR_POLICIES", "LearningRateScheduler", "Schedule", "build_param_curves", "build_schedule"]

_SCHED = "SOLVER.SCHEDULER"
ToIters = Callable[[float], int]


def build_schedule(scheduler: CfgNode, iter_per_epoch: Optional[int] = None) -> Schedule:
    """Validate ``SOLVER.SCHEDULER`` and convert it to a ``Schedule`` in iterations.

    In epoch mode (TOTAL_EPOCHS set) every length (TOTAL_EPOCHS, STEPS, a policy's lengths,
    the phases' LENGTHs) is epochs times ``iter_per_epoch``; WARM_UP_EPOCHS likewise replaces
    WARM_UP_ITERS. Raises ConfigError on a bad config.
    """
    policy = LR_POLICIES.check(scheduler.POLICY, f"{_SCHED}.POLICY")
    entry = LR_POLICIES.get(policy)
    validate_scheduler(scheduler, iter_per_epoch, uses_milestones=entry.uses_milestones,
                       decays_from_last_milestone=entry.decays_from_last_milestone)
    validate_phases_list(scheduler, policy)
    epoch_mode = scheduler.TOTAL_EPOCHS is not None

    def to_iters(length: float) -> int:
        return int(round(length * iter_per_epoch)) if epoch_mode else int(round(length))

    max_iter = to_iters(scheduler.TOTAL_EPOCHS) if epoch_mode else scheduler.TOTAL_ITERS
    if scheduler.WARM_UP_EPOCHS is None:
        warmup_iters = scheduler.WARM_UP_ITERS
    else:
        warmup_iters = int(round(scheduler.WARM_UP_EPOCHS * iter_per_epoch))
        if 0 < warmup_iters >= max_iter:  # shorter in epochs, as long once rounded to iterations
            raise ConfigError(
                f"{_SCHED}.WARM_UP_EPOCHS={scheduler.WARM_UP_EPOCHS}: the warm-up must be shorter than "
                f"the schedule; rounded to iterations both are {max_iter} iterations")
    schedule = Schedule(
        policy=policy,
        max_iter=max_iter,
        warmup_iters=warmup_iters,
        warmup_factor=float(scheduler.WARM_UP_FACTOR),
        warmup_method=scheduler.WARM_UP_METHOD.upper(),
        # Only a policy that reads STEPS has milestones (nothing to draw or list otherwise).
        milestones=tuple(to_iters(step) for step in scheduler.STEPS) if entry.uses_milestones else (),
        gamma=float(scheduler.GAMMA),
        lr_pow=float(scheduler.LR_POW),
        min_lr_factor=float(scheduler.MIN_LR_FACTOR),
    )
    run_iters = max_iter - warmup_iters
    if policy == "PHASES":
        options = build_phases(scheduler, warmup_iters, run_iters, to_iters, epoch_mode)
    elif isinstance(scheduler.get(policy), CfgNode):
        options = policy_options(policy, scheduler[policy], f"{_SCHED}.{policy}", run_iters,
                                 to_iters, epoch_mode)
    else:  # STEP, COSINE, ...: their keys are SOLVER.SCHEDULER's, checked by validate_scheduler
        options = None
    return dataclasses.replace(schedule, options=options)


def build_param_curves(scheduler: CfgNode, iter_per_epoch: Optional[int] = None) -> List[ParamSchedule]:
    """The schedules of SOLVER.SCHEDULER.PARAMS (see pet.lib.utils.param_schedules), each curve
    built and validated as the lr's, its errors naming the entry's keys."""
    def build_curve(node: CfgNode, iters: Optional[int], prefix: str) -> Schedule:
        try:
            return build_schedule(node, iters)
        except ConfigError as e:
            raise ConfigError(str(e).replace(f"{_SCHED}.", f"{prefix}.", 1)) from None
    return build_param_schedules(scheduler, iter_per_epoch, build_curve)


def policy_options(policy: str, keys: Mapping[str, Any], prefix: str, run_iters: int,
                   to_iters: ToIters, epoch_mode: bool) -> Any:
    """Check ``policy``'s own keys (named ``prefix``.KEY) and return its options (None for a
    policy without a sub-node)."""
    validate_policy_keys(policy, keys, prefix, run_iters, to_iters, epoch_mode)
    make_options = LR_POLICIES.get(policy).options
    return make_options(keys, to_iters) if make_options else None


def build_phases(scheduler: CfgNode, warmup_iters: int, run_iters: int, to_iters: ToIters,
                 epoch_mode: bool) -> lr_phases.Phases:
    """One ``Schedule`` per phase of SOLVER.SCHEDULER.PHASES, back to back after the warm-up.

    A phase's keys fall back on SOLVER.SCHEDULER's: its policy's sub-node, or STEPS, GAMMA and
    LR_POW for STEP, STEP_COSINE and POLY.
    """
    schedules, scales = [], []
    policies = [LR_POLICIES.check(phase["POLICY"], f"{_SCHED}.PHASES[{k}].POLICY")
                for k, phase in enumerate(scheduler.PHASES)]
    for k, (phase, policy) in enumerate(zip(scheduler.PHASES, policies)):
        prefix = f"{_SCHED}.PHASES[{k}]"
        if policy == "PHASES":
            raise ConfigError(f"{prefix}.POLICY: PHASES cannot be nested")
        validate_phase_keys(scheduler, k, phase, policy, last=k == len(policies) - 1)
    lengths = phase_lengths(scheduler, run_iters, to_iters, epoch_mode)
    for k, (phase, policy, length) in enumerate(zip(scheduler.PHASES, policies, lengths)):
        prefix = f"{_SCHED}.PHASES[{k}]"
        shared = {"STEPS": scheduler.STEPS, "GAMMA": scheduler.GAMMA, "LR_POW": scheduler.LR_POW}
        own = {key: value for key, value in phase.items() if key not in ("POLICY", "LENGTH", "SCALE")}
        if isinstance(scheduler.get(policy), CfgNode):
            keys = {**scheduler[policy], **own}
        else:
            keys = shared = {**shared, **own}
        entry = LR_POLICIES.get(policy)
        milestones = tuple(to_iters(step) for step in shared["STEPS"]) if entry.uses_milestones else ()
        if entry.decays_from_last_milestone and not milestones:
            raise ConfigError(f"{prefix}.STEPS: {policy} needs at least one milestone, got ()")
        schedules.append(Schedule(
            policy=policy, max_iter=length, milestones=milestones, gamma=float(shared["GAMMA"]),
            lr_pow=float(shared["LR_POW"]), min_lr_factor=float(scheduler.MIN_LR_FACTOR),
            options=policy_options(policy, keys, prefix, length, to_iters, epoch_mode),
        ))
        scales.append(None if phase.get("SCALE") is None else float(phase["SCALE"]))
    return lr_phases.make_phases(warmup_iters, schedules, scales)


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
        name: the optimizer's name among several (SOLVER.OPTIMIZERS), said in the log lines.

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
        name: str = "",
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
        self.name = name  # SOLVER.OPTIMIZERS' name of its optimizer, in the log lines
        self.info = dict(best_acc=0.0, best_epoch=1, cur_acc=0.0, cur_epoch=1)
        self.lr_factor = None
        # Only jumps are logged (a smooth decay changes the lr by large ratios near its end).
        self.log_events = self.schedule.events()
        self.cycles_momentum = self.schedule.momentum(0) is not None
        if self.cycles_momentum and not all("momentum" in g or "betas" in g for g in optimizer.param_groups):
            # As torch's OneCycleLR/CyclicLR: a momentum the optimizer does not read is no schedule.
            raise ConfigError(
                f"{_SCHED}.{self.schedule.policy}.CYCLE_MOMENTUM: True needs an optimizer with a "
                f"momentum or betas, {type(optimizer).__name__} has neither; set it False")
        for group in optimizer.param_groups:
            # A tensor lr is written in place every step: initial_lr must be a copy (as torch).
            lr = group["lr"]
            group.setdefault("initial_lr", lr.clone() if isinstance(lr, torch.Tensor) else lr)
        self.group_schedules = self._floor_per_group(optimizer, solver.SCHEDULER.MIN_LR)
        # Hyper-parameters scheduled beside the lr (SOLVER.SCHEDULER.PARAMS).
        self.param_schedules = build_param_curves(solver.SCHEDULER, iter_per_epoch)
        check_params_in_groups(self.param_schedules, optimizer)
        start = start_iter if last_epoch == -1 else last_epoch + 1
        # torch's constructor takes one step from last_epoch, landing on `start`.
        super().__init__(optimizer, last_epoch=start - 1)

    @property
    def iteration(self) -> int:
        """The iteration whose lr the groups hold now."""
        return self.last_epoch

    def _floor_per_group(self, optimizer: torch.optim.Optimizer,
                         min_lr: Optional[float]) -> Optional[List[Schedule]]:
        """An absolute floor MIN_LR is the relative floor MIN_LR / initial_lr of each group:
        one schedule per group (None without MIN_LR: all groups share ``self.schedule``)."""
        if min_lr is None:
            return None
        schedules = {}  # by initial lr: groups that share it share a schedule
        for group in optimizer.param_groups:
            initial = float(group["initial_lr"])
            if initial not in schedules:
                floor = min_lr / initial if initial > 0 else 0.0  # a group at lr 0 stays at 0
                schedules[initial] = self.schedule.with_floor(floor)
        return [schedules[float(group["initial_lr"])] for group in optimizer.param_groups]

    def get_lr(self) -> List[float]:
        if self.group_schedules is None:
            lr_factor = self.schedule.factor(self.last_epoch)
            lrs = [lr_factor * base_lr for base_lr in self.base_lrs]
        else:
            factors = [s.factor(self.last_epoch) for s in self.group_schedules]
            lr_factor = factors[0]
            lrs = [factor * base_lr for factor, base_lr in zip(factors, self.base_lrs)]
        self._log_change(lr_factor)
        self.lr_factor = lr_factor
        return lrs

    def _update_lr(self, epoch: Optional[int] = None) -> None:
        # torch's step and this class's load_state_dict both land here: the momentum follows.
        super()._update_lr(epoch)
        if self.cycles_momentum:
            self._write_momentum(self.schedule.momentum(self.last_epoch))
        if self.param_schedules:
            write_params(self.param_schedules, self.optimizer.param_groups, self.last_epoch)

    def _write_momentum(self, momentum: float) -> None:
        """SGD/RMSprop's ``momentum`` or Adam's ``betas[0]``, in every group (as torch's
        OneCycleLR and CyclicLR)."""
        for group in self.optimizer.param_groups:
            if "betas" in group:
                write_beta1(group, momentum)
            else:
                write_value(group, "momentum", momentum)

    @property
    def momentum(self) -> Optional[float]:
        """The momentum the schedule sets now, or None when it does not cycle it."""
        return self.schedule.momentum(self.last_epoch) if self.cycles_momentum else None

    def _get_closed_form_lr(self) -> List[float]:
        return self.get_lr()

    def _log_change(self, lr_factor: float) -> None:
        if self.lr_factor is None or lr_factor == self.lr_factor:
            return
        # A ramp or a decay changes the lr by large ratios at many iterations, as configured:
        # logging each would bury the changes worth seeing (milestones, phase boundaries,
        # restarts, the warm-up's end), which the schedule lists as its events.
        if self.last_epoch not in self.log_events:
            return
        if lr_change_ratio(self.lr_factor, lr_factor) > self.log_lr_change_threshold:
            if lr_factor * self.base_lr > 1e-7:
                logger.info(
                    "Changing learning rate%s %.7f -> %.7f at iteration %d",
                    f" of {self.name}" if self.name else "",
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
