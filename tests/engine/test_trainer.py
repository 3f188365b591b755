"""Tests of pet/engine/trainer.py: the loop through the step seam against a hand-written loop."""
import copy
import math

import pytest
import torch
from torch import nn

from torch.utils.data import TensorDataset

from pet.data import BatchPlan, TrainLoader
from pet.engine.hooks import HookBase
from pet.engine.trainer import Trainer
from pet.lib.utils.optim_wrapper import OptimWrapper, OptimWrapperDict


def Batches(scale=1.0):
    """The real loader over 80 random 6-feature samples, 8 per iteration, read in the process."""
    gen = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(80, 6, generator=gen) * scale, torch.randint(0, 3, (80,), generator=gen))
    return TrainLoader(data, BatchPlan(80, batch_size=8, drop_last=True, seed=3), seed=3)


def batch(loader, iteration):
    """The whole batch of ``iteration``, indexed by hand from the plan."""
    picked = torch.from_numpy(loader.plan.global_batch(iteration))
    inputs, labels = loader.items.dataset.tensors
    return inputs[picked], labels[picked]


class Recorder(HookBase):
    def __init__(self):
        self.losses = []
        self.after_train_iter = None

    def after_step(self, storage):
        self.losses.append(storage.latest()["loss"])

    def after_train(self, storage):
        self.after_train_iter = storage.iter


def model_and_optimizer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 3))
    return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def test_the_loop_equals_a_hand_written_loop_bit_for_bit():
    model, optimizer = model_and_optimizer()
    reference = copy.deepcopy(model)
    reference_optimizer = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    recorder = Recorder()
    torch.manual_seed(5)  # dropout draws from the global RNG: both loops start from the same state
    Trainer(model, OptimWrapper(optimizer), Batches(), [recorder], start_iter=2, max_iter=7).train()

    torch.manual_seed(5)
    reference.train()
    losses = []
    for iteration in range(2, 7):
        levels, labels = batch(Batches(), iteration)
        loss = nn.functional.cross_entropy(reference(levels), labels)
        reference_optimizer.zero_grad()
        loss.backward()
        reference_optimizer.step()
        losses.append(loss.item())
    assert recorder.losses == losses
    assert recorder.after_train_iter == 7  # after_train hooks see the iterations done
    for a, b in zip(model.parameters(), reference.parameters()):
        assert torch.equal(a, b)


def test_a_non_finite_loss_stops_the_loop_naming_the_iteration():
    model, optimizer = model_and_optimizer()
    recorder = Recorder()
    trainer = Trainer(model, OptimWrapper(optimizer), Batches(scale=math.nan), [recorder], 3, 10)
    before = copy.deepcopy(model)
    with pytest.raises(FloatingPointError, match=r"^loss became nan at iteration 3; lower "
                                                 r"SOLVER.OPTIMIZER.BASE_LR"):
        trainer.train()
    assert recorder.losses == [] and recorder.after_train_iter is None
    for a, b in zip(model.parameters(), before.parameters()):
        assert torch.equal(a, b)


class TwoHeads(nn.Module):
    """Two submodules, each stepped by its own optimizer in ``train_step`` (MMEngine's protocol)."""

    def __init__(self):
        super().__init__()
        self.first, self.second = nn.Linear(6, 3), nn.Linear(6, 3)

    def train_step(self, batch, optim_wrappers):
        inputs, labels = batch
        losses = {}
        for name in ("first", "second"):
            losses[name] = nn.functional.cross_entropy(getattr(self, name)(inputs), labels)
            optim_wrappers[name].update_params(losses[name])
        return losses


def test_a_non_finite_step_of_one_of_several_optimizers_names_it_its_keys_and_the_iteration():
    model = TwoHeads()
    wrappers = OptimWrapperDict(**{name: OptimWrapper(torch.optim.SGD(getattr(model, name).parameters(), lr=0.1),
                                                      name=name) for name in ("first", "second")})
    trainer = Trainer(model, wrappers, Batches(scale=math.nan), [Recorder()], 3, 10)
    with pytest.raises(FloatingPointError, match=r"^the first optimizer's loss became nan at iteration 3; "
                                                 r"lower SOLVER.OPTIMIZERS.first.BASE_LR"):
        trainer.train()


class LRStepper(HookBase):
    """Steps a scheduler once per iteration, as train_net's LRScheduler hook does."""

    def __init__(self, scheduler):
        self.scheduler = scheduler

    def after_step(self, storage):
        self.scheduler.step()


def test_a_step_the_scaler_skips_is_counted_and_the_schedule_still_advances():
    model, optimizer = model_and_optimizer()
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    wrapper = OptimWrapper(optimizer, scaler=torch.amp.GradScaler("cpu"), autocast_dtype=torch.float16)
    recorder = Recorder()

    def loss_fn(logits, labels):  # iteration 4's batch overflows float16's range
        loss = nn.functional.cross_entropy(logits.float(), labels)
        return loss * 1e30 if recorder.losses and len(recorder.losses) == 4 else loss

    Trainer(model, wrapper, Batches(), [recorder, LRStepper(scheduler)], 0, 6, loss_fn=loss_fn).train()
    assert wrapper.skipped_steps == 1
    assert scheduler.last_epoch == 6
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 ** 6)


class NormRecorder(HookBase):
    def __init__(self):
        self.norms = []

    def after_step(self, storage):
        self.norms.append(storage.latest().get("grad_norm"))


def test_the_gradient_norm_is_measured_every_grad_norm_period_and_at_the_last_iteration():
    model, optimizer = model_and_optimizer()
    recorder = NormRecorder()
    Trainer(model, OptimWrapper(optimizer), Batches(), [recorder], 1, 8, log_period=3).train()
    # Iterations 1..7: 2 and 5 end a period of 3, 7 is the last.
    assert [norm is not None for norm in recorder.norms] == [False, True, False, False, True, False, True]
    assert all(norm > 0 for norm in recorder.norms if norm is not None)
