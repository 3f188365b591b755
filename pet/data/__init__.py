"""The data of the default job: the data sets a config may name and a resumable loader."""
from typing import Tuple

from yacs.config import CfgNode

from pet.data.digits import MAX_LEVEL, ImageSplit
from pet.data.loader import TrainLoader, batches_per_epoch, eval_batches
from pet.data.registry import DATASETS, DatasetInfo, num_train_images


def iter_per_epoch(cfg: CfgNode) -> int:
    """Iterations per epoch of the training loader for ``cfg`` (arithmetic; loads nothing)."""
    return batches_per_epoch(num_train_images(cfg.DATA), cfg.DATA.BATCH_SIZE, cfg.DATA.DROP_LAST)


def build_datasets(cfg: CfgNode) -> Tuple[ImageSplit, ImageSplit]:
    """(train, test) splits of ``cfg.DATA.DATASET``; ConfigError for an unknown name."""
    name = DATASETS.check(cfg.DATA.DATASET, "DATA.DATASET")
    return DATASETS.get(name).load(cfg.DATA)


def build_train_loader(cfg: CfgNode, train_split: ImageSplit) -> TrainLoader:
    """The seeded, resumable training loader of ``cfg``."""
    return TrainLoader(
        train_split,
        batch_size=cfg.DATA.BATCH_SIZE,
        drop_last=cfg.DATA.DROP_LAST,
        seed=cfg.SEED,
        max_shift=cfg.DATA.MAX_SHIFT,
    )


__all__ = [
    "DATASETS",
    "MAX_LEVEL",
    "DatasetInfo",
    "ImageSplit",
    "TrainLoader",
    "build_datasets",
    "build_train_loader",
    "eval_batches",
    "iter_per_epoch",
    "num_train_images",
]
