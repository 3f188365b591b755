"""Tests of pet/data: the digits file, the split, the data contract and iter_per_epoch."""
import numpy as np
import pytest
import torch

from pet.data import DATASETS, build_datasets, build_train_loader, iter_per_epoch
from pet.data.digits import DigitsDataset, load_digits_arrays, shift_image
from pet.lib.config import get_cfg
from pet.lib.config.errors import ConfigError


@pytest.fixture(scope="module")
def splits():
    return build_datasets(get_cfg().DATA)


def test_the_digits_file_is_what_scikit_learn_loads():
    from sklearn.datasets import load_digits

    levels, labels = load_digits_arrays()
    digits = load_digits()
    assert np.array_equal(levels[:, 0], digits.images.astype(np.uint8))
    assert np.array_equal(labels, digits.target)


def test_split_is_disjoint_complete_and_fixed_by_the_split_seed(splits):
    train, test = splits
    assert isinstance(train, torch.utils.data.Dataset) and train.num_classes == 10
    assert (len(train), len(test)) == (1437, 360)
    image, label = train[0]
    assert image.dtype == torch.uint8 and image.shape == (1, 8, 8) and isinstance(label, int)
    assert int(train.levels.max()) == 16
    assert set(test.labels.tolist()) == set(range(10))
    cfg = get_cfg()
    cfg.DATA.SPLIT_SEED = 1
    assert not np.array_equal(build_datasets(cfg.DATA)[1].labels, test.labels)
    again_train, again_test = build_datasets(get_cfg().DATA)
    assert torch.equal(test.levels, again_test.levels) and np.array_equal(train.labels, again_train.labels)
    everything = torch.cat([train.levels, test.levels]).flatten(1)
    assert len({tuple(row.tolist()) for row in everything}) >= 1790  # no image in both (few duplicates exist)


def test_a_data_set_is_built_once_per_data_config():
    data = get_cfg().DATA
    assert build_datasets(data) is build_datasets(data.clone())
    other = data.clone()
    other.MAX_SHIFT = 1
    assert build_datasets(other) is not build_datasets(data)


@pytest.mark.parametrize("batch_size, drop_last, fraction", [
    (32, True, 0.2), (32, False, 0.2), (1, True, 0.2), (100, False, 0.3), (1437, True, 0.2),
])
def test_iter_per_epoch_is_the_length_of_the_real_loader(batch_size, drop_last, fraction):
    cfg = get_cfg()
    cfg.DATA.BATCH_SIZE, cfg.DATA.DROP_LAST, cfg.DATA.TEST_FRACTION = batch_size, drop_last, fraction
    cfg.DATA.NUM_WORKERS = 0
    train, _ = build_datasets(cfg.DATA)
    loader = build_train_loader(cfg, train)
    assert iter_per_epoch(cfg) == len(loader)
    epoch = list(loader.iterate(0, len(loader)))
    last = epoch[-1][0].labels
    assert 0 < len(last) <= batch_size
    assert len(last) == batch_size or not drop_last
    assert sum(len(b[0].labels) for b in epoch) == (len(train) // batch_size * batch_size if drop_last else len(train))


def test_shift_moves_an_image_and_fills_with_zeros():
    image = torch.arange(64, dtype=torch.uint8).view(1, 8, 8)
    down = shift_image(image, 1, 0, max_shift=1)
    assert torch.equal(down[0, 1:], image[0, :-1]) and not down[0, 0].any()
    left = shift_image(image, 0, -1, max_shift=1)
    assert torch.equal(left[0, :, :-1], image[0, :, 1:]) and not left[0, :, -1].any()


def test_a_shifted_item_draws_its_shift_from_torch():
    levels = torch.arange(64, dtype=torch.uint8).view(1, 1, 8, 8)
    data = DigitsDataset(levels, np.array([3]), max_shift=2)
    torch.manual_seed(0)
    first = data[0][0]
    torch.manual_seed(0)
    assert torch.equal(data[0][0], first)
    assert any(not torch.equal(data[0][0], first) for _ in range(10))


class Raising:
    pass


class Declaring(list):
    random_generators = ("torch", "cuda")


@pytest.mark.parametrize("build, message", [
    (lambda data: 1 / 0, r"^DATA.DATASET: building 'broken' failed \(ZeroDivisionError: division by zero\)$"),
    (lambda data: [1, 2, 3], r"^DATA.DATASET: 'broken' built list; expected \(train, test\), two map-style"),
    (lambda data: (Raising(), []), r"^DATA.DATASET: the train split of 'broken' is a Raising; expected a map-style"),
    (lambda data: ([], [1]), r"^DATA.DATASET: the train split of 'broken' is empty$"),
    (lambda data: (Declaring([1]), []), r"^DATA.DATASET: the train split of 'broken' declares random_generators "
                                        r"\('torch', 'cuda'\); allowed: a tuple of torch, numpy, random$"),
])
def test_a_build_function_that_fails_is_one_config_error_naming_the_key(build, message):
    DATASETS.register(build, name="broken")
    try:
        cfg = get_cfg()
        cfg.DATA.DATASET = "broken"
        with pytest.raises(ConfigError, match=message):
            build_datasets(cfg.DATA)
    finally:
        DATASETS.unregister("broken")
