"""Policies that mirror torch's schedulers, as pure closed forms of the iteration.

Each equals its torch scheduler step for step when configured alike (tested side by side):
EXPONENTIAL (``ExponentialLR``), LINEAR (``LinearLR`` as a decay), COSINE_RESTARTS
(``CosineAnnealingWarmRestarts``), ONE_CYCLE (``OneCycleLR``, BASE_LR as ``max_lr``) and CYCLIC
(``CyclicLR``, BASE_LR as ``max_lr``). torch keeps counters and writes lrs recursively; here the
factor at iteration ``i`` is computed from ``i`` alone, so resuming anywhere is exact.

A configured warm-up runs first; the policy then runs over the rest of the schedule, as if torch's
scheduler had been started at the warm-up's end (``SequentialLR([LinearLR, X], [W])``).
"""
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple, Optional, Tuple

from pet.lib.utils.lr_schedules import LR_POLICIES, LRPolicy, Schedule, half_cosine

ToIters = Callable[[float], int]


def after_warmup(s: Schedule, i: int) -> Tuple[int, int]:
    """(iterations since the warm-up's end, iterations the policy runs): the policy's clock."""
    return i - s.warmup_iters, s.max_iter - s.warmup_iters


# --- EXPONENTIAL -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Exponential:
    gamma: float
    period: int  # iterations per multiplication by gamma: 1, or the iterations per epoch


def exponential_policy(s: Schedule, i: int) -> float:
    """The warm-up, then GAMMA ** (completed periods), like ``ExponentialLR`` stepped once per
    iteration (or once per epoch in epoch mode)."""
    if i < s.warmup_iters:
        return s.warmup(i)
    t, _ = after_warmup(s, i)
    return s.options.gamma ** (t // s.options.period)


def exponential_options(keys: Mapping[str, Any], to_iters: ToIters) -> Exponential:
    return Exponential(gamma=float(keys["GAMMA"]), period=to_iters(1))


# --- LINEAR ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Linear:
    start_factor: float
    end_factor: float


def linear_policy(s: Schedule, i: int) -> float:
    """The warm-up, then a straight line from START_FACTOR to END_FACTOR over the rest."""
    if i < s.warmup_iters:
        return s.warmup(i)
    t, n = after_warmup(s, i)
    o = s.options
    return o.start_factor + (o.end_factor - o.start_factor) * min(t, n) / n


def linear_options(keys: Mapping[str, Any], to_iters: ToIters) -> Linear:
    return Linear(float(keys["START_FACTOR"]), float(keys["END_FACTOR"]))


# --- COSINE_RESTARTS -------------------------------------------------------------------------
@dataclass(frozen=True)
class CosineRestarts:
    t_0: int  # iterations of the first cycle
    t_mult: int  # each cycle is this many times longer than the previous one


def cycle_position(t: int, t_0: int, t_mult: int) -> Tuple[int, int]:
    """(iterations into the current cycle, the cycle's length) at ``t`` iterations."""
    if t_mult == 1:
        return t % t_0, t_0
    # Cycles grow geometrically, so this loop runs O(log t) times.
    start, length = 0, t_0
    while t >= start + length:
        start, length = start + length, length * t_mult
    return t - start, length


def cosine_restarts_policy(s: Schedule, i: int) -> float:
    """The warm-up, then cosine cycles from 1 down towards the floor, restarting at 1."""
    if i < s.warmup_iters:
        return s.warmup(i)
    t, _ = after_warmup(s, i)
    position, length = cycle_position(t, s.options.t_0, s.options.t_mult)
    m = s.min_lr_factor
    return m + (1.0 - m) * half_cosine(position / length)


def cosine_restarts_events(s: Schedule) -> Tuple[int, ...]:
    """The restarts (the lr jumps back to the top)."""
    starts, start, length = [], 0, s.options.t_0
    while s.warmup_iters + start + length < s.max_iter:
        start, length = start + length, length * s.options.t_mult
        starts.append(s.warmup_iters + start)
    return tuple(starts)


def cosine_restarts_options(keys: Mapping[str, Any], to_iters: ToIters) -> CosineRestarts:
    return CosineRestarts(t_0=to_iters(keys["T_0"]), t_mult=int(keys["T_MULT"]))


# --- momentum cycling, shared by ONE_CYCLE and CYCLIC -----------------------------------------
@dataclass(frozen=True)
class MomentumCycle:
    cycle_momentum: bool
    base_momentum: float  # the momentum while the lr is at its top
    max_momentum: float  # the momentum while the lr is at its bottom


def momentum_cycle(keys: Mapping[str, Any]) -> MomentumCycle:
    return MomentumCycle(bool(keys["CYCLE_MOMENTUM"]), float(keys["BASE_MOMENTUM"]),
                         float(keys["MAX_MOMENTUM"]))


# --- ONE_CYCLE -------------------------------------------------------------------------------
@dataclass(frozen=True)
class OneCycle:
    pct_start: float
    div_factor: float
    final_div_factor: float
    anneal_strategy: str  # "cos" or "linear"
    three_phase: bool
    momentum: MomentumCycle


def one_cycle_phases(o: OneCycle, total_steps: int) -> Tuple[Tuple[float, float, float, str, str], ...]:
    """torch's phases: (end step, lr factor at the start, at the end, momentum at the start,
    at the end); lr factors relative to ``max_lr`` (BASE_LR), momenta "max" or "base"."""
    initial = 1.0 / o.div_factor
    floor = initial / o.final_div_factor
    up_end = float(o.pct_start * total_steps) - 1
    if o.three_phase:
        return ((up_end, initial, 1.0, "max", "base"),
                (float(2 * o.pct_start * total_steps) - 2, 1.0, initial, "base", "max"),
                (total_steps - 1, initial, floor, "max", "max"))
    return ((up_end, initial, 1.0, "max", "base"), (total_steps - 1, 1.0, floor, "base", "max"))


class OneCyclePhase(NamedTuple):
    """One of torch's phases over steps [start, end]: lr factors and momenta at both ends."""

    start: float
    end: float
    lr_start: float
    lr_end: float
    momentum_start: float
    momentum_end: float


def one_cycle_plan(s: Schedule) -> Tuple[OneCyclePhase, ...]:
    """ONE_CYCLE's phases over this schedule's steps, with momenta as values (its
    ``LRPolicy.precompute``: built once per schedule, not every step)."""
    o = s.options
    value = {"max": o.momentum.max_momentum, "base": o.momentum.base_momentum}
    plan, start = [], 0.0
    for end, lr_start, lr_end, momentum_start, momentum_end in one_cycle_phases(
            o, s.max_iter - s.warmup_iters):
        plan.append(OneCyclePhase(start, end, lr_start, lr_end, value[momentum_start], value[momentum_end]))
        start = end
    return tuple(plan)


def one_cycle_progress(plan: Tuple[OneCyclePhase, ...], t: int) -> Tuple[float, OneCyclePhase]:
    """(progress through the phase holding step ``t``, that phase), found as torch finds it:
    the first phase ending at or after ``t``, else the last."""
    for phase in plan:
        if t <= phase.end:
            break
    return (t - phase.start) / (phase.end - phase.start), phase


def anneal(strategy: str, start: float, end: float, progress: float) -> float:
    """torch OneCycleLR's annealing from ``start`` to ``end``."""
    if strategy == "cos":
        return end + (start - end) * half_cosine(progress)
    return start + (end - start) * progress


def one_cycle_policy(s: Schedule, i: int) -> float:
    """The warm-up, then torch's one cycle over the rest (its ``total_steps``); the last step,
    total_steps - 1, holds to the end (torch refuses to step past it)."""
    if i < s.warmup_iters:
        return s.warmup(i)
    t, n = after_warmup(s, i)
    progress, phase = one_cycle_progress(s.precomputed, min(t, n - 1))
    return anneal(s.options.anneal_strategy, phase.lr_start, phase.lr_end, progress)


def one_cycle_momentum(s: Schedule, i: int) -> Optional[float]:
    """Momentum moving against the lr between MAX_MOMENTUM and BASE_MOMENTUM (torch's); during
    the warm-up, the cycle's first value."""
    cycle = s.options.momentum
    if not cycle.cycle_momentum:
        return None
    t, n = after_warmup(s, max(i, s.warmup_iters))
    progress, phase = one_cycle_progress(s.precomputed, min(t, n - 1))
    return anneal(s.options.anneal_strategy, phase.momentum_start, phase.momentum_end, progress)


def one_cycle_options(keys: Mapping[str, Any], to_iters: ToIters) -> OneCycle:
    return OneCycle(float(keys["PCT_START"]), float(keys["DIV_FACTOR"]),
                    float(keys["FINAL_DIV_FACTOR"]), keys["ANNEAL_STRATEGY"].lower(),
                    bool(keys["THREE_PHASE"]), momentum_cycle(keys))


# --- CYCLIC ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cyclic:
    base_lr_factor: float  # the bottom of the cycle, relative to BASE_LR (the top)
    step_size_up: int
    step_size_down: int
    mode: str  # "triangular", "triangular2" or "exp_range"
    gamma: float
    momentum: MomentumCycle


def cyclic_position(o: Cyclic, t: int) -> Tuple[float, float]:
    """(height in [0, 1] within the cycle, the amplitude's scale by MODE), as torch's
    ``CyclicLR.get_lr`` computes them."""
    total = float(o.step_size_up + o.step_size_down)
    ratio = o.step_size_up / total
    cycle = math.floor(1 + t / total)
    x = 1.0 + t / total - cycle
    height = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
    if o.mode == "triangular":
        scale = 1.0
    elif o.mode == "triangular2":
        scale = 1 / (2.0 ** (cycle - 1))
    else:  # exp_range scales by the iteration, not the cycle
        scale = o.gamma ** t
    return height, scale


def cyclic_policy(s: Schedule, i: int) -> float:
    """The warm-up, then triangles between BASE_LR_FACTOR and 1 (torch's ``CyclicLR``)."""
    if i < s.warmup_iters:
        return s.warmup(i)
    height, scale = cyclic_position(s.options, after_warmup(s, i)[0])
    bottom = s.options.base_lr_factor
    return bottom + (1.0 - bottom) * height * scale


def cyclic_momentum(s: Schedule, i: int) -> Optional[float]:
    """Momentum moving against the lr, from MAX_MOMENTUM down to BASE_MOMENTUM (torch's)."""
    cycle = s.options.momentum
    if not cycle.cycle_momentum:
        return None
    height, scale = cyclic_position(s.options, after_warmup(s, max(i, s.warmup_iters))[0])
    return cycle.max_momentum - (cycle.max_momentum - cycle.base_momentum) * height * scale


def cyclic_options(keys: Mapping[str, Any], to_iters: ToIters) -> Cyclic:
    up = to_iters(keys["STEP_SIZE_UP"])
    down = up if keys["STEP_SIZE_DOWN"] is None else to_iters(keys["STEP_SIZE_DOWN"])
    return Cyclic(float(keys["BASE_LR_FACTOR"]), up, down, keys["MODE"].lower(),
                  float(keys["GAMMA"]), momentum_cycle(keys))


LR_POLICIES.register(LRPolicy(exponential_policy, options=exponential_options), name="EXPONENTIAL")
LR_POLICIES.register(LRPolicy(linear_policy, options=linear_options), name="LINEAR")
LR_POLICIES.register(LRPolicy(cosine_restarts_policy, uses_floor=True, events=cosine_restarts_events,
                              options=cosine_restarts_options), name="COSINE_RESTARTS")
LR_POLICIES.register(LRPolicy(one_cycle_policy, momentum=one_cycle_momentum,
                              options=one_cycle_options, precompute=one_cycle_plan), name="ONE_CYCLE")
LR_POLICIES.register(LRPolicy(cyclic_policy, momentum=cyclic_momentum, options=cyclic_options),
                     name="CYCLIC")
