"""Reading a data set's items with a random state of their own, and batching them with checks.

Each item is fetched by a key (epoch, index) and read with torch's, numpy's and ``random``'s
global generators seeded from (seed, epoch, index): an item's augmentation is the same in any
worker, for any worker count, after any resume. A failure (an item that raises, items of
different shapes, a label outside MODEL.NUM_CLASSES) travels to the training process as a
``BatchFailure`` holding one line that names the item and the worker.
"""
import random
from typing import Any, List, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate, get_worker_info

from pet.lib.config.errors import first_line

# The epoch of the held-out items' keys: evaluation reads them with a random state of their own.
EVAL_EPOCH = -1
_MASK64 = (1 << 64) - 1


class BatchFailure:
    """A batch that could not be read: ``message`` says which item, why and where."""

    def __init__(self, message: str) -> None:
        self.message = message


class DataItemError(RuntimeError):
    """An item, or a batch of items, that cannot be trained on (one line)."""


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 64-bit seed that depends only on (seed, epoch, index): splitmix64 of their mix."""
    x = (seed * 0x9E3779B97F4A7C15 + (epoch + 2) * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _seed_generators(seed: int) -> None:
    # torch's CPU generator directly: torch.manual_seed also seeds every accelerator (100x slower).
    torch.default_generator.manual_seed(seed)
    np.random.seed(seed & 0xFFFFFFFF)
    random.seed(seed)


def _where() -> str:
    worker = get_worker_info()
    return " in the training process" if worker is None else f" in DataLoader worker {worker.id}"


class SeededItems(Dataset):
    """``dataset`` read by keys (epoch, index), each item with the random state of
    ``item_seed(seed, epoch, index)``; a batch at a time (torch's ``__getitems__``), handing
    ``collate_items`` the keys with the items."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitems__(self, keys: Sequence[Tuple[int, int]]):
        # The training process keeps its own random state (dropout draws from it); a worker's
        # state belongs to nothing else.
        saved = None
        if get_worker_info() is None:
            saved = (torch.default_generator.get_state(), np.random.get_state(), random.getstate())
        try:
            items = []
            for epoch, index in keys:
                _seed_generators(item_seed(self.seed, epoch, index))
                try:
                    items.append(self.dataset[index])
                except Exception as e:  # noqa: BLE001  (a corrupt file, a bug: one line)
                    return BatchFailure(f"data item {index} raised {type(e).__name__}: "
                                        f"{first_line(e)}{_where()}")
            return [index for _, index in keys], items
        finally:
            if saved is not None:
                torch.default_generator.set_state(saved[0])
                np.random.set_state(saved[1])
                random.setstate(saved[2])


class ItemCollator:
    """torch's ``default_collate`` of ``SeededItems``' (indices, items) into (inputs, labels),
    after checking each item is an (input, label) pair, and, with ``num_classes``, that class
    index labels are below it; any failure becomes a ``BatchFailure``."""

    def __init__(self, num_classes: int = 0) -> None:
        self.num_classes = num_classes

    def __call__(self, fetched) -> Any:
        if isinstance(fetched, BatchFailure):
            return fetched
        indices, items = fetched
        for index, item in zip(indices, items):
            if not (isinstance(item, (tuple, list)) and len(item) == 2):
                return BatchFailure(f"data item {index} is a {type(item).__name__}; expected "
                                    f"(input, label){_where()}")
            if self.num_classes:  # a class index outside the model's outputs
                bad = _bad_label(item[1], self.num_classes)
                if bad is not None:
                    return BatchFailure(f"data item {index} has label {bad}, outside MODEL.NUM_CLASSES="
                                        f"{self.num_classes} (allowed: 0..{self.num_classes - 1}){_where()}")
        try:
            return default_collate(items)
        except Exception as e:  # noqa: BLE001  (items that cannot be stacked: one line)
            return BatchFailure(_collate_failure(indices, items, e))


def _bad_label(label: Any, num_classes: int):
    """``label`` when it is a class index (an int or a 0-dim integer tensor) outside
    0..num_classes-1, else None (other labels, a mask or a target vector, are the model's)."""
    if isinstance(label, torch.Tensor) and label.dim() == 0 and not label.is_floating_point():
        label = label.item()
    if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
        return None if 0 <= label < num_classes else int(label)
    return None


def _structure(value: Any) -> Any:
    """The shapes (and types) of an item's input or label, nested as the value is."""
    if isinstance(value, torch.Tensor):
        return tuple(value.shape), value.dtype
    if isinstance(value, np.ndarray):
        return value.shape, value.dtype
    if isinstance(value, dict):
        return {key: _structure(v) for key, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_structure(v) for v in value]
    return type(value).__name__


def _collate_failure(indices: List[int], items: List[Any], error: Exception) -> str:
    """The line for a batch ``default_collate`` could not stack: the first item whose shapes
    differ from those most items of the batch share, else the collate error itself."""
    shapes = [_describe(_structure(item)) for item in items]
    usual = max(set(shapes), key=shapes.count)
    for index, shape in zip(indices, shapes):
        if shape != usual:
            return (f"data item {index} has shape {shape} where the other items of its batch have "
                    f"{usual}; a batch stacks its items: make every item the same shape{_where()}")
    return f"data items {indices[0]}..{indices[-1]} cannot be batched ({type(error).__name__}: " \
           f"{first_line(error)}){_where()}"


def _describe(structure: Any) -> str:
    return str(structure).replace("torch.", "")
