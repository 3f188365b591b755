"""The data sets a config may name in DATA.DATASET, and building them once.

The data contract (torch's, as detectron2, MMEngine and timm feed it): an entry is a function
``build(DATA config node) -> (train, test)`` returning two map-style
``torch.utils.data.Dataset``s (``__len__`` and ``__getitem__``) whose items are
``(input, label)``: ``input`` a tensor, or a tuple or dict of tensors the model takes
(``model(x)``, ``model(*x)``, ``model(**x)``), ``label`` an int or a tensor. A data set whose
labels are class indices may say how many classes it has (a ``num_classes`` attribute): the
job then checks MODEL.NUM_CLASSES before training. One whose items draw from fewer global
generators than torch's, numpy's and ``random`` may say which (``random_generators``, see
pet/data/items.py): the loader then seeds only those per item. Register your own with
``@DATASETS.register(name="x")`` in a CUSTOM_IMPORTS module.
"""
from typing import Any, Optional, Tuple

from torch.utils.data import Dataset
from yacs.config import CfgNode

from pet.data.digits import load_digits_split
from pet.data.items import declared_generators
from pet.lib.config.errors import ConfigError, first_line
from pet.lib.utils.registry import Registry

DATASETS = Registry("data set")


@DATASETS.register(name="digits")
def build_digits(data: CfgNode) -> Tuple[Dataset, Dataset]:
    """scikit-learn's 8x8 digits, DATA.TEST_FRACTION held out by DATA.SPLIT_SEED, the training
    images shifted by up to DATA.MAX_SHIFT pixels."""
    return load_digits_split(data.TEST_FRACTION, data.SPLIT_SEED, data.MAX_SHIFT)


# The last (key, datasets) built: a data set slow to build is built once per process, however
# many parts of the job ask (validation for its length, the run for its items).
_built: Optional[Tuple[str, Tuple[Dataset, Dataset]]] = None


def build_datasets(data: CfgNode) -> Tuple[Dataset, Dataset]:
    """(train, test) of DATA.DATASET, built once per DATA config; ConfigError naming
    DATA.DATASET when the name is unknown, the build function raises or returns something
    else than two non-empty map-style data sets."""
    global _built
    key = data.dump()
    if _built is not None and _built[0] == key:
        return _built[1]
    name = DATASETS.check(data.DATASET, "DATA.DATASET")
    try:
        splits = DATASETS.get(name)(data)
    except Exception as e:  # noqa: BLE001  (any failure of a user's build function is one line)
        raise ConfigError(f"DATA.DATASET: building {name!r} failed ({type(e).__name__}: "
                          f"{first_line(e)})") from None
    check_splits(name, splits)
    _built = (key, splits)
    return splits


def check_splits(name: str, splits: Any) -> None:
    """ConfigError unless ``splits`` is (train, test), each with a length, items by index and
    a valid ``random_generators`` if any, the training split not empty."""
    if not (isinstance(splits, (tuple, list)) and len(splits) == 2):
        raise ConfigError(f"DATA.DATASET: {name!r} built {type(splits).__name__}; expected "
                          f"(train, test), two map-style torch Datasets")
    for split, data_set in zip(("train", "test"), splits):
        if not (hasattr(data_set, "__len__") and hasattr(data_set, "__getitem__")):
            raise ConfigError(f"DATA.DATASET: the {split} split of {name!r} is a "
                              f"{type(data_set).__name__}; expected a map-style torch Dataset "
                              f"(__len__ and __getitem__)")
        try:
            declared_generators(data_set)
        except ValueError as e:
            raise ConfigError(f"DATA.DATASET: the {split} split of {name!r} declares {e}") from None
    if len(splits[0]) == 0:
        raise ConfigError(f"DATA.DATASET: the train split of {name!r} is empty")
