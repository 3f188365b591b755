"""The command line shared by every tool: ``--cfg FILE [KEY VALUE | KEY=VALUE ...]`` and exit
status 2 on a bad config."""
import argparse
import contextlib
import importlib
import os
import signal
import sys
import time
from typing import Iterator, List, Optional, Sequence

from yacs.config import CfgNode

from pet.lib.config.errors import ConfigError, first_line
from pet.lib.config.loader import CONFIG_KEY_PATTERN, load_cfg, split_overrides

EXIT_BAD_CONFIG = 2


def build_parser(description: str) -> argparse.ArgumentParser:
    """A parser with ``--cfg`` and trailing ``KEY VALUE`` overrides; tools add their own flags."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--cfg", dest="cfg_file", required=True, metavar="FILE",
                        help="YAML config file merged over the defaults")
    parser.add_argument("opts", nargs="*", metavar="KEY VALUE",
                        help="config overrides, e.g. SOLVER.OPTIMIZER.BASE_LR 0.05 or "
                             "SOLVER.OPTIMIZER.WEIGHT_DECAY=1e-4")
    return parser


def end_quietly_on_closed_pipe() -> None:
    """A report tool whose reader goes away (``| head``) ends as ``ls`` does, by SIGPIPE and
    without a traceback (Python ignores SIGPIPE and raises BrokenPipeError instead). For tools
    that only print: one that writes files must not stop half-way."""
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)


@contextlib.contextmanager
def exit_on_config_error() -> Iterator[None]:
    """Turn a ConfigError into one line on stderr and exit status 2 (no traceback). Under
    torchrun every process exits 2 and the first process of each machine prints (LOCAL_RANK 0),
    so each machine's console shows the line once."""
    try:
        yield
    except ConfigError as e:
        if os.environ.get("LOCAL_RANK", "0") == "0":  # once per machine of a torchrun job
            print(f"error: {e}", file=sys.stderr)
        else:
            # torchrun stops the other processes as soon as one exits: the silent ones leave a
            # moment later, so the one that prints is never stopped before its line.
            time.sleep(1.0)
        sys.exit(EXIT_BAD_CONFIG)


def parse_cfg(parser: argparse.ArgumentParser,
              argv: Optional[Sequence[str]] = None) -> "tuple[argparse.Namespace, CfgNode]":
    """Parse ``argv`` (default ``sys.argv[1:]``) and return (args, merged config), with
    ``args.opts`` as flat ``[KEY, VALUE, ...]`` pairs; exits 2 on a bad file, key or value.

    Flags may stand before, between or after the overrides (``KEY VALUE --resume``); an
    override is ``KEY VALUE`` or ``KEY=VALUE``, and its value may be negative (``KEY -1e-4``).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_intermixed_args(join_negative_values(argv))
    with exit_on_config_error():
        args.opts = split_overrides(args.opts)
        cfg = load_cfg(args.cfg_file, args.opts)
        import_custom_modules(cfg)
    return args, cfg


def join_negative_values(argv: Sequence[str]) -> List[str]:
    """``argv`` with each negative number that follows a config key joined to it as
    ``KEY=VALUE`` (``WEIGHT_DECAY -1e-4`` -> ``WEIGHT_DECAY=-1e-4``): argparse takes ``-1e-4``
    for an unknown flag, as any token that starts with ``-`` and is not ``-5`` or ``-.5``. A
    flag's own value (``--iter-per-epoch -5``) stays argparse's to judge."""
    joined: List[str] = []
    for token in argv:
        previous = joined[-1] if joined else ""
        if _is_negative_number(token) and CONFIG_KEY_PATTERN.fullmatch(previous):
            joined[-1] = f"{previous}={token}"
        else:
            joined.append(token)
    return joined


def _is_negative_number(token: str) -> bool:
    if not token.startswith("-"):
        return False
    try:
        float(token)
    except ValueError:
        return False
    return True


def import_custom_modules(cfg: CfgNode) -> None:
    """Import every module of ``cfg.CUSTOM_IMPORTS`` (their registrations then exist when the
    config is validated); ConfigError naming the module and why it failed."""
    for name in cfg.CUSTOM_IMPORTS:
        if not (isinstance(name, str) and name):
            raise ConfigError(f"CUSTOM_IMPORTS: expected a list of module names, got {cfg.CUSTOM_IMPORTS!r}")
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001  (any failure of the user's module is one line)
            raise ConfigError(f"CUSTOM_IMPORTS: cannot import {name!r} ({type(e).__name__}: "
                              f"{first_line(e)}); allowed: modules importable from sys.path "
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


def check_output_file(path: str, flag: str) -> None:
    """ConfigError (one line, exit 2 in the tools) when ``path``, given with ``flag``, cannot be
    written as a file: it is a directory, its directory does not exist or is not writable.
    Tools check their output paths before they compute anything."""
    if os.path.isdir(path):
        raise ConfigError(f"{flag} {path}: is a directory; give a file path")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ConfigError(f"{flag} {path}: no such directory {directory}")
    if not os.access(directory, os.W_OK):
        raise ConfigError(f"{flag} {path}: the directory {directory} is not writable")


@contextlib.contextmanager
def output_file_errors(path: str, flag: str):
    """Around a tool's write of ``path``: an OSError (a full disk, a file made unwritable
    meanwhile) becomes one ConfigError line naming the flag and the file."""
    try:
        yield
    except OSError as e:
        raise ConfigError(f"{flag} {path}: cannot be written ({first_line(e)})") from None


def add_iter_per_epoch_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--iter-per-epoch N``, which replaces the data set's count when epoch-based keys
    are converted to iterations (a what-if for another data set size or batch size)."""
    parser.add_argument(
        "--iter-per-epoch", type=positive_int, default=None, metavar="N",
        help="iterations (optimizer steps) per epoch; default: the configured data set's",
    )

