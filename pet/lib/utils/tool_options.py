"""What the user tools share beyond ``--cfg`` and the overrides (``pet.lib.config.cli``):
``--iter-per-epoch`` for tools that run no data loader."""
import argparse


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

