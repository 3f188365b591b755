"""The data sets a config may name in DATA.DATASET."""
from dataclasses import dataclass
from typing import Callable, Tuple

from yacs.config import CfgNode

from pet.data.digits import NUM_IMAGES, ImageSplit, load_digits_split, num_test_images
from pet.lib.utils.registry import Registry


@dataclass(frozen=True)
class DatasetInfo:
    """A registry entry: the number of images (iterations per epoch are known without loading
    anything) and ``load(DATA config) -> (train, test)``."""

    num_images: int
    load: Callable[[CfgNode], Tuple[ImageSplit, ImageSplit]]
    # Labels are 0 .. num_labels - 1 (MODEL.NUM_CLASSES must cover them); 0: not declared.
    num_labels: int = 0


DATASETS = Registry("data set")
DATASETS.register(DatasetInfo(
    num_images=NUM_IMAGES,
    load=lambda data: load_digits_split(data.TEST_FRACTION, data.SPLIT_SEED),
    num_labels=10,
), name="digits")


def num_train_images(data: CfgNode) -> int:
    """Training images for the ``DATA`` config, by arithmetic (nothing is loaded)."""
    total = DATASETS.get(data.DATASET).num_images
    return total - num_test_images(total, data.TEST_FRACTION)
