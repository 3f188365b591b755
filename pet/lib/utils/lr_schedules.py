"""Learning-rate schedules as pure closed-form functions of the iteration.

A ``Schedule`` holds only numbers in iterations and answers ``factor(i)``: the multiplier of each
param group's lr at iteration ``i``. Nothing is counted or accumulated, so any iteration can be
evaluated (and resumed) exactly. The policies are the ``LR_POLICIES`` registry: a name and a
pure function ``(schedule, i) -> factor``. No config is read here (``lr_scheduler.build_schedule``
is the config adapter).
"""
import bisect
import dataclasses
import math
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, FrozenSet, Iterable, Optional, Tuple

from pet.lib.utils.registry import Registry


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


def half_cosine(progress: float) -> float:
    """1 at progress 0 down to 0 at progress 1."""
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def cosine_factor(iteration: int, start: int, end: int, min_factor: float) -> float:
    """Half a cosine from 1 at ``start`` down to ``min_factor`` at ``end``."""
    return min_factor + (1.0 - min_factor) * half_cosine((iteration - start) / (end - start))


def poly_factor(iteration: int, start: int, end: int, power: float, min_factor: float) -> float:
    """``(1 - progress) ** power`` from 1 at ``start`` down to ``min_factor`` at ``end``."""
    progress = (iteration - start) / (end - start)
    return min_factor + (1.0 - min_factor) * (1.0 - progress) ** power


@dataclass(frozen=True)
class LRPolicy:
    """A registry entry: the pure function ``factor(schedule, i)`` (``i`` already clamped to
    [0, max_iter]) and what the policy declares about itself.

    - ``uses_milestones``: it reads STEPS, each must lie inside the schedule;
      ``decays_from_last_milestone``: at least one is needed, the last not inside the warm-up.
    - ``uses_floor``: it decays to MIN_LR_FACTOR / MIN_LR (else those keys are ignored).
    - ``momentum(schedule, i)``: the momentum (SGD/RMSprop ``momentum``, Adam ``betas[0]``) at
      ``i``, or None when the policy does not cycle it (as configured).
    - ``events(schedule)``: iterations where the lr jumps (milestones, restarts), the only
      changes worth a log line besides the warm-up's end.
    - ``options``: ``(mapping of the policy's config keys, to_iters) -> options``, the policy's
      own parameters with lengths in iterations (``to_iters`` converts the schedule's unit);
      None for a policy without a sub-node of its own.
    - ``precompute(schedule)``: constants the policy derives from the schedule alone (e.g.
      ONE_CYCLE's phases), computed once and read as ``schedule.precomputed``, so a step costs
      only the arithmetic of its iteration.
    """

    factor: Callable[["Schedule", int], float]
    uses_milestones: bool = False
    decays_from_last_milestone: bool = False
    uses_floor: bool = False
    momentum: Optional[Callable[["Schedule", int], Optional[float]]] = None
    events: Optional[Callable[["Schedule"], Iterable[int]]] = None
    options: Optional[Callable[[Any, Callable[[float], int]], Any]] = None
    precompute: Optional[Callable[["Schedule"], Any]] = None


# ``@LR_POLICIES.register()`` on a function ``(schedule, i) -> factor`` registers it under its name.
LR_POLICIES = Registry("lr policy",
                       make_entry=lambda obj: obj if isinstance(obj, LRPolicy) else LRPolicy(obj))


@dataclass(frozen=True)
class Schedule:
    """A schedule with every length in iterations; ``policy`` is an LR_POLICIES name.

    ``factor(i)`` is the lr multiplier at iteration ``i``; past ``max_iter`` it stays at its
    value for ``max_iter``.
    """

    policy: str
    max_iter: int
    warmup_iters: int = 0
    warmup_factor: float = 1.0
    warmup_method: str = "LINEAR"
    milestones: Tuple[int, ...] = ()
    gamma: float = 0.1
    lr_pow: float = 0.9
    min_lr_factor: float = 0.0
    options: Any = None  # the policy's own parameters (LRPolicy.options), lengths in iterations

    # Looked up once per schedule: the scheduler calls factor() (and momentum()) every step.
    @cached_property
    def entry(self) -> LRPolicy:
        """The policy's LR_POLICIES entry; KeyError listing the names when it is unknown."""
        return LR_POLICIES.get(self.policy)

    @cached_property
    def precomputed(self) -> Any:
        """The policy's constants for this schedule (``LRPolicy.precompute``), computed on first
        use; None for a policy without any. The schedule is frozen, so they never go stale."""
        return self.entry.precompute(self) if self.entry.precompute else None

    def factor(self, iteration: int) -> float:
        """The lr multiplier at ``iteration`` (clamped to [0, max_iter])."""
        return self.entry.factor(self, min(max(iteration, 0), self.max_iter))

    def momentum(self, iteration: int) -> Optional[float]:
        """The momentum at ``iteration`` when the policy cycles it, else None."""
        cycle = self.entry.momentum
        if cycle is None:
            return None
        return cycle(self, min(max(iteration, 0), self.max_iter))

    def events(self) -> FrozenSet[int]:
        """Iterations where the lr may jump: the warm-up's end and the policy's own events."""
        declared = self.entry.events
        found = set(declared(self)) if declared else set()
        if self.warmup_iters > 0:
            found.add(self.warmup_iters)
        return frozenset(i for i in found if 0 < i <= self.max_iter)

    def with_floor(self, min_lr_factor: float) -> "Schedule":
        """This schedule with another relative floor (an absolute MIN_LR is a floor per group);
        options holding sub-schedules (PHASES) are rebuilt with it too."""
        options = self.options
        if hasattr(options, "with_floor"):
            options = options.with_floor(min_lr_factor)
        return dataclasses.replace(self, min_lr_factor=min_lr_factor, options=options)

    def warmup(self, i: int) -> float:
        """The warm-up multiplier at ``i`` (1 from ``warmup_iters`` on)."""
        return warmup_factor(self.warmup_method, i, self.warmup_iters, self.warmup_factor)


def step_policy(s: Schedule, i: int) -> float:
    """The warm-up times GAMMA at each milestone passed."""
    return s.warmup(i) * step_factor(i, s.milestones, s.gamma)


def cosine_policy(s: Schedule, i: int) -> float:
    """The warm-up, then half a cosine from 1 down to the floor at the end."""
    if i < s.warmup_iters:
        return s.warmup(i)
    return cosine_factor(i, s.warmup_iters, s.max_iter, s.min_lr_factor)


def poly_policy(s: Schedule, i: int) -> float:
    """The warm-up, then ``(1 - progress) ** lr_pow`` down to the floor at the end."""
    if i < s.warmup_iters:
        return s.warmup(i)
    return poly_factor(i, s.warmup_iters, s.max_iter, s.lr_pow, s.min_lr_factor)


def step_cosine_policy(s: Schedule, i: int) -> float:
    """STEP until the last milestone, then GAMMA**len(milestones) times a cosine to the end."""
    last = s.milestones[-1]
    if i < last:
        return step_policy(s, i)
    return s.gamma ** len(s.milestones) * cosine_factor(i, last, s.max_iter, s.min_lr_factor)


def milestone_events(s: Schedule) -> Tuple[int, ...]:
    """STEP's jumps: its milestones."""
    return s.milestones


LR_POLICIES.register(LRPolicy(step_policy, uses_milestones=True, events=milestone_events),
                     name="STEP")
LR_POLICIES.register(LRPolicy(cosine_policy, uses_floor=True), name="COSINE")
LR_POLICIES.register(LRPolicy(step_cosine_policy, uses_milestones=True, uses_floor=True,
                              decays_from_last_milestone=True, events=milestone_events),
                     name="STEP_COSINE")
LR_POLICIES.register(LRPolicy(poly_policy, uses_floor=True), name="POLY")
