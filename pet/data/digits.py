"""The 8x8 handwritten digits that ship inside scikit-learn, split into train and held-out sets.

Images are kept as integer intensity levels 0..16 (the data set's own encoding); each model
decides how to read them (the CNN scales them to [0, 1], the transformer embeds each level).
"""
import gzip
import importlib.util
import math
import os
from dataclasses import dataclass
from typing import Tuple

import numpy as np
import torch

# Images in the data set, so that iterations per epoch are known without loading anything.
NUM_IMAGES = 1797
# The digits' intensity levels run from 0 to MAX_LEVEL.
MAX_LEVEL = 16
IMAGE_SIZE = 8


@dataclass(frozen=True)
class ImageSplit:
    """One split: ``levels`` (N, 1, 8, 8) uint8 intensity levels, ``labels`` (N,) int64."""

    levels: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


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


def load_digits_split(test_fraction: float, split_seed: int) -> Tuple[ImageSplit, ImageSplit]:
    """(train, test) splits of the digits: a permutation seeded by ``split_seed`` holds out its
    first ceil(fraction * N) images; each split keeps the file order."""
    levels, labels = load_digits_arrays()
    order = np.random.default_rng(split_seed).permutation(len(labels))
    num_test = num_test_images(len(labels), test_fraction)
    test_index, train_index = np.sort(order[:num_test]), np.sort(order[num_test:])
    return (
        ImageSplit(torch.from_numpy(levels[train_index]), torch.from_numpy(labels[train_index])),
        ImageSplit(torch.from_numpy(levels[test_index]), torch.from_numpy(labels[test_index])),
    )
