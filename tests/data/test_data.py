"""Tests of pet/data: the digits file, the split, iter_per_epoch and the resumable loader."""
import numpy as np
import pytest
import torch

from pet.data import build_datasets, build_train_loader, eval_batches, iter_per_epoch
from pet.data.digits import load_digits_arrays
from pet.data.loader import TrainLoader, shift_images
from pet.lib.config import get_cfg


@pytest.fixture(scope="module")
def splits():
    return build_datasets(get_cfg())


def test_the_digits_file_is_what_scikit_learn_loads():
    from sklearn.datasets import load_digits

    levels, labels = load_digits_arrays()
    digits = load_digits()
    assert np.array_equal(levels[:, 0], digits.images.astype(np.uint8))
    assert np.array_equal(labels, digits.target)


def test_split_is_disjoint_complete_and_fixed_by_the_split_seed(splits):
    train, test = splits
    assert (len(train), len(test)) == (1437, 360)
    assert train.levels.dtype == torch.uint8 and train.levels.shape[1:] == (1, 8, 8)
    assert int(train.levels.max()) == 16
    assert set(test.labels.tolist()) == set(range(10))
    again_train, again_test = build_datasets(get_cfg())
    assert torch.equal(test.levels, again_test.levels) and torch.equal(train.labels, again_train.labels)
    cfg = get_cfg()
    cfg.DATA.SPLIT_SEED = 1
    assert not torch.equal(build_datasets(cfg)[1].labels, test.labels)
    everything = torch.cat([train.levels, test.levels]).flatten(1)
    assert len({tuple(row.tolist()) for row in everything}) >= 1790  # no image in both (few duplicates exist)


@pytest.mark.parametrize("batch_size, drop_last, fraction", [
    (32, True, 0.2), (32, False, 0.2), (1, True, 0.2), (100, False, 0.3), (1437, True, 0.2),
])
def test_iter_per_epoch_is_the_length_of_the_real_loader(batch_size, drop_last, fraction):
    cfg = get_cfg()
    cfg.DATA.BATCH_SIZE, cfg.DATA.DROP_LAST, cfg.DATA.TEST_FRACTION = batch_size, drop_last, fraction
    train, _ = build_datasets(cfg)
    loader = build_train_loader(cfg, train)
    assert iter_per_epoch(cfg) == len(loader)
    last = loader.batch(len(loader) - 1)[1]
    assert 0 < len(last) <= batch_size
    assert len(last) == batch_size or not drop_last


def test_an_epoch_visits_every_image_once(splits):
    train, _ = splits
    loader = TrainLoader(train, batch_size=100, drop_last=False, seed=0)
    seen = torch.cat([loader.batch(i)[1] for i in range(len(loader))])
    assert torch.equal(seen.sort().values, train.labels.sort().values)


def test_batches_are_a_pure_function_of_seed_and_iteration(splits):
    train, _ = splits
    first = TrainLoader(train, batch_size=32, drop_last=True, seed=3, max_shift=1)
    second = TrainLoader(train, batch_size=32, drop_last=True, seed=3, max_shift=1)
    # A fresh loader (as after a resume) asked for iteration 100 first gives the same batch.
    for iteration in (100, 5, 44, 100):
        assert all(torch.equal(a, b) for a, b in zip(first.batch(iteration), second.batch(iteration)))
    assert not torch.equal(first.batch(0)[1], first.batch(44)[1])  # epochs are reshuffled
    other_seed = TrainLoader(train, batch_size=32, drop_last=True, seed=4, max_shift=1)
    assert not torch.equal(first.batch(0)[1], other_seed.batch(0)[1])
    assert first.position(100) == (2, 12)


def test_shift_moves_images_and_fills_with_zeros():
    levels = torch.arange(64, dtype=torch.uint8).view(1, 1, 8, 8).repeat(2, 1, 1, 1)
    shifted = shift_images(levels, np.array([[1, 0], [0, -1]]), max_shift=1)
    assert torch.equal(shifted[0, 0, 1:], levels[0, 0, :-1]) and not shifted[0, 0, 0].any()
    assert torch.equal(shifted[1, 0, :, :-1], levels[1, 0, :, 1:]) and not shifted[1, 0, :, -1].any()


def test_eval_batches_cover_the_split_in_order(splits):
    _, test = splits
    labels = torch.cat([labels for _, labels in eval_batches(test, 100)])
    assert torch.equal(labels, test.labels)


@pytest.mark.parametrize("world_size,k", [(1, 1), (1, 4), (2, 2), (4, 1), (3, 2)])
def test_micro_batches_of_every_process_make_up_the_batch(world_size, k):
    train, _ = build_datasets(get_cfg())
    loader = TrainLoader(train, batch_size=32, drop_last=False, seed=5, max_shift=1)
    for iteration in (0, 7, len(loader) - 1):  # the last batch holds 29 images
        levels, labels = loader.batch(iteration)
        parts = [loader.micro_batches(iteration, rank, world_size, k) for rank in range(world_size)]
        assert all(len(p) == k for p in parts)
        flat = [m for p in parts for m in p]
        assert torch.equal(torch.cat([m.labels for m in flat]), labels)
        assert torch.equal(torch.cat([m.levels for m in flat]), levels)
        # The weighted mean of the parts' means is the whole batch's mean.
        values = labels.double()
        weighted = sum(m.weight * m.labels.double().mean() for m in flat) / len(flat)
        assert weighted.item() == pytest.approx(values.mean().item())
        if len(labels) % (world_size * k) == 0:
            assert {m.weight for m in flat} == {1.0}
