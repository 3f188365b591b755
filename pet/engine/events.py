"""The metrics storage that hooks write to and read from during training."""
import statistics
from collections import defaultdict, deque
from typing import Deque, Dict

# How many past values of each scalar are kept for smoothed display.
HISTORY_LENGTH = 100


class MetricsStorage:
    """Scalars of the current iteration (``latest()``) and a short history of each.

    ``iter`` is the iteration being run, from 0; the trainer moves it forward.
    """

    def __init__(self, start_iter: int = 0) -> None:
        self.iter = start_iter
        self._latest: Dict[str, float] = {}
        self._history: Dict[str, Deque[float]] = defaultdict(lambda: deque(maxlen=HISTORY_LENGTH))

    def begin_iteration(self, iteration: int) -> None:
        """Start recording ``iteration``: its scalars replace the previous iteration's."""
        self.iter = iteration
        self._latest = {}

    def put_scalar(self, name: str, value: float, smoothing_hint: bool = True) -> None:
        """Record ``name = value`` for the current iteration. ``smoothing_hint`` says whether a
        median over recent iterations is a meaningful display (a loss, not an lr)."""
        value = float(value)
        self._latest[name] = value
        if smoothing_hint:
            self._history[name].append(value)

    def has(self, name: str) -> bool:
        """Whether ``name`` was recorded during the current iteration."""
        return name in self._latest

    def latest(self) -> Dict[str, float]:
        """Every scalar recorded during the current iteration."""
        return dict(self._latest)

    def median(self, name: str, window: int) -> float:
        """Median of the last ``window`` recorded values of ``name`` (KeyError if none)."""
        history = self._history[name]
        if not history:
            raise KeyError(f"no value of {name!r} recorded yet")
        return statistics.median(list(history)[-window:])
