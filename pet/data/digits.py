"""The 8x8 handwritten digits that ship inside scikit-learn, split into train and held-out sets.

Images are kept as integer intensity levels 0..16 (the data set's own encoding); each model
decides how to read them (the CNN scales them to [0, 1], the transformer embeds each level).
"""
import math
from dataclasses import dataclass

import torch

# Images in each data set, so that iterations per epoch are known without loading anything.
NUM_IMAGES = {"digits": 1797}
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
    """Held-out images of a split: ceil(fraction * N), as scikit-learn's train_test_split."""
    return math.ceil(test_fraction * num_images)


def num_train_images(data_cfg) -> int:
    """Training images for the ``DATA`` config, by arithmetic (nothing is loaded)."""
    total = NUM_IMAGES[data_cfg.DATASET]
    return total - num_test_images(total, data_cfg.TEST_FRACTION)


def load_digits_split(test_fraction: float, split_seed: int) -> "tuple[ImageSplit, ImageSplit]":
    """(train, test) splits of the digits, stratified by class and fixed by ``split_seed``."""
    # Imported here: scikit-learn is slow to import and only needed once the job really runs.
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    levels = digits.images.astype("uint8").reshape(-1, 1, IMAGE_SIZE, IMAGE_SIZE)
    train_levels, test_levels, train_labels, test_labels = train_test_split(
        levels,
        digits.target,
        test_size=test_fraction,
        random_state=split_seed,
        stratify=digits.target,
    )
    return (
        ImageSplit(torch.from_numpy(train_levels), torch.from_numpy(train_labels).long()),
        ImageSplit(torch.from_numpy(test_levels), torch.from_numpy(test_labels).long()),
    )
