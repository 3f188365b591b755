"""The command line shared by every tool: ``--cfg FILE [KEY VALUE ...]`` and exit status 2 on a
bad config."""
import argparse
import contextlib
import importlib
import os
import sys
from typing import Iterator, Optional, Sequence

from yacs.config import CfgNode

from pet.lib.config.errors import ConfigError
from pet.lib.config.loader import load_cfg

EXIT_BAD_CONFIG = 2


def build_parser(description: str) -> argparse.ArgumentParser:
    """A parser with ``--cfg`` and trailing ``KEY VALUE`` overrides; tools add their own flags."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--cfg", dest="cfg_file", required=True, metavar="FILE",
                        help="YAML config file merged over the defaults")
    parser.add_argument("opts", nargs="*", metavar="KEY VALUE",
                        help="config overrides, e.g. SOLVER.OPTIMIZER.BASE_LR 0.05")
    return parser


@contextlib.contextmanager
def exit_on_config_error() -> Iterator[None]:
    """Turn a ConfigError into one line on stderr and exit status 2 (no traceback). Under
    torchrun every process exits 2 and only rank 0 prints, so a job shows the line once."""
    try:
        yield
    except ConfigError as e:
        if os.environ.get("RANK", "0") == "0":
            print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_BAD_CONFIG)


def parse_cfg(parser: argparse.ArgumentParser,
              argv: Optional[Sequence[str]] = None) -> "tuple[argparse.Namespace, CfgNode]":
    """Parse ``argv`` and return (args, merged config); exits 2 on a bad file, key or value.

    Flags may stand before, between or after the overrides (``KEY VALUE --resume``).
    """
    args = parser.parse_intermixed_args(argv)
    with exit_on_config_error():
        cfg = load_cfg(args.cfg_file, args.opts)
        import_custom_modules(cfg)
    return args, cfg


def import_custom_modules(cfg: CfgNode) -> None:
    """Import every module of ``cfg.CUSTOM_IMPORTS`` (their registrations then exist when the
    config is validated); ConfigError naming the module and why it failed."""
    for name in cfg.CUSTOM_IMPORTS:
        if not (isinstance(name, str) and name):
            raise ConfigError(f"CUSTOM_IMPORTS: expected a list of module names, got {cfg.CUSTOM_IMPORTS!r}")
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001  (any failure of the user's module is one line)
            first_line = (str(e).splitlines() or [""])[0]
            raise ConfigError(f"CUSTOM_IMPORTS: cannot import {name!r} ({type(e).__name__}: "
                              f"{first_line}); allowed: modules importable from sys.path "
                              f"(set PYTHONPATH)") from None


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

