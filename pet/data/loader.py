"""torch DataLoaders over a ``BatchPlan``: workers, pinned memory, prefetching, exact resume.

``TrainLoader.iterate(start_iter, max_iter)`` yields, for each iteration, this process's
micro-batches: the batch of iteration ``i`` is the same for any worker count and any resume
point (which items: ``BatchPlan``; their augmentation: ``SeededItems``), and a resumed run
starts at its iteration without reading the epoch up to it.
"""
import logging
import os
import signal
from typing import Any, Iterator, List, NamedTuple, Optional

import torch
from torch.utils.data import DataLoader, Dataset

from pet.data.items import EVAL_EPOCH, BatchFailure, DataItemError, ItemCollator, SeededItems, from_pipe
from pet.data.sampler import BatchPlan, PlannedBatches

logger = logging.getLogger(__name__)

# The most workers DATA.NUM_WORKERS -1 picks per process (detectron2's default count).
MAX_AUTO_WORKERS = 4


class MicroBatch(NamedTuple):
    """One process's part of a step's batch; ``weight`` multiplies its (mean) loss so that
    unequal parts still average to the whole batch's loss (1 for equal parts)."""

    inputs: Any
    labels: Any
    weight: float


def auto_num_workers(device_type: str = "cpu", processes_per_machine: int = 1) -> int:
    """Workers per process for DATA.NUM_WORKERS -1, from the CPUs this process may use, shared
    by the machine's training processes: on a GPU all but one (the training process only feeds
    the device); on the CPU a quarter (the training's own threads compute on the rest, so 0
    below 4 CPUs); at most MAX_AUTO_WORKERS."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cpus //= max(1, processes_per_machine)
    workers = cpus - 1 if device_type == "cuda" else cpus // 4
    return max(0, min(MAX_AUTO_WORKERS, workers))


def is_worker_failure(error: BaseException) -> bool:
    """Whether ``error`` is torch's report of a DataLoader worker that died (killed by the OS,
    out of memory)."""
    return isinstance(error, RuntimeError) and str(error).startswith("DataLoader worker")


def worker_failure_line(error: BaseException) -> str:
    """One line for torch's report of a dead worker, with what to try."""
    reason = str(error).strip().splitlines()[0].rstrip(". ")
    return (f"{reason} (a worker the OS ended, often for memory: lower DATA.NUM_WORKERS or "
            f"DATA.PREFETCH_FACTOR)")


def _ignore_stop_signals(worker_id: int) -> None:
    """A worker leaves Ctrl-C and SIGTERM to the training process, which checkpoints and then
    stops its workers: a terminal's Ctrl-C or a cluster's SIGTERM reaches every process of the
    group, and a worker dying of it first would end the run without its checkpoint."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _loader(data_set: SeededItems, batch_sampler, num_workers: int, pin_memory: bool,
            prefetch_factor: int, num_classes: int, persistent: bool) -> DataLoader:
    workers = {"prefetch_factor": prefetch_factor, "persistent_workers": persistent} if num_workers else {}
    # Pinned batches need tensors (torch's pin thread pins them); unpinned small ones cross
    # from the workers faster as numpy arrays. A generator of its own: making the iterator
    # draws its workers' base seed from it, never from the training process's random state.
    return DataLoader(data_set, batch_sampler=batch_sampler, num_workers=num_workers,
                      collate_fn=ItemCollator(num_classes, through_pipe=not pin_memory), pin_memory=pin_memory,
                      worker_init_fn=_ignore_stop_signals,
                      generator=torch.Generator().manual_seed(data_set.seed), **workers)


def _shut_down(iterator: Any) -> None:
    """Stop a DataLoader iterator's workers (its own shutdown: they exit and are joined)."""
    shutdown = getattr(iterator, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()


def _checked(batch: Any) -> Any:
    if isinstance(batch, BatchFailure):
        raise DataItemError(batch.message)
    return from_pipe(batch)


class TrainLoader:
    """The training batches of ``plan`` from ``dataset`` through a torch DataLoader.

    Args:
        dataset: the training split (map-style).
        plan: which items each iteration reads on this process.
        seed: the run's seed (items' random state: ``SeededItems``).
        num_workers: DataLoader worker processes (0: read in the training process).
        pin_memory: batches in pinned memory, for ``non_blocking`` copies to a GPU.
        prefetch_factor: batches each worker reads ahead.
        num_classes: labels must be below it (0: not checked).
    """

    def __init__(self, dataset: Dataset, plan: BatchPlan, seed: int, num_workers: int = 0,
                 pin_memory: bool = False, prefetch_factor: int = 2, num_classes: int = 0) -> None:
        self.items = SeededItems(dataset, seed)
        self.plan = plan
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.prefetch_factor = prefetch_factor
        self.num_classes = num_classes
        self.iter_per_epoch = plan.iter_per_epoch
        self._batches: Optional[Iterator] = None

    def __len__(self) -> int:
        return self.iter_per_epoch

    def iterate(self, start_iter: int, max_iter: int) -> Iterator[List[MicroBatch]]:
        """This process's micro-batches of iterations ``start_iter .. max_iter - 1``, one list
        per iteration; the workers start reading at once. Raises DataItemError for an item
        that cannot be trained on."""
        self.close()
        loader = _loader(self.items, PlannedBatches(self.plan, start_iter, max_iter), self.num_workers,
                         self.pin_memory, self.prefetch_factor, self.num_classes, persistent=False)
        self._batches = iter(loader)
        return self._steps(self._batches, start_iter, max_iter)

    def _steps(self, batches: Iterator, start_iter: int, max_iter: int) -> Iterator[List[MicroBatch]]:
        for iteration in range(start_iter, max_iter):
            yield [MicroBatch(*_checked(next(batches)), weight) for weight in self.plan.weights(iteration)]

    def close(self) -> None:
        """Stop the workers."""
        batches, self._batches = self._batches, None
        _shut_down(batches)


class EvalLoader:
    """The held-out items in their fixed order, ``batch_size`` at a time, each read with the
    random state of (seed, EVAL_EPOCH, index); the workers persist between evaluations."""

    def __init__(self, dataset: Dataset, batch_size: int, seed: int = 0, num_workers: int = 0,
                 pin_memory: bool = False, num_classes: int = 0) -> None:
        self.dataset = dataset
        keys = [(EVAL_EPOCH, index) for index in range(len(dataset))]
        batches = [keys[start:start + batch_size] for start in range(0, len(keys), batch_size)]
        self.loader = _loader(SeededItems(dataset, seed), batches, num_workers, pin_memory, 2,
                              num_classes, persistent=num_workers > 0)

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Iterator:
        for batch in self.loader:
            yield _checked(batch)

    def close(self) -> None:
        """Stop the persistent workers."""
        _shut_down(getattr(self.loader, "_iterator", None))
        self.loader._iterator = None
