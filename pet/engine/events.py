"""The metrics storage that hooks write to and read from during training."""
import statistics
from collections import defaultdict, deque
from typing import Callable, Deque, Dict, List, Optional, Set, Union

import torch

from pet.lib.utils.grad_check import host_floats

# A value as recorded: a number, or a 0-dim tensor read when first shown.
Scalar = Union[float, torch.Tensor]

# How many past values of each scalar are kept for smoothed display.
HISTORY_LENGTH = 100


class MetricsStorage:
    """Scalars of the current iteration (``latest()``) and a short history of each.

    ``iter`` is the iteration being run, from 0; the trainer moves it forward.

    Under torch.distributed some scalars differ per process (each process's loss is that of its
    own share of the batch). They are put with ``per_process=True`` and averaged over the
    processes by ``synchronize()`` (``mean_over_processes``: one all-reduce for all the values
    recorded since the last call), which the run calls on logged iterations, so the steps in
    between communicate nothing. The history is part of the checkpoint (``state_dict``), so a
    resumed run's smoothed values are those of an uninterrupted one.

    A value may be put as a 0-dim tensor (the step's loss, still on the device): it is read,
    with every other unread one, in one host read when a value is first asked for
    (``latest``, ``median``, ``synchronize``, ``state_dict``), so steps that show nothing
    read nothing.
    """

    def __init__(self, start_iter: int = 0,
                 mean_over_processes: Optional[Callable[[List[float]], List[float]]] = None) -> None:
        self.iter = start_iter
        self.mean_over_processes = mean_over_processes
        self._latest: Dict[str, Scalar] = {}
        self._history: Dict[str, Deque[Scalar]] = defaultdict(lambda: deque(maxlen=HISTORY_LENGTH))
        # Per-process values recorded since the last synchronize(), by name.
        self._unsynchronized: Dict[str, int] = {}
        # Whether a tensor was put since the last read, and the histories it went into: a read
        # scans those alone (the others hold floats only).
        self._unread = False
        self._unread_histories: Set[str] = set()

    def begin_iteration(self, iteration: int) -> None:
        """Start recording ``iteration``: its scalars replace the previous iteration's."""
        self.iter = iteration
        self._latest = {}

    def put_scalar(self, name: str, value: Scalar, smoothing_hint: bool = True,
                   per_process: bool = False) -> None:
        """Record ``name = value`` (a number, or a 0-dim tensor read later) for the current
        iteration. ``smoothing_hint`` says whether a median over recent iterations is a
        meaningful display (a loss, not an lr); ``per_process``, that the value is this
        process's own until ``synchronize()``."""
        tensor = isinstance(value, torch.Tensor)
        if tensor:
            value = value.detach()
            self._unread = True
        else:
            value = float(value)
        self._latest[name] = value
        if smoothing_hint or per_process:
            self._history[name].append(value)
            if tensor:
                self._unread_histories.add(name)
        if per_process and self.mean_over_processes is not None:
            self._unsynchronized[name] = self._unsynchronized.get(name, 0) + 1

    def synchronize(self) -> None:
        """Replace the per-process values recorded since the last call (in the history and in
        ``latest()``) by their means over the processes. Every process must call it at the same
        iteration; a no-op in a single process."""
        if not self._unsynchronized:
            return
        self._read_tensors()
        names = sorted(self._unsynchronized)  # the same order on every process
        counts = [min(self._unsynchronized[name], len(self._history[name])) for name in names]
        values = [v for name, n in zip(names, counts) for v in list(self._history[name])[-n:]]
        means = iter(self.mean_over_processes(values))
        for name, n in zip(names, counts):
            history = self._history[name]
            for index in range(len(history) - n, len(history)):
                history[index] = next(means)
            if name in self._latest:
                self._latest[name] = history[-1]
        self._unsynchronized = {}

    def has(self, name: str) -> bool:
        """Whether ``name`` was recorded during the current iteration."""
        return name in self._latest

    def latest(self) -> Dict[str, float]:
        """Every scalar recorded during the current iteration."""
        self._read_tensors()
        return dict(self._latest)

    def _read_tensors(self) -> None:
        """Replace every recorded tensor by its value, all read at once."""
        if not self._unread:
            return
        self._unread = False
        histories = [self._history[name] for name in self._unread_histories]
        self._unread_histories = set()
        unread = {id(v): v for values in (self._latest.values(), *histories)
                  for v in values if isinstance(v, torch.Tensor)}
        values = dict(zip(unread, host_floats(list(unread.values()))))
        self._latest = {name: values.get(id(v), v) for name, v in self._latest.items()}
        for history in histories:
            for index, v in enumerate(history):
                if isinstance(v, torch.Tensor):
                    history[index] = values[id(v)]

    def median(self, name: str, window: int) -> float:
        """Median of the last ``window`` recorded values of ``name`` (KeyError if none)."""
        self._read_tensors()
        history = self._history[name]
        if not history:
            raise KeyError(f"no value of {name!r} recorded yet")
        return statistics.median(list(history)[-window:])

    def state_dict(self) -> Dict[str, Dict[str, List[float]]]:
        """The history of every scalar, synchronized first (so under torch.distributed every
        process must call it: the checkpointer's ``save`` does)."""
        self.synchronize()
        self._read_tensors()
        return {"history": {name: list(values) for name, values in self._history.items()}}

    def load_state_dict(self, state_dict: Dict[str, Dict[str, List[float]]]) -> None:
        """Restore ``state_dict()``'s history (KeyError when it has none)."""
        self._history.clear()
        for name, values in state_dict["history"].items():
            self._history[name].extend(float(v) for v in values)
        self._unsynchronized = {}
