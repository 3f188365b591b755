"""Which hook methods the trainer calls around each step.

A hook that declares the iterations it acts on (``HookBase.step_periods``: evaluation, metrics,
checkpoints, the EMA) is called there only, and at the last iteration; one that does not (the
timer, the lr, a user's hook) at every iteration. Most iterations then call two or three
methods instead of every hook's (each a few microseconds of Python between two steps).
"""
import math
from typing import Callable, List, Optional, Sequence, Tuple

from pet.engine.hooks import HookBase, is_period_end

# The before_step and the after_step methods of an iteration, in the hooks' order.
StepCalls = Tuple[List[Callable], List[Callable]]


def overriding(hook, name: str) -> Optional[Callable]:
    """The bound ``name`` method of ``hook`` when it overrides HookBase's (which does nothing)."""
    if getattr(type(hook), name, None) is getattr(HookBase, name):
        return None
    return getattr(hook, name)


def next_period_end(iteration: int, period: int) -> int:
    """The first iteration from ``iteration`` on that completes a multiple of ``period`` (> 0)."""
    return -(-(iteration + 1) // period) * period - 1


class HookDispatch:
    """The calls of ``hooks`` at each iteration of a run of ``max_iter`` iterations."""

    def __init__(self, hooks: Sequence[HookBase], max_iter: int) -> None:
        self.hooks = tuple(hooks)
        self.max_iter = max_iter
        # (periods, before_step, after_step) per hook; periods None: every iteration. A hook
        # without step_periods (not a HookBase) acts at every iteration.
        self._entries = [(getattr(hook, "step_periods", lambda: None)(), overriding(hook, "before_step"),
                          overriding(hook, "after_step")) for hook in self.hooks]
        self._periods = sorted({p for periods, _, _ in self._entries if periods is not None for p in periods if p > 0})
        self._every = self._calls(lambda periods: periods is None)
        # The iterations [start, end) at which no declared hook acts.
        self._quiet = (0, 0)

    def calls(self, iteration: int) -> StepCalls:
        """The methods to call before and after the step ``iteration``."""
        start, end = self._quiet
        if start <= iteration < end:
            return self._every
        self._quiet = (iteration + 1, self._next_due(iteration + 1))
        last = iteration + 1 == self.max_iter
        return self._calls(lambda periods: periods is None or last
                           or any(is_period_end(iteration, p) for p in periods))

    def _calls(self, acts: Callable[[Optional[Tuple[int, ...]]], bool]) -> StepCalls:
        entries = [entry for entry in self._entries if acts(entry[0])]
        return ([before for _, before, _ in entries if before is not None],
                [after for _, _, after in entries if after is not None])

    def _next_due(self, iteration: int) -> float:
        """The first iteration from ``iteration`` on at which a declared hook may act."""
        due = [next_period_end(iteration, p) for p in self._periods]
        if iteration < self.max_iter:
            due.append(self.max_iter - 1)
        return min(due, default=math.inf)
