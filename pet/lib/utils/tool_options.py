"""What the user tools share beyond ``--cfg`` and the overrides (``pet.lib.config.cli``): the
checks train_net runs, and ``--iter-per-epoch`` for tools that run no data loader."""
import argparse
from typing import Optional

from yacs.config import CfgNode

from pet.lib.config.validate_job import validate_cfg


def positive_int(text: str) -> int:
    """argparse type: an integer > 0."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected an integer > 0, got {text!r}")
    return value


def add_iter_per_epoch_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--iter-per-epoch N``, which replaces the data set's count when epoch-based keys
    are converted to iterations (a what-if for another data set size or batch size)."""
    parser.add_argument(
        "--iter-per-epoch", type=positive_int, default=None, metavar="N",
        help="iterations (optimizer steps) per epoch; default: the configured data set's",
    )


def validate_job(cfg: CfgNode, iter_per_epoch: Optional[int] = None) -> int:
    """Run every check train_net runs on ``cfg`` (``validate_cfg``) and return the iterations
    per epoch to convert the schedule with: ``iter_per_epoch`` when given, else the data set's.

    Raises ConfigError on the first bad key.
    """
    data_iter_per_epoch = validate_cfg(cfg)
    return data_iter_per_epoch if iter_per_epoch is None else iter_per_epoch
