"""The 8x8 handwritten digits that ship inside scikit-learn, split into train and held-out sets.

Images are kept as integer intensity levels 0..16 (the data set's own encoding); each model
decides how to read them (the CNN scales them to [0, 1], the transformer embeds each level).
Each split is a map-style torch Dataset of ``(levels, label)`` items, the data contract of
``DATASETS`` (pet/data/registry.py).
"""
import gzip
import importlib.util
import math
import os
from typing import Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

# The digits' intensity levels run from 0 to MAX_LEVEL.
MAX_LEVEL = 16
IMAGE_SIZE = 8


# Classes of the data set: the labels are 0..9.
NUM_CLASSES = 10


class DigitsDataset(Dataset):
    """One split: item ``i`` is (``levels[i]``, a (1, 8, 8) uint8 tensor of intensity levels,
    ``labels[i]``, an int), shifted by up to ``max_shift`` pixels in x and y with torch's
    random numbers (the loader seeds them per item), the border filled with zeros."""

    num_classes = NUM_CLASSES

    def __init__(self, levels: torch.Tensor, labels: np.ndarray, max_shift: int = 0) -> None:
        self.levels = levels
        self.labels = labels  # numpy: reading one label is not a read of a tensor
        self.max_shift = max_shift
        # The only generator an item draws from: the loader seeds nothing else.
        self.random_generators = ("torch",) if max_shift > 0 else ()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, int]:
        image = self.levels[index]
        if self.max_shift > 0:
            dy, dx = np.asarray(torch.randint(-self.max_shift, self.max_shift + 1, (2,)))
            image = shift_image(image, int(dy), int(dx), self.max_shift)
        return image, int(self.labels[index])


def shift_image(image: torch.Tensor, dy: int, dx: int, max_shift: int) -> torch.Tensor:
    """``image`` (C, H, W) translated by (dy, dx) pixels, the border filled with zeros."""
    height, width = image.shape[-2:]
    padded = torch.nn.functional.pad(image, (max_shift,) * 4)
    top, left = max_shift - dy, max_shift - dx
    return padded[:, top:top + height, left:left + width]


def num_test_images(num_images: int, test_fraction: float) -> int:
    """Held-out images of a split: ceil(fraction * N)."""
    return math.ceil(test_fraction * num_images)


def digits_file() -> str:
    """Path of ``digits.csv.gz`` inside the installed scikit-learn.

    Found without importing scikit-learn: the import takes longer than a short training run,
    and ``sklearn.datasets.load_digits`` only reads this file (tests check both agree).
    Raises FileNotFoundError when scikit-learn or the file is missing.
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "scikit-learn is not installed; it ships the digits (see requirements.txt)"
        )
    path = os.path.join(spec.submodule_search_locations[0], "datasets", "data", "digits.csv.gz")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"the digits data set is not where scikit-learn keeps it: {path}")
    return path


def load_digits_arrays() -> Tuple[np.ndarray, np.ndarray]:
    """All digits: levels (1797, 1, 8, 8) uint8 and labels (1797,) int64, in file order."""
    with gzip.open(digits_file(), "rt") as f:
        table = np.loadtxt(f, delimiter=",")  # 64 pixel levels, then the label, per row
    levels = table[:, :-1].astype(np.uint8).reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE)
    return levels, table[:, -1].astype(np.int64)


def split_indices(num_images: int, test_fraction: float, split_seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """(train, test) indices: a permutation seeded by ``split_seed`` holds out its first
    ceil(fraction * N) images; each split keeps the file order."""
    order = np.random.default_rng(split_seed).permutation(num_images)
    num_test = num_test_images(num_images, test_fraction)
    return np.sort(order[num_test:]), np.sort(order[:num_test])


def load_digits_split(test_fraction: float, split_seed: int,
                      max_shift: int = 0) -> Tuple[DigitsDataset, DigitsDataset]:
    """(train, test) splits of the digits (``split_indices``); the training split shifts its
    images by up to ``max_shift`` pixels, the held-out one never."""
    levels, labels = load_digits_arrays()
    train_index, test_index = split_indices(len(labels), test_fraction, split_seed)
    return (DigitsDataset(torch.from_numpy(levels[train_index]), labels[train_index], max_shift),
            DigitsDataset(torch.from_numpy(levels[test_index]), labels[test_index]))
