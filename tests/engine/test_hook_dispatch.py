"""Tests of pet/engine/hook_dispatch.py: a hook that declares its iterations is called there and at
the last one, any other hook at every iteration, all in list order."""
import io

import torch
from torch import nn
from torch.utils.data import TensorDataset

from pet.data import BatchPlan, TrainLoader
from pet.engine.checkpointer import Checkpointer
from pet.engine.ema import EMAHook, ModelEMA
from pet.engine.hook_dispatch import HookDispatch, next_period_end
from pet.engine.hooks import BestCheckpointer, EvalHook, HookBase, IterationTimer, MetricsWriter, PeriodicCheckpointer
from pet.engine.logger import ProgressBar
from pet.engine.process_metrics import AverageOverProcesses
from pet.engine.trainer import Trainer
from pet.lib.utils.optim_wrapper import OptimWrapper


class Calls(HookBase):
    """Records the iterations of its before_step and after_step calls (in ``log``, shared)."""

    def __init__(self, name, log, periods=None):
        self.name, self.log, self.periods = name, log, periods

    def step_periods(self):
        return self.periods

    def before_step(self, storage):
        self.log.append((self.name, "before", storage.iter))

    def after_step(self, storage):
        self.log.append((self.name, "after", storage.iter))


class Undeclared:
    """A hook written without HookBase (and so without step_periods): every iteration."""

    def __init__(self, log):
        self.log = log

    def before_train(self, storage):
        pass

    def after_train(self, storage):
        pass

    def before_step(self, storage):
        pass

    def after_step(self, storage):
        self.log.append(("plain", "after", storage.iter))


def iterations(log, name, when="after"):
    return [it for n, w, it in log if n == name and w == when]


def run_dispatch(hooks, start, stop, max_iter, order=None):
    """What the trainer's loop does with the dispatch's methods, at ``order`` (default: in turn)."""
    dispatch = HookDispatch(hooks, max_iter)
    storage = type("Storage", (), {})()
    for iteration in order or range(start, stop):
        storage.iter = iteration
        before, after = dispatch.calls(iteration)
        for call in before + after:
            call(storage)


def test_a_hook_with_a_period_is_called_on_its_iterations_and_the_last_one():
    log = []
    hooks = [Calls("every", log), Calls("third", log, (3,)), Calls("last", log, (0,)), Undeclared(log),
             Calls("two", log, (4, 6))]
    run_dispatch(hooks, 0, 14, max_iter=14)
    assert iterations(log, "every") == list(range(14))
    assert iterations(log, "plain") == list(range(14))
    assert iterations(log, "third") == [2, 5, 8, 11, 13]
    assert iterations(log, "third", "before") == [2, 5, 8, 11, 13]  # before_step alike
    assert iterations(log, "last") == [13]
    assert iterations(log, "two") == [3, 5, 7, 11, 13]
    # In list order within an iteration, before_steps first.
    assert [(n, w) for n, w, it in log if it == 5] == [
        ("every", "before"), ("third", "before"), ("two", "before"),
        ("every", "after"), ("third", "after"), ("plain", "after"), ("two", "after")]


def test_a_resumed_run_and_iterations_out_of_order_get_the_same_calls():
    log = []
    run_dispatch([Calls("third", log, (3,)), Calls("every", log)], 4, 10, max_iter=10)
    assert iterations(log, "third") == [5, 8, 9]
    log.clear()
    run_dispatch([Calls("third", log, (3,))], 0, 0, max_iter=10, order=[8, 2, 3, 5, 4, 9, 0])
    assert iterations(log, "third") == [8, 2, 5, 9]


def test_next_period_end():
    assert [next_period_end(i, 3) for i in range(7)] == [2, 2, 2, 5, 5, 5, 8]
    assert next_period_end(0, 1) == 0


def test_the_built_in_hooks_declare_what_they_act_on(tmp_path):
    eval_hook = EvalHook(lambda: {"accuracy": 1.0}, 5, 20, 10)
    assert eval_hook.step_periods() == (5,)
    assert IterationTimer(20, 0).step_periods() is None
    plain = ProgressBar(stream=io.StringIO())
    writer = MetricsWriter(str(tmp_path / "m.json"), 4, 20, IterationTimer(20, 0), progress_bar=plain, writers=[],
                           eval_period=5)
    assert writer.step_periods() == (4, 5)
    writer.eval_period = None  # an accuracy may come from any hook: every iteration
    assert writer.step_periods() is None
    plain.enabled = True  # a terminal's bar draws at any iteration
    writer.eval_period = 5
    assert writer.step_periods() is None
    assert AverageOverProcesses(4, 20, 5).step_periods() == (4, 5)
    assert AverageOverProcesses(4, 20).step_periods() is None
    model = nn.Linear(2, 2)
    checkpointer = Checkpointer(str(tmp_path), model=model)
    assert PeriodicCheckpointer(checkpointer, 7, 20).step_periods() == (7,)
    best = BestCheckpointer(checkpointer, eval_hook)
    assert best.step_periods() is None  # until before_train sets the best to beat
    best.before_train(None)
    assert best.step_periods() == (5,)
    assert EMAHook(model, ModelEMA(model, 0.9), every=3).step_periods() == (3,)


def test_the_trainer_calls_each_hook_at_its_iterations():
    gen = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(80, 6, generator=gen), torch.randint(0, 3, (80,), generator=gen))
    loader = TrainLoader(data, BatchPlan(80, batch_size=8, drop_last=True, seed=3), seed=3)
    model = nn.Linear(6, 3)
    log = []
    hooks = [Calls("every", log), Calls("third", log, (3,))]
    trainer = Trainer(model, OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1)), loader, hooks, 1, 10)
    trainer.train()
    assert iterations(log, "every") == list(range(1, 10))
    assert iterations(log, "third") == [2, 5, 8, 9]
    hooks.append(Calls("added", log, (2,)))  # a changed list is dispatched anew
    log.clear()
    trainer.run_iteration(3)
    assert [n for n, w, _ in log if w == "after"] == ["every", "added"]
