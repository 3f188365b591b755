"""The data of the default job: the scikit-learn digits and a resumable training loader."""
from yacs.config import CfgNode

from pet.data.digits import MAX_LEVEL, NUM_IMAGES, ImageSplit, load_digits_split, num_train_images
from pet.data.loader import TrainLoader, batches_per_epoch, eval_batches
# One list of names, shared with the config validation so the two always agree.
from pet.lib.config.validate_job import DATASETS


def iter_per_epoch(cfg: CfgNode) -> int:
    """Iterations per epoch of the training loader for ``cfg`` (arithmetic; loads nothing)."""
    return batches_per_epoch(num_train_images(cfg.DATA), cfg.DATA.BATCH_SIZE, cfg.DATA.DROP_LAST)


def build_datasets(cfg: CfgNode) -> "tuple[ImageSplit, ImageSplit]":
    """(train, test) splits of ``cfg.DATA.DATASET``."""
    if cfg.DATA.DATASET != "digits":
        raise ValueError(
            f"DATA.DATASET: unknown data set {cfg.DATA.DATASET!r}; allowed: {', '.join(DATASETS)}"
        )
    return load_digits_split(cfg.DATA.TEST_FRACTION, cfg.DATA.SPLIT_SEED)


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
    "ImageSplit",
    "TrainLoader",
    "build_datasets",
    "build_train_loader",
    "eval_batches",
    "iter_per_epoch",
]
