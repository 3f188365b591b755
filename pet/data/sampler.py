"""Which items each process reads at each iteration: a pure function of (seed, epoch, rank,
world size), so exact resume needs no loader state.

The order of epoch ``e`` is a permutation drawn from a generator seeded with (seed, e);
iteration ``i`` reads batch ``i % iter_per_epoch`` of epoch ``i // iter_per_epoch``. That global
batch is cut into ``world_size * accumulation_steps`` consecutive parts as evenly as possible
and process ``rank`` reads parts ``rank * k .. rank * k + k - 1``: over the processes every item
is read once per epoch, and a resumed run reads the same items from its first iteration on.
With DATA.DROP_LAST False the last batch of an epoch is smaller; its parts then differ by at
most one item and each part's loss is weighted so that the weighted mean is the whole batch's.
"""
import math
from typing import Iterator, List, Optional, Tuple

import numpy as np
from torch.utils.data import Sampler

# Separate random streams per purpose, so one never changes the other.
_ORDER_STREAM = 0

Key = Tuple[int, int]  # (epoch, index): an item and the epoch that reads it


def epoch_rng(seed: int, epoch: int, stream: int) -> np.random.Generator:
    """A generator that depends only on (seed, epoch, stream)."""
    return np.random.default_rng([seed, epoch, stream])


def batches_per_epoch(num_items: int, batch_size: int, drop_last: bool) -> int:
    """Iterations in one epoch of ``num_items`` items."""
    if drop_last:
        return num_items // batch_size
    return math.ceil(num_items / batch_size)


class BatchPlan:
    """The keys each process reads at each iteration (see the module's docstring).

    Args:
        num_items: items in the training data set.
        batch_size: items per iteration over all processes (DATA.BATCH_SIZE).
        drop_last: drop each epoch's last, smaller batch.
        seed: the run's seed.
        rank, world_size: this process and the number of processes.
        accumulation_steps: micro-batches per process per iteration.
    """

    def __init__(self, num_items: int, batch_size: int, drop_last: bool, seed: int,
                 rank: int = 0, world_size: int = 1, accumulation_steps: int = 1) -> None:
        self.num_items = num_items
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.accumulation_steps = accumulation_steps
        self.iter_per_epoch = batches_per_epoch(num_items, batch_size, drop_last)
        self._epoch: Optional[int] = None
        self._order: Optional[np.ndarray] = None

    def position(self, iteration: int) -> Tuple[int, int]:
        """(epoch, batch index within the epoch) that ``iteration`` reads, both from 0."""
        return divmod(iteration, self.iter_per_epoch)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The permutation of the items in ``epoch``."""
        if epoch != self._epoch:
            self._order = epoch_rng(self.seed, epoch, _ORDER_STREAM).permutation(self.num_items)
            self._epoch = epoch
        return self._order

    def global_batch(self, iteration: int) -> np.ndarray:
        """The indices of the whole batch of ``iteration`` (every process's)."""
        epoch, index = self.position(iteration)
        return self.epoch_order(epoch)[index * self.batch_size:(index + 1) * self.batch_size]

    def micro_batches(self, iteration: int) -> List[Tuple[List[Key], float]]:
        """This process's ``accumulation_steps`` micro-batches of ``iteration``: each its keys
        and the weight of its mean loss (1 for equal parts)."""
        epoch = iteration // self.iter_per_epoch
        picked = self.global_batch(iteration)
        k = self.accumulation_steps
        parts = self.world_size * k
        shares = np.array_split(picked, parts)[self.rank * k:(self.rank + 1) * k]
        return [([(epoch, int(i)) for i in share], len(share) * parts / len(picked)) for share in shares]

    def weights(self, iteration: int) -> List[float]:
        """The weights of ``micro_batches(iteration)``, by arithmetic."""
        index = iteration % self.iter_per_epoch
        size = min(self.batch_size, self.num_items - index * self.batch_size)
        parts = self.world_size * self.accumulation_steps
        quotient, remainder = divmod(size, parts)
        first = self.rank * self.accumulation_steps
        return [(quotient + (part < remainder)) * parts / size
                for part in range(first, first + self.accumulation_steps)]


class PlannedBatches(Sampler):
    """torch's batch sampler for a ``BatchPlan``: the micro-batches of iterations
    ``start_iter .. max_iter - 1``, in order."""

    def __init__(self, plan: BatchPlan, start_iter: int, max_iter: int) -> None:
        self.plan = plan
        self.start_iter = start_iter
        self.max_iter = max_iter

    def __iter__(self) -> Iterator[List[Key]]:
        for iteration in range(self.start_iter, self.max_iter):
            for keys, _ in self.plan.micro_batches(iteration):
                yield keys

    def __len__(self) -> int:
        return max(0, self.max_iter - self.start_iter) * self.plan.accumulation_steps
