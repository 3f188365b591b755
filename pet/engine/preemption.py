"""Stopping a run cleanly on SIGTERM (what a cluster sends before it kills a job) and SIGINT
(Ctrl-C): the current iteration finishes, a checkpoint is written, and the run exits with one
line saying how to resume. A second SIGINT stops at once (KeyboardInterrupt)."""
import os
import signal
import time
from typing import Optional

import torch
import torch.distributed as dist

from pet.engine.checkpointer import Checkpointer, periodic_name
from pet.engine.events import MetricsStorage
from pet.engine.hooks import HookBase, is_period_end

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class TrainingStopped(Exception):
    """Raised after the iteration in which a stop signal arrived, once its checkpoint is written.

    Attributes: ``signal_name`` ("SIGTERM"/"SIGINT"), ``iterations_done``, ``checkpoint`` (the
    path to resume from)."""

    def __init__(self, signal_name: str, iterations_done: int, checkpoint: str) -> None:
        super().__init__(f"stopped by {signal_name} after {iterations_done} iterations")
        self.signal_name = signal_name
        self.iterations_done = iterations_done
        self.checkpoint = checkpoint


class StopRequest:
    """Records the first SIGTERM or SIGINT instead of dying on it; a second SIGINT raises
    KeyboardInterrupt (the user insists). ``install()`` replaces the handlers; ``restore()``
    puts the previous ones back."""

    def __init__(self) -> None:
        self.signal_name: Optional[str] = None
        self._previous = {}

    def install(self) -> "StopRequest":
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum: int, frame) -> None:
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signal_name is None:
            self.signal_name = signal.Signals(signum).name

    @property
    def requested(self) -> bool:
        return self.signal_name is not None


class StopOnSignal(HookBase):
    """After each step: when a stop was requested (on any process), checkpoint the iterations
    done (unless the periodic checkpoint just did) and raise TrainingStopped. Put it last, after
    the checkpoint and metrics hooks. Every process runs it (the save gathers RNG states), and
    under torch.distributed the processes agree on the flag every few seconds (see
    FIRST_AGREEMENT), so all stop at the same iteration.
    """

    def __init__(self, request: StopRequest, checkpointer: Checkpointer, snapshot_period: int,
                 max_iter: int, device: torch.device = torch.device("cpu"), extra=None) -> None:
        self.request = request
        self.checkpointer = checkpointer
        self.snapshot_period = snapshot_period
        self.max_iter = max_iter
        self.device = device
        self.extra = extra or {}
        # Under torch.distributed: the iteration count of the next agreement on the flag, and
        # (iterations done, time) at the last one.
        self._next_agreement: Optional[int] = None
        self._last_agreement = (0, 0.0)
        # Whether the run is distributed, known from before_train on (its process group lasts it).
        self._distributed: Optional[bool] = None

    # Under torch.distributed the processes agree on the flag (an all-reduce and a host sync):
    # first after FIRST_AGREEMENT iterations, then about every AGREE_SECONDS but at least
    # every MAX_PERIOD iterations, a period every process derives alike from the slowest
    # process's time per step: a stop lands within about a second, for a few ms a second.
    FIRST_AGREEMENT = 10
    AGREE_SECONDS = 1.0
    MAX_PERIOD = 100

    def before_train(self, storage: MetricsStorage) -> None:
        self._distributed = dist.is_available() and dist.is_initialized()

    def _stop_requested(self, iteration: int) -> bool:
        distributed = self._distributed
        if distributed is None:
            distributed = dist.is_available() and dist.is_initialized()
        if not distributed:
            return self.request.requested
        done = iteration + 1
        if self._next_agreement is None:
            self._next_agreement = done - 1 + self.FIRST_AGREEMENT
            self._last_agreement = (done - 1, time.perf_counter())
        if done < self._next_agreement:
            return False
        last_done, last_time = self._last_agreement
        now = time.perf_counter()
        values = torch.tensor([1.0 if self.request.requested else 0.0, now - last_time],
                              dtype=torch.float64, device=self.device)
        dist.all_reduce(values, op=dist.ReduceOp.MAX)
        requested, seconds = values.tolist()
        seconds_per_iter = seconds / max(done - last_done, 1)
        period = int(self.AGREE_SECONDS / max(seconds_per_iter, 1e-9))
        self._next_agreement = done + min(max(period, 1), self.MAX_PERIOD)
        self._last_agreement = (done, now)
        return requested > 0

    def after_step(self, storage: MetricsStorage) -> None:
        done = storage.iter + 1
        if done >= self.max_iter or not self._stop_requested(storage.iter):
            return  # the last iteration: the run finishes and writes model_final
        name = periodic_name(done)
        if is_period_end(storage.iter, self.snapshot_period):
            path = self.checkpointer.checkpoint_path(name)
            self.checkpointer.wait_pending()  # written in the background: on disk before the exit
        else:
            path = self.checkpointer.save(name, done, **self.extra)
        raise TrainingStopped(self.request.signal_name or "a signal", done, path)
