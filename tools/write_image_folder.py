#!/usr/bin/env python
"""Write scikit-learn's 8x8 digits to disk as image files, one file per image, in torchvision's
ImageFolder layout: the data of the "your own data on disk" example (cfgs/digits_folder_cnn.yaml).

    python tools/write_image_folder.py OUT_DIR [--test-fraction 0.2] [--split-seed 0]

Writes ``OUT_DIR/train/<label>/<index:04d>.pgm`` and ``OUT_DIR/test/<label>/<index:04d>.pgm``,
``index`` the image's row in the digits file, split as the built-in ``digits`` data set splits
them (``pet.data.digits.split_indices``). Each file is a binary PGM ("P5"), 8x8, maxval 16: the
digits' own intensity levels, unscaled. OUT_DIR must not exist or be an empty directory; missing
parents are made. Everything is written into a hidden sibling directory renamed into place at
the end, so an interrupted or failed run leaves no half-written folder. A bad argument, or a
folder that cannot be written, is one line on stderr and exit status 2.
"""
import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from pet.data.digits import MAX_LEVEL, load_digits_arrays, split_indices  # noqa: E402
from pet.lib.config.cli import exit_on_config_error  # noqa: E402
from pet.lib.config.errors import ConfigError, first_line  # noqa: E402


def pgm_bytes(levels: np.ndarray, max_level: int = MAX_LEVEL) -> bytes:
    """A binary PGM ("P5") of ``levels``, a (H, W) array of integers 0..``max_level`` (< 256,
    so one byte per pixel, rows top to bottom)."""
    height, width = levels.shape
    header = f"P5\n{width} {height}\n{max_level}\n".encode("ascii")
    return header + levels.astype(np.uint8).tobytes()


def check_out_dir(out_dir: str) -> None:
    """ConfigError unless ``out_dir`` is absent or an empty directory, and its nearest existing
    ancestor is a writable directory (where the missing parents and the folder can be made)."""
    if os.path.isdir(out_dir):
        if os.listdir(out_dir):
            raise ConfigError(f"OUT_DIR {out_dir}: exists and is not empty; give a new or empty directory")
    elif os.path.lexists(out_dir):
        raise ConfigError(f"OUT_DIR {out_dir}: is a file; give a new or empty directory")
    ancestor = os.path.dirname(os.path.abspath(out_dir))
    while not os.path.lexists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise ConfigError(f"OUT_DIR {out_dir}: cannot be created ({ancestor} is a file); "
                          f"give a new or empty directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ConfigError(f"OUT_DIR {out_dir}: cannot be created ({ancestor} is not writable); "
                          f"give a new or empty directory")


def write_split(folder: str, levels: np.ndarray, labels: np.ndarray, indices: np.ndarray) -> None:
    """One PGM per image of ``indices``: ``folder/<label>/<index:04d>.pgm``."""
    for label in np.unique(labels[indices]):
        os.makedirs(os.path.join(folder, str(label)))
    for index in indices:
        path = os.path.join(folder, str(labels[index]), f"{index:04d}.pgm")
        with open(path, "wb") as f:
            f.write(pgm_bytes(levels[index, 0]))


def write_image_folder(out_dir: str, test_fraction: float, split_seed: int) -> "tuple[int, int]":
    """Write the digits under ``out_dir`` (module docstring); return (train, test) file counts.

    Raises ConfigError for an ``out_dir`` that is not allowed or cannot be written; then
    nothing is left behind (not even the missing parents it made).
    """
    check_out_dir(out_dir)
    levels, labels = load_digits_arrays()
    train_index, test_index = split_indices(len(labels), test_fraction, split_seed)
    parent = os.path.dirname(os.path.abspath(out_dir))
    made = missing_parents(parent)
    staging = None
    try:
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(out_dir))}.", suffix=".tmp",
                                   dir=parent)
        write_split(os.path.join(staging, "train"), levels, labels, train_index)
        write_split(os.path.join(staging, "test"), levels, labels, test_index)
        # mkdtemp makes the folder 0700 (private); the data set is as readable as any new folder.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)
        # rename() replaces an empty directory in one step, so OUT_DIR is whole or absent.
        os.rename(staging, out_dir)
    except BaseException as e:  # an interrupt too: Ctrl-C leaves no hidden half-written folder
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        for folder in reversed(made):
            _remove_if_empty(folder)
        if isinstance(e, OSError):
            raise ConfigError(f"OUT_DIR {out_dir}: cannot be written ({first_line(e)})") from None
        raise
    return len(train_index), len(test_index)


def missing_parents(path: str) -> "list[str]":
    """The folders of ``path`` that do not exist yet, outermost first (made by this run)."""
    missing = []
    while not os.path.lexists(path):
        missing.append(path)
        path = os.path.dirname(path)
    return missing[::-1]


def _remove_if_empty(folder: str) -> None:
    try:
        os.rmdir(folder)
    except OSError:
        pass  # not empty (someone else wrote there meanwhile) or already gone: keep it


def fraction(text: str) -> float:
    """argparse type: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}")
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Write scikit-learn's digits as PGM files in ImageFolder layout (OUT_DIR/{train,test}/<label>/).")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="a new or empty directory")
    parser.add_argument("--test-fraction", type=fraction, default=0.2, metavar="F",
                        help="fraction of the images held out under test/, in (0, 1) (default: %(default)s)")
    parser.add_argument("--split-seed", type=int, default=0, metavar="N",
                        help="seed of the train/test split, as DATA.SPLIT_SEED (default: %(default)s)")
    args = parser.parse_args(argv)
    with exit_on_config_error():
        num_train, num_test = write_image_folder(args.out_dir, args.test_fraction, args.split_seed)
    print(f"wrote {num_train + num_test} files to {args.out_dir}: {num_train} under train/, "
          f"{num_test} under test/")


if __name__ == "__main__":
    main()
