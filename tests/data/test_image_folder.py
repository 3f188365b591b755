"""The "your own data on disk" example: tools/write_image_folder.py writes the digits as PGM files
in ImageFolder layout, cfgs/image_folder.py reads them back as the torch Dataset "digits_folder"
(cfgs/digits_folder_cnn.yaml)."""
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cfgs.image_folder import ImageFolder, build_digits_folder, decode_pgm
from pet.data import build_datasets
from pet.data.digits import load_digits_arrays, split_indices
from pet.data.items import SeededItems
from pet.engine.job import validate_job
from pet.lib.config import load_cfg
from pet.lib.config.cli import import_custom_modules
from pet.lib.config.errors import ConfigError
import tools.write_image_folder as write_tool

REPO = Path(__file__).resolve().parents[2]
PGM_HEADER = b"P5\n8 8\n16\n"


@pytest.fixture(scope="module")
def digits():
    return load_digits_arrays()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits") / "folder"
    write_tool.write_image_folder(str(root), 0.2, 0)
    return root


def in_item_order(indices, labels):
    """The digits' ``indices`` in an ImageFolder's order: by label, then by file name."""
    return sorted(indices, key=lambda index: (labels[index], index))


def test_the_tool_writes_one_file_per_image_in_image_folder_layout(folder, digits):
    _, labels = digits
    assert sorted(os.listdir(folder)) == ["test", "train"]
    written = 0
    for split, indices in zip(("train", "test"), split_indices(len(labels), 0.2, 0)):
        files = sorted(p.relative_to(folder / split).as_posix() for p in (folder / split).rglob("*") if p.is_file())
        assert files == sorted(f"{labels[i]}/{i:04d}.pgm" for i in indices)
        written += len(files)
    assert written == 1797


def test_the_files_decode_to_exactly_the_digits_levels(folder, digits):
    levels, labels = digits
    for path in folder.rglob("*.pgm"):
        raw = path.read_bytes()
        assert raw.startswith(PGM_HEADER) and len(raw) == len(PGM_HEADER) + 64
        decoded, max_level = decode_pgm(raw, str(path))
        index = int(path.stem)
        assert max_level == 16 and int(path.parent.name) == labels[index]
        assert np.array_equal(decoded, levels[index, 0])


def test_the_held_out_items_are_the_digits_unaugmented(folder, digits):
    levels, labels = digits
    _, test_index = split_indices(len(labels), 0.2, 0)
    test = ImageFolder(str(folder), "test", max_shift=3)  # max_shift is the training split's only
    assert len(test) == 360 and test.num_classes == 10 and not test.augment
    torch.manual_seed(0)
    for position, index in enumerate(in_item_order(test_index, labels)):
        image, label = test[position]
        assert image.dtype == torch.uint8 and image.shape == (1, 8, 8) and type(label) is int
        assert torch.equal(image, torch.from_numpy(levels[index])) and label == labels[index]


def training_images(train, torch_seed, numpy_seed, random_seed):
    torch.manual_seed(torch_seed)
    np.random.seed(numpy_seed)
    random.seed(random_seed)
    return torch.stack([train[i][0] for i in range(len(train))])


def test_the_training_augmentation_is_fixed_by_the_three_seeds_and_uses_each(folder, digits):
    levels, labels = digits
    train_index, _ = split_indices(len(labels), 0.2, 0)
    train = ImageFolder(str(folder), "train", max_shift=1)
    assert train.augment and len(train) == 1437
    original = torch.from_numpy(levels[in_item_order(train_index, labels)])
    first = training_images(train, 1, 2, 3)
    assert torch.equal(first, training_images(train, 1, 2, 3))
    assert first.dtype == torch.uint8 and first.shape == original.shape and int(first.max()) <= 16
    assert not torch.equal(first, original)
    # Each generator decides part of the augmentation: another seed of any one of them changes it.
    for seeds in ((7, 2, 3), (1, 7, 3), (1, 2, 7)):
        assert not torch.equal(first, training_images(train, *seeds)), seeds
    assert [train[i][1] for i in range(len(train))] == [int(labels[i]) for i in in_item_order(train_index, labels)]


def test_the_loaders_per_item_seeding_makes_the_augmentation_reproducible(folder):
    train = ImageFolder(str(folder), "train", max_shift=1)
    keys = [(epoch, index) for epoch in (0, 1) for index in range(0, 1437, 7)]

    def images(seed):
        _, items = SeededItems(train, seed).__getitems__(keys)
        return torch.stack([image for image, _ in items])

    assert torch.equal(images(0), images(0))
    assert not torch.equal(images(0), images(1))


@pytest.mark.parametrize("content, fragment", [
    (b"", "expected the magic 'P5'"),
    (b"P2\n8 8\n16\n" + b"0 " * 64, "expected the magic 'P5'"),
    (b"P5\n8\n16\n" + bytes(64), "no maxval"),
    (b"P5\n8 8\n16" + bytes(64), "no whitespace after maxval"),
    (b"P5\n8 8\n65535\n" + bytes(128), "maxval 65535"),
    (PGM_HEADER + bytes(63), "holds 64 pixel bytes, this file 63"),
    (PGM_HEADER + bytes(65), "holds 64 pixel bytes, this file 65"),
    (PGM_HEADER + bytes(63) + b"\x11", "level 17 is above the file's maxval 16"),
], ids=["empty", "ascii_pgm", "short_header", "no_separator", "16_bit", "truncated", "too_long", "above_maxval"])
def test_a_corrupt_file_raises_value_error_naming_it(tmp_path, content, fragment):
    path = tmp_path / "test" / "3" / "0001.pgm"
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    data_set = ImageFolder(str(tmp_path), "test")  # files are found at construction, read per item
    with pytest.raises(ValueError) as raised:
        data_set[0]
    assert str(raised.value).startswith(f"{path}: ") and fragment in str(raised.value)


def test_a_header_may_hold_comments(tmp_path):
    raw = b"P5 # written by hand\n8\t8 # size\n16\r" + bytes(range(16)) * 4
    levels, max_level = decode_pgm(raw, "x.pgm")
    assert max_level == 16 and levels.shape == (8, 8) and levels[0].tolist() == list(range(8))


def test_a_class_folder_must_be_named_by_its_label(tmp_path):
    (tmp_path / "train" / "seven").mkdir(parents=True)
    with pytest.raises(ValueError, match="seven: a class folder must be named by its label"):
        ImageFolder(str(tmp_path), "train")
    (tmp_path / "test").mkdir()
    with pytest.raises(FileNotFoundError, match="no <label>/\\*.pgm files"):
        ImageFolder(str(tmp_path), "test")


def data_config(**keys):
    cfg = load_cfg(str(REPO / "cfgs" / "digits_folder_cnn.yaml"))
    for key, value in keys.items():
        cfg.DATA[key] = value
    return cfg


def test_the_shipped_config_trains_on_the_folder(folder):
    cfg = data_config(ROOT=str(folder))
    import_custom_modules(cfg)
    assert validate_job(cfg) == 44  # 1437 training images, 32 a batch, the last one dropped
    train, test = build_datasets(cfg.DATA)
    assert isinstance(train, ImageFolder) and (len(train), len(test), train.max_shift) == (1437, 360, 1)


@pytest.mark.parametrize("root, message", [
    ("", "DATA.ROOT is empty; give a folder with train/ and test/, as python tools/write_image_folder.py DIR writes"),
    ("missing", "DATA.ROOT missing: no train/ folder; write one with python tools/write_image_folder.py DIR"),
    ("only_train", "DATA.ROOT only_train: no test/ folder; write one with python tools/write_image_folder.py DIR"),
])
def test_the_data_set_needs_a_root_with_train_and_test(tmp_path, monkeypatch, root, message):
    monkeypatch.chdir(tmp_path)  # DATA.ROOT is relative to the working directory
    (tmp_path / "only_train" / "train" / "0").mkdir(parents=True)
    data = data_config(ROOT=root).DATA
    with pytest.raises(FileNotFoundError) as raised:
        build_digits_folder(data)
    assert str(raised.value) == message
    import_custom_modules(data_config())
    with pytest.raises(ConfigError) as raised:
        build_datasets(data)
    assert str(raised.value) == f"DATA.DATASET: building 'digits_folder' failed (FileNotFoundError: {message})"


def bad_out_dir_line(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        write_tool.main(argv)
    assert exited.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: OUT_DIR ") and captured.out == "", captured
    return lines[0]


def test_bad_out_dirs_exit_2_with_one_line_and_leave_nothing(tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    (tmp_path / "a_file").write_text("mine")
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    cases = [
        ("full", "exists and is not empty; give a new or empty directory"),
        ("a_file", "is a file; give a new or empty directory"),
        ("a_file/below/out", f"cannot be created ({tmp_path / 'a_file'} is a file); give a new or empty directory"),
    ]
    for out_dir, fragment in cases:
        line = bad_out_dir_line([str(tmp_path / out_dir)], capsys)
        assert line == f"error: OUT_DIR {tmp_path / out_dir}: {fragment}"
        assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == before


def test_a_write_that_fails_midway_leaves_nothing(tmp_path, capsys, monkeypatch):
    calls = []

    def disk_full(levels, max_level=16):
        calls.append(1)
        if len(calls) > 100:
            raise OSError(28, "No space left on device")
        return PGM_HEADER + levels.astype(np.uint8).tobytes()

    monkeypatch.setattr(write_tool, "pgm_bytes", disk_full)
    out_dir = tmp_path / "new" / "parents" / "out"
    line = bad_out_dir_line([str(out_dir)], capsys)
    assert line == f"error: OUT_DIR {out_dir}: cannot be written ([Errno 28] No space left on device)"
    assert list(tmp_path.iterdir()) == []  # neither the hidden staging folder nor the parents it made


def test_an_empty_out_dir_is_filled(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    write_tool.main([str(tmp_path / "empty"), "--test-fraction", "0.5", "--split-seed", "3"])
    assert capsys.readouterr().out == f"wrote 1797 files to {tmp_path / 'empty'}: 898 under train/, 899 under test/\n"
    assert sorted(os.listdir(tmp_path)) == ["empty"]
    assert len(ImageFolder(str(tmp_path / "empty"), "test")) == 899


@pytest.mark.slow
def test_the_tool_runs_as_a_user_runs_it(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "tools" / "write_image_folder.py"), "datasets/digits_folder"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "wrote 1797 files to datasets/digits_folder: 1437 under train/, 360 under test/\n"
    assert result.stderr == ""
    out = tmp_path / "datasets" / "digits_folder"
    assert len(list(out.rglob("*.pgm"))) == 1797 and sorted(os.listdir(tmp_path / "datasets")) == ["digits_folder"]
    again = subprocess.run([sys.executable, str(REPO / "tools" / "write_image_folder.py"), "datasets/digits_folder"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and again.stdout == ""
    assert again.stderr == ("error: OUT_DIR datasets/digits_folder: exists and is not empty; "
                            "give a new or empty directory\n")
