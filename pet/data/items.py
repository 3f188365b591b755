"""Reading a data set's items with a random state of their own, and batching them with checks.

Each item is fetched by a key (epoch, index) and read with torch's, numpy's and ``random``'s
global generators seeded from (seed, epoch, index): an item's augmentation is the same in any
worker, for any worker count, after any resume. A failure (an item that raises, items of
different shapes, a label outside MODEL.NUM_CLASSES) travels to the training process as a
``BatchFailure`` holding one line that names the item and the worker.
"""
import random
from typing import Any, Callable, List, NamedTuple, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate, get_worker_info

from pet.data.batch import map_leaves
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


# The global generators an item's __getitem__ may draw from, each seeded per item. A data set
# that draws from fewer says so in a ``random_generators`` attribute (e.g. ``("torch",)``, or
# ``()`` for none): the others are then left alone, which saves their seeding (torch 1 us,
# numpy 2 us, random 5 us an item).
GENERATORS = ("torch", "numpy", "random")


class _Generator(NamedTuple):
    seed: Callable[[int], None]
    get_state: Callable[[], Any]
    set_state: Callable[[Any], None]


_GENERATORS = {
    # torch's CPU generator directly: torch.manual_seed also seeds every accelerator (100x slower).
    "torch": _Generator(torch.default_generator.manual_seed, torch.default_generator.get_state,
                        torch.default_generator.set_state),
    "numpy": _Generator(lambda seed: np.random.seed(seed & 0xFFFFFFFF), np.random.get_state, np.random.set_state),
    "random": _Generator(random.seed, random.getstate, random.setstate),
}


def declared_generators(dataset: Dataset) -> Tuple[str, ...]:
    """The generators ``dataset``'s items draw from (its ``random_generators``, all by default).
    Raises ValueError for a declaration that is not a subset of GENERATORS."""
    declared = getattr(dataset, "random_generators", GENERATORS)
    if not (isinstance(declared, (tuple, list)) and set(declared) <= set(GENERATORS)):
        raise ValueError(f"random_generators {declared!r}; allowed: a tuple of {', '.join(GENERATORS)}")
    return tuple(name for name in GENERATORS if name in declared)


def _where() -> str:
    worker = get_worker_info()
    return " in the training process" if worker is None else f" in DataLoader worker {worker.id}"


class SeededItems(Dataset):
    """``dataset`` read by keys (epoch, index), each item with the random state of
    ``item_seed(seed, epoch, index)``; a batch at a time (torch's ``__getitems__``), handing
    ``ItemCollator`` the indices with the items."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed
        self.generators = [_GENERATORS[name] for name in declared_generators(dataset)]

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitems__(self, keys: Sequence[Tuple[int, int]]):
        # The training process keeps its own random state (dropout draws from it); a worker's
        # state belongs to nothing else.
        generators = self.generators
        saved = None
        if generators and get_worker_info() is None:
            saved = [generator.get_state() for generator in generators]
        try:
            items = []
            for epoch, index in keys:
                if generators:
                    seed = item_seed(self.seed, epoch, index)
                    for generator in generators:
                        generator.seed(seed)
                try:
                    items.append(self.dataset[index])
                except Exception as e:  # noqa: BLE001  (a corrupt file, a bug: one line)
                    return BatchFailure(f"data item {index} raised {type(e).__name__}: "
                                        f"{first_line(e)}{_where()}")
            return [index for _, index in keys], items
        finally:
            if saved is not None:
                for generator, state in zip(generators, saved):
                    generator.set_state(state)


# A worker hands a batch's tensors below this size to the training process as numpy arrays,
# pickled through the queue's pipe (about 0.1 ms a batch), rather than as shared memory, whose
# file descriptor passing costs about 0.9 ms a batch; larger ones go as shared memory (no copy).
PIPE_BYTES = 1 << 20


class ItemCollator:
    """torch's ``default_collate`` of ``SeededItems``' (indices, items) into (inputs, labels),
    after checking each item is an (input, label) pair, and, with ``num_classes``, that class
    index labels are below it; any failure becomes a ``BatchFailure``. With ``through_pipe``,
    in a worker, small tensors leave as numpy arrays (``PIPE_BYTES``; ``from_pipe`` turns
    them back)."""

    def __init__(self, num_classes: int = 0, through_pipe: bool = False) -> None:
        self.num_classes = num_classes
        self.through_pipe = through_pipe

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
            batch = default_collate(items)
        except Exception as e:  # noqa: BLE001  (items that cannot be stacked: one line)
            return BatchFailure(_collate_failure(indices, items, e))
        if self.through_pipe and get_worker_info() is not None:
            return _to_pipe(batch)
        return batch


def _to_pipe(value: Any) -> Any:
    """``value`` with its small tensors (below PIPE_BYTES, of a dtype numpy has) as numpy arrays."""
    def leaf(v: Any) -> Any:
        if isinstance(v, torch.Tensor) and v.numel() * v.element_size() < PIPE_BYTES \
                and v.dtype != torch.bfloat16 and not v.is_complex():
            return v.numpy()
        return v
    return map_leaves(value, leaf)


def from_pipe(value: Any) -> Any:
    """A batch as ``ItemCollator`` made it, every numpy array back to a tensor (collated
    batches hold no numpy arrays of their own: ``default_collate`` turns them into tensors)."""
    return map_leaves(value, lambda v: torch.from_numpy(v) if isinstance(v, np.ndarray) else v)


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
