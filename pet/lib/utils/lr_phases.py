"""Warmup-stable-decay (WSD) and composed phases (PHASES), as pure closed forms of the iteration.

WSD's decay is anchored to the schedule's end, so a run resumed with a longer schedule keeps its
stable phase and decays at the new end. PHASES runs policies back to back (MMEngine's list of
schedulers with ``begin``/``end``, torch's ``SequentialLR``), each phase a ``Schedule`` of its
own evaluated at the iterations since the phase began.
"""
import bisect
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple

from pet.lib.utils.lr_schedules import LR_POLICIES, LRPolicy, Schedule, half_cosine

# --- WSD -------------------------------------------------------------------------------------
# Each shape goes from 1 at progress 0 down to 0 at progress 1.
DECAY_SHAPES = {
    "LINEAR": lambda p: 1.0 - p,
    "COSINE": half_cosine,
    "SQRT": lambda p: 1.0 - math.sqrt(p),
}


@dataclass(frozen=True)
class WarmupStableDecay:
    decay_iters: Optional[int]  # the decay's length in iterations; None: decay_fraction of it
    decay_fraction: float  # of the whole schedule, when decay_iters is None
    decay_shape: str  # a DECAY_SHAPES name


def wsd_decay_iters(s: Schedule) -> int:
    """The decay's length in iterations under this schedule's length."""
    o = s.options
    return o.decay_iters if o.decay_iters is not None else int(round(o.decay_fraction * s.max_iter))


def wsd_policy(s: Schedule, i: int) -> float:
    """The warm-up, 1 (stable) until the last ``decay`` iterations, then DECAY_SHAPE down to the
    floor at the end. The decay is placed from the end, so a longer schedule moves it."""
    if i < s.warmup_iters:
        return s.warmup(i)
    decay = wsd_decay_iters(s)
    decay_start = s.max_iter - decay
    if i < decay_start:
        return 1.0
    m = s.min_lr_factor
    return m + (1.0 - m) * DECAY_SHAPES[s.options.decay_shape]((i - decay_start) / decay)


def wsd_options(keys: Mapping[str, Any], to_iters: Callable[[float], int]) -> WarmupStableDecay:
    return WarmupStableDecay(keys["DECAY_ITERS"], float(keys["DECAY_FRACTION"]),
                             keys["DECAY_SHAPE"].upper())


# --- PHASES ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Phases:
    """Phases back to back from the warm-up's end.

    ``begins[k]``: the iteration phase k begins; ``schedules[k]``: its policy over its length
    (``max_iter``), without warm-up; ``stated_scales[k]``: the configured SCALE or None;
    ``scales[k]``: what multiplies phase k's factors: the stated SCALE, else the factor where
    phase k - 1 ended (1 for the first phase, where the warm-up ends).
    """

    begins: Tuple[int, ...]
    schedules: Tuple[Schedule, ...]
    stated_scales: Tuple[Optional[float], ...]
    scales: Tuple[float, ...] = ()

    def __post_init__(self) -> None:
        # Resolved once here: every later factor is then a lookup and one policy call.
        scales, previous_end = [], 1.0
        for schedule, stated in zip(self.schedules, self.stated_scales):
            scale = previous_end if stated is None else stated
            scales.append(scale)
            previous_end = scale * schedule.factor(schedule.max_iter)
        object.__setattr__(self, "scales", tuple(scales))

    def with_floor(self, min_lr_factor: float) -> "Phases":
        """The same phases with another floor (the scales are resolved again)."""
        schedules = tuple(s.with_floor(min_lr_factor) for s in self.schedules)
        return Phases(self.begins, schedules, self.stated_scales)


def make_phases(warmup_iters: int, schedules: Sequence[Schedule],
                stated_scales: Sequence[Optional[float]]) -> Phases:
    """Phases whose lengths are their schedules' ``max_iter``, the first beginning where the
    warm-up ends."""
    begins, begin = [], warmup_iters
    for schedule in schedules:
        begins.append(begin)
        begin += schedule.max_iter
    return Phases(tuple(begins), tuple(schedules), tuple(stated_scales))


def phases_policy(s: Schedule, i: int) -> float:
    """The warm-up, then the phase holding ``i`` at the iterations since it began, times its
    scale; the last phase holds its end value to the end."""
    if i < s.warmup_iters:
        return s.warmup(i)
    o = s.options
    k = bisect.bisect_right(o.begins, i) - 1
    return o.scales[k] * o.schedules[k].factor(i - o.begins[k])


def phases_events(s: Schedule) -> Tuple[int, ...]:
    """Every phase boundary and the events of each phase, at their iterations."""
    o = s.options
    events = list(o.begins)
    for begin, schedule in zip(o.begins, o.schedules):
        events.extend(begin + event for event in schedule.events())
    return tuple(events)


LR_POLICIES.register(LRPolicy(wsd_policy, uses_floor=True, options=wsd_options), name="WSD")
# PHASES' options are built by the config adapter (lr_scheduler.build_schedule), which builds a
# Schedule per phase; the floor is read by the phases' own policies.
LR_POLICIES.register(LRPolicy(phases_policy, uses_floor=True, events=phases_events), name="PHASES")
