"""Tests of pet/data's loader: the batch plan, items with their own random state in any worker,
exact resume, and each kind of bad item (real DataLoader workers)."""
import os
import random
import signal

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from pet.data import BatchPlan, DataItemError, EvalLoader, TrainLoader, auto_num_workers, is_worker_failure
from pet.data.items import item_seed


class Augmented(Dataset):
    """Item i: its index with noise from torch, numpy and random, as an augmenting Dataset."""

    num_classes = 5

    def __init__(self, size=50):
        self.size = size

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        noise = torch.rand(3) + float(np.random.rand()) + random.random()
        return torch.full((3,), float(index)) + noise, index % 5


def batches(loader, start, stop):
    return [[(m.inputs, m.labels, m.weight) for m in step] for step in loader.iterate(start, stop)]


def same(a, b):
    return len(a) == len(b) and all(
        len(x) == len(y) and all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) and p[2] == q[2]
                                 for p, q in zip(x, y)) for x, y in zip(a, b))


@pytest.mark.parametrize("world_size,k", [(1, 1), (1, 4), (2, 2), (4, 1), (3, 2)])
def test_micro_batches_of_every_process_make_up_the_batch(world_size, k):
    plans = [BatchPlan(1437, 32, drop_last=False, seed=5, rank=rank, world_size=world_size,
                       accumulation_steps=k) for rank in range(world_size)]
    for iteration in (0, 7, plans[0].iter_per_epoch - 1):  # the last batch holds 29 items
        picked = plans[0].global_batch(iteration)
        parts = [part for plan in plans for part in plan.micro_batches(iteration)]
        assert [i for keys, _ in parts for _, i in keys] == picked.tolist()
        assert all(len(plan.micro_batches(iteration)) == k for plan in plans)
        weights = [weight for plan in plans for weight in plan.weights(iteration)]
        assert weights == [weight for _, weight in parts]
        # The weighted mean of the parts' means is the whole batch's mean.
        values = picked.astype(np.float64)
        means = [np.mean([i for _, i in keys]) for keys, _ in parts]
        assert np.dot(weights, means) / len(parts) == pytest.approx(values.mean())
        if len(picked) % (world_size * k) == 0:
            assert set(weights) == {1.0}


def test_every_item_is_read_once_per_epoch_over_the_processes():
    plans = [BatchPlan(103, 10, drop_last=False, seed=1, rank=rank, world_size=2) for rank in range(2)]
    for epoch in range(2):
        iterations = range(epoch * 11, (epoch + 1) * 11)
        shards = [[i for it in iterations for keys, _ in plan.micro_batches(it) for e, i in keys]
                  for plan in plans]
        assert sorted(shards[0] + shards[1]) == list(range(103))
        assert not set(shards[0]) & set(shards[1])
    assert plans[0].global_batch(0).tolist() != plans[0].global_batch(11).tolist()  # reshuffled


def test_the_plan_is_a_pure_function_of_seed_and_iteration():
    first, second = BatchPlan(1437, 32, True, seed=3), BatchPlan(1437, 32, True, seed=3)
    for iteration in (100, 5, 44, 100):  # a fresh plan (a resume) asked for iteration 100 first
        assert first.micro_batches(iteration) == second.micro_batches(iteration)
    assert first.position(100) == (2, 12)
    assert BatchPlan(1437, 32, True, seed=4).global_batch(0).tolist() != first.global_batch(0).tolist()


def test_item_seeds_differ_by_seed_epoch_and_index():
    seeds = {item_seed(s, e, i) for s in range(3) for e in range(-1, 3) for i in range(50)}
    assert len(seeds) == 3 * 4 * 50 and all(0 <= s < 2 ** 64 for s in seeds)


def test_a_batch_is_the_same_for_any_worker_count_and_any_resume_point():
    plan = lambda: BatchPlan(50, 8, drop_last=False, seed=7, accumulation_steps=2)  # noqa: E731
    whole = batches(TrainLoader(Augmented(), plan(), seed=7), 0, 20)
    assert not same(whole[:1], whole[7:8])
    two_workers = TrainLoader(Augmented(), plan(), seed=7, num_workers=2, prefetch_factor=3)
    assert same(batches(two_workers, 0, 20), whole)
    # Resumed mid-epoch (epoch 0 has 7 iterations), in another worker count: the same batches.
    assert same(batches(TrainLoader(Augmented(), plan(), seed=7, num_workers=1), 4, 20), whole[4:])
    assert same(batches(two_workers, 13, 20), whole[13:])
    other_seed = batches(TrainLoader(Augmented(), plan(), seed=8), 0, 1)
    assert not same(other_seed, whole[:1])


def test_reading_in_the_training_process_leaves_its_random_state_alone():
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    expected = (torch.rand(2), np.random.rand(), random.random())
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    batches(TrainLoader(Augmented(), BatchPlan(50, 8, True, seed=1), seed=1), 0, 3)
    assert torch.equal(torch.rand(2), expected[0])
    assert (np.random.rand(), random.random()) == expected[1:]


def test_evaluation_reads_the_held_out_items_in_order_in_any_worker_count():
    in_process = [labels for _, labels in EvalLoader(Augmented(23), batch_size=5)]
    assert torch.cat(in_process).tolist() == [i % 5 for i in range(23)]
    loader = EvalLoader(Augmented(23), batch_size=5, num_workers=2)
    for _ in range(2):  # the persistent workers serve every evaluation
        assert [x.tolist() for x, _ in loader] == [x.tolist() for x, _ in EvalLoader(Augmented(23), 5)]
    loader.close()


class Bad(Dataset):
    """Item 13 is broken in the way ``kind`` says."""

    def __init__(self, kind):
        self.kind = kind

    def __len__(self):
        return 40

    def __getitem__(self, index):
        if index == 13:
            if self.kind == "raises":
                raise OSError(f"cannot decode /data/{index}.png\nsecond line")
            if self.kind == "shape":
                return torch.zeros(4), 0
            if self.kind == "label":
                return torch.zeros(3), 7
            if self.kind == "not a pair":
                return torch.zeros(3)
        return torch.zeros(3), index % 3


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("kind, message", [
    ("raises", r"^data item 13 raised OSError: cannot decode /data/13.png in {where}$"),
    ("shape", r"^data item 13 has shape \[\(\(4,\), float32\), 'int'\] where the other items of its batch have "
              r"\[\(\(3,\), float32\), 'int'\]; a batch stacks its items: make every item the same shape in {where}$"),
    ("label", r"^data item 13 has label 7, outside MODEL.NUM_CLASSES=3 \(allowed: 0..2\) in {where}$"),
    ("not a pair", r"^data item 13 is a Tensor; expected \(input, label\) in {where}$"),
])
def test_a_bad_item_is_one_line_naming_the_item_and_the_worker(kind, message, workers):
    where = "the training process" if workers == 0 else r"DataLoader worker [01]"
    loader = TrainLoader(Bad(kind), BatchPlan(40, 40, True, seed=0), seed=0, num_workers=workers,
                         num_classes=3)
    with pytest.raises(DataItemError, match=message.format(where=where)):
        batches(loader, 0, 1)
    loader.close()


class Slow(Dataset):
    def __len__(self):
        return 10 ** 6

    def __getitem__(self, index):
        return torch.tensor([os.getpid()]), 0


def test_a_worker_killed_by_the_os_is_reported_without_a_hang():
    loader = TrainLoader(Slow(), BatchPlan(10 ** 6, 4, True, seed=0), seed=0, num_workers=2)
    steps = loader.iterate(0, 10 ** 5)
    worker = int(next(steps)[0].inputs[0])
    os.kill(worker, signal.SIGKILL)
    with pytest.raises(RuntimeError) as caught:
        for _ in range(10 ** 5):
            next(steps)
    assert is_worker_failure(caught.value) and str(worker) in str(caught.value)
    loader.close()


def test_closing_the_loader_ends_its_workers():
    loader = TrainLoader(Slow(), BatchPlan(10 ** 6, 4, True, seed=0), seed=0, num_workers=2)
    steps = loader.iterate(0, 100)
    pids = {int(next(steps)[0].inputs[0]) for _ in range(6)}
    assert len(pids) == 2
    loader.close()
    for pid in pids:
        with pytest.raises(OSError):
            os.kill(pid, 0)  # gone (joined: not even a zombie)


def test_tensor_class_labels_are_checked_too():
    data = TensorDataset(torch.zeros(8, 2), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3]))
    loader = TrainLoader(data, BatchPlan(8, 8, True, seed=0), seed=0, num_classes=3)
    with pytest.raises(DataItemError, match=r"^data item 3 has label 3, outside MODEL.NUM_CLASSES=3"):
        batches(loader, 0, 1)


def test_the_automatic_worker_count_leaves_the_training_process_its_cpus():
    cpus = len(os.sched_getaffinity(0))
    assert auto_num_workers("cuda", 1) == max(0, min(4, cpus - 1))  # a GPU's feeder needs one CPU
    assert auto_num_workers("cpu", 1) == min(4, cpus // 4)  # CPU training computes on the rest
    assert auto_num_workers("cuda", cpus) == 0  # one CPU per process: read in the process


class TorchOnly(Augmented):
    random_generators = ("torch",)


def test_a_data_set_may_declare_the_only_generators_it_draws_from():
    plan = lambda: BatchPlan(50, 8, drop_last=True, seed=2)  # noqa: E731
    # The numpy and random parts of Augmented's noise are now whatever the process's state is:
    np.random.seed(0)
    random.seed(0)
    first = batches(TrainLoader(TorchOnly(), plan(), seed=2), 0, 1)
    second = batches(TrainLoader(TorchOnly(), plan(), seed=2), 0, 1)
    assert not same(first, second)  # numpy and random were not seeded per item (nor restored)
    np.random.seed(0)
    random.seed(0)
    assert same(batches(TrainLoader(TorchOnly(), plan(), seed=2), 0, 1), first)
    assert same(batches(TrainLoader(Augmented(), plan(), seed=2), 0, 1),
                batches(TrainLoader(Augmented(), plan(), seed=2), 0, 1))  # all three seeded
