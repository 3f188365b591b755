"""Training batches as a pure function of (seed, iteration): exact resume needs no loader state.

The order of epoch ``e`` is a permutation drawn from a generator seeded with (seed, e), and
iteration ``i`` reads batch ``i % iter_per_epoch`` of epoch ``i // iter_per_epoch``. A run
resumed at iteration ``i`` therefore sees exactly the batches the uninterrupted run saw.
"""
import math
from typing import Iterator, List, NamedTuple, Tuple

import numpy as np
import torch

from pet.data.digits import ImageSplit

# Separate random streams per purpose, so turning augmentation on never changes the order.
_ORDER_STREAM = 0
_SHIFT_STREAM = 1


class MicroBatch(NamedTuple):
    """One process's part of a step's batch; ``weight`` multiplies its (mean) loss so that
    unequal parts still average to the whole batch's loss (1 for equal parts)."""

    levels: torch.Tensor
    labels: torch.Tensor
    weight: float


def epoch_rng(seed: int, epoch: int, stream: int) -> np.random.Generator:
    """A generator that depends only on (seed, epoch, stream)."""
    return np.random.default_rng([seed, epoch, stream])


def batches_per_epoch(num_images: int, batch_size: int, drop_last: bool) -> int:
    """Iterations in one epoch of ``num_images`` images."""
    if drop_last:
        return num_images // batch_size
    return math.ceil(num_images / batch_size)


def shift_images(levels: torch.Tensor, shifts: np.ndarray, max_shift: int) -> torch.Tensor:
    """Translate each image by its (dy, dx) in ``shifts``, filling the border with zeros."""
    size = levels.shape[-1]
    padded = torch.nn.functional.pad(levels, (max_shift,) * 4)
    out = torch.empty_like(levels)
    for k, (dy, dx) in enumerate(shifts):
        top, left = max_shift - dy, max_shift - dx
        out[k] = padded[k, :, top:top + size, left:left + size]
    return out


class TrainLoader:
    """Shuffled training batches, addressable by iteration.

    Args:
        split: the training images.
        batch_size: images per iteration.
        drop_last: drop each epoch's last, smaller batch.
        seed: the run's seed; the order of each epoch depends only on (seed, epoch).
        max_shift: random translation of up to this many pixels (0: none).
    """

    def __init__(self, split: ImageSplit, batch_size: int, drop_last: bool, seed: int,
                 max_shift: int = 0) -> None:
        self.split = split
        self.batch_size = batch_size
        self.seed = seed
        self.max_shift = max_shift
        self.iter_per_epoch = batches_per_epoch(len(split), batch_size, drop_last)
        self._epoch = None
        self._order = None
        self._shifts = None

    def __len__(self) -> int:
        return self.iter_per_epoch

    def position(self, iteration: int) -> Tuple[int, int]:
        """(epoch, batch index within the epoch) that ``iteration`` reads, both from 0."""
        return divmod(iteration, self.iter_per_epoch)

    def _prepare_epoch(self, epoch: int) -> None:
        if epoch == self._epoch:
            return
        order = epoch_rng(self.seed, epoch, _ORDER_STREAM).permutation(len(self.split))
        self._order = torch.from_numpy(order)
        if self.max_shift > 0:
            rng = epoch_rng(self.seed, epoch, _SHIFT_STREAM)
            self._shifts = rng.integers(-self.max_shift, self.max_shift + 1, size=(len(self.split), 2))
        self._epoch = epoch

    def batch(self, iteration: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """(levels, labels) of ``iteration``: the whole batch of one optimizer step."""
        return self._read(self._picked(iteration))

    def micro_batches(self, iteration: int, rank: int = 0, world_size: int = 1,
                      accumulation_steps: int = 1) -> List[MicroBatch]:
        """The share of process ``rank`` in the batch of ``iteration``: its ``accumulation_steps``
        micro-batches, each with the weight that makes the mean of the weighted micro-batch
        losses over every process and micro-batch equal the loss of the whole batch.

        The batch is cut into ``world_size * accumulation_steps`` consecutive parts as evenly as
        possible; process ``rank`` reads parts ``rank * k .. rank * k + k - 1``. Which images a
        part holds depends only on (seed, iteration, rank, world_size, k), so a resumed run
        reads the same ones. With equal parts every weight is 1.
        """
        picked = self._picked(iteration)
        parts = world_size * accumulation_steps
        shares = torch.tensor_split(picked, parts)[rank * accumulation_steps:(rank + 1) * accumulation_steps]
        return [MicroBatch(*self._read(share), weight=len(share) * parts / len(picked))
                for share in shares]

    def _picked(self, iteration: int) -> torch.Tensor:
        epoch, index = self.position(iteration)
        self._prepare_epoch(epoch)
        return self._order[index * self.batch_size:(index + 1) * self.batch_size]

    def _read(self, picked: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        levels = self.split.levels[picked]
        if self.max_shift > 0:
            levels = shift_images(levels, self._shifts[picked.numpy()], self.max_shift)
        return levels, self.split.labels[picked]


def eval_batches(split: ImageSplit, batch_size: int) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """The held-out images in their fixed order, ``batch_size`` at a time."""
    for start in range(0, len(split), batch_size):
        yield split.levels[start:start + batch_size], split.labels[start:start + batch_size]
