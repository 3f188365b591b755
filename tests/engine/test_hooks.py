"""Tests of pet/engine/hooks.py and events.py: each hook against a real optimizer,
scheduler and files."""
import io
import json

import pytest
import torch
from torch import nn

from pet.lib.config import get_cfg
from pet.engine.checkpointer import Checkpointer
from pet.engine.events import MetricsStorage
from pet.engine.hooks import (
    EvalHook,
    IterationTimer,
    LRScheduler,
    MetricsWriter,
    PeriodicCheckpointer,
    period_in_iters,
    truncate_metrics,
)
from pet.lib.utils.lr_scheduler import LearningRateScheduler
from pet.lib.utils.optimizer import Optimizer


def two_group_run(total_iters=10):
    """A model whose largest param group is NOT the first one: a small default group (the
    weight of `small`) and a big no-decay group (the LayerNorm)."""
    model = nn.Sequential()
    model.add_module("small", nn.Linear(2, 2, bias=False))
    model.add_module("norm", nn.LayerNorm(100))
    cfg = get_cfg()
    cfg.SOLVER.OPTIMIZER.BASE_LR = 0.1
    cfg.SOLVER.OPTIMIZER.WEIGHT_DECAY_NORM = 0.0
    cfg.SOLVER.SCHEDULER.TOTAL_ITERS = total_iters
    cfg.SOLVER.SCHEDULER.STEPS = (5,)
    cfg.SOLVER.SCHEDULER.WARM_UP_ITERS = 0
    optimizer = Optimizer(model, cfg.SOLVER.OPTIMIZER).build()
    return model, optimizer, LearningRateScheduler(optimizer, cfg.SOLVER)


def run_steps(hooks, start, stop, optimizer=None, loss=1.0):
    """The trainer's loop around ``hooks``, with ``optimizer.step()`` (no gradients: no update)
    as the step."""
    storage = MetricsStorage(start)
    for iteration in range(start, stop):
        storage.begin_iteration(iteration)
        for hook in hooks:
            hook.before_step(storage)
        if optimizer is not None:
            optimizer.step()
        storage.put_scalar("loss", loss)
        for hook in hooks:
            hook.after_step(storage)
    return storage


def test_lr_scheduler_hook_records_the_largest_group_then_steps():
    model, optimizer, scheduler = two_group_run()
    optimizer.param_groups[0]["lr"] = 123.0  # the small group: must not be the one recorded
    hook = LRScheduler(optimizer, scheduler)
    assert [len(g["params"]) for g in optimizer.param_groups] == [1, 2]
    recorded = []
    for iteration in range(7):
        storage = MetricsStorage(iteration)
        optimizer.step()
        hook.after_step(storage)
        recorded.append(storage.latest()["lr"])
    assert recorded == pytest.approx([0.1] * 5 + [0.01] * 2)
    assert scheduler.iteration == 7


def test_eval_hook_owns_the_last_and_best_accuracy_and_restores_them():
    accuracies = iter([50.0, 80.0, 70.0])
    hook = EvalHook(lambda: {"accuracy": next(accuracies), "test_loss": 0.5}, period=4, max_iter=12,
                    iter_per_epoch=4)
    storage = run_steps([hook], 0, 12)
    assert hook.state_dict() == {"accuracy": 70.0, "epoch": 3, "best_accuracy": 80.0, "best_epoch": 2}
    assert storage.latest()["accuracy"] == 70.0 and storage.latest()["best_accuracy"] == 80.0

    # A resumed run's hook continues from the saved best: a lower accuracy does not replace it.
    resumed = EvalHook(lambda: {"accuracy": 75.0}, period=4, max_iter=16, iter_per_epoch=4)
    resumed.load_state_dict(torch.load(save_and_read(hook.state_dict()), weights_only=True))
    storage = run_steps([resumed], 12, 16)
    assert resumed.state_dict() == {"accuracy": 75.0, "epoch": 4, "best_accuracy": 80.0, "best_epoch": 2}
    assert storage.latest()["best_accuracy"] == 80.0


def test_eval_hook_reports_a_run_resumed_at_its_end():
    hook = EvalHook(lambda: {"accuracy": 60.0}, period=4, max_iter=8, iter_per_epoch=4)
    storage = MetricsStorage(8)
    storage.iter = 8  # as the trainer sets it before after_train: the iterations done
    hook.after_train(storage)
    assert hook.state_dict() == {"accuracy": 60.0, "epoch": 2, "best_accuracy": 60.0, "best_epoch": 2}


def save_and_read(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


def test_periodic_checkpointer_saves_every_period_and_the_final_model(tmp_path):
    model, optimizer, scheduler = two_group_run()
    checkpointer = Checkpointer(str(tmp_path), model=model, optimizer=optimizer)
    hook = PeriodicCheckpointer(checkpointer, period=4, max_iter=8, extra={"note": "a plain entry"})
    storage = run_steps([LRScheduler(optimizer, scheduler), hook], 0, 8, optimizer)
    storage.iter = 8  # as the trainer sets it before after_train: the iterations done
    hook.after_train(storage)
    # Iteration 8 is the end: model_final stands for it.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_0000004.pth", "model_final.pth"]
    checkpoint = torch.load(tmp_path / "model_0000004.pth", weights_only=True)
    assert set(checkpoint) == {"model", "optimizer", "iteration", "rng", "note"}
    assert checkpoint["iteration"] == 4 and checkpoint["note"] == "a plain entry"
    assert torch.load(tmp_path / "model_final.pth", weights_only=True)["iteration"] == 8


def test_metrics_writer_logs_periodically_and_at_evaluations(tmp_path):
    path = tmp_path / "metrics.json"
    timer = IterationTimer(max_iter=10, warmup_iters=0)
    writer = MetricsWriter(str(path), period=4, max_iter=10, timer=timer)
    storage = MetricsStorage(0)
    for iteration in range(10):
        storage.begin_iteration(iteration)
        timer.before_step(storage)
        storage.put_scalar("loss", float(iteration))
        timer.after_step(storage)
        if iteration == 5:
            storage.put_scalar("accuracy", 90.0, smoothing_hint=False)
        writer.after_step(storage)
    writer.after_train(storage)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["iteration"] for r in records] == [3, 5, 7, 9]
    assert records[1]["accuracy"] == 90.0 and records[3]["eta_seconds"] == 0.0
    assert records[0]["loss"] == 3.0


def test_truncate_metrics_drops_lines_from_the_resume_point_and_cut_lines(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("".join(json.dumps({"iteration": i}) + "\n" for i in range(6)) + '{"iteration": 6, "lo')
    truncate_metrics(str(path), start_iter=4)
    assert [json.loads(line)["iteration"] for line in path.read_text().splitlines()] == [0, 1, 2, 3]


def test_timer_leaves_warm_up_and_the_first_step_out_of_the_eta():
    timer = IterationTimer(max_iter=10, warmup_iters=3)
    storage = MetricsStorage(0)
    for iteration, seconds in enumerate([5.0, 5.0, 5.0, 1.0, 1.0]):
        storage.begin_iteration(iteration)
        timer.before_step(storage)
        timer._start -= seconds  # a step that took `seconds`
        timer.after_step(storage)
    assert timer.seconds_per_iter() == pytest.approx(1.0, abs=0.01)
    assert timer.eta_seconds(4) == pytest.approx(5.0, abs=0.05)


def test_period_in_iters_prefers_epochs():
    assert period_in_iters(100, None, 44) == 100
    assert period_in_iters(100, 2, 44) == 88
    assert period_in_iters(0, None, 44) == 0


def test_hooks_are_registered_by_class_name_and_users_add_theirs():
    from pet.engine.hooks import HOOKS, HookBase

    assert HOOKS.names() == ("IterationTimer", "LRScheduler", "EvalHook", "PeriodicCheckpointer",
                             "BestCheckpointer", "MetricsWriter", "EMAHook")

    @HOOKS.register()
    class EmptyCacheHook(HookBase):
        pass

    try:
        assert HOOKS.get("emptycachehook") is EmptyCacheHook
    finally:
        HOOKS.unregister("EmptyCacheHook")


def test_storage_reads_every_tensor_put_since_the_last_read_floats_among_them():
    storage = MetricsStorage(0)
    storage.put_scalar("loss", torch.tensor(1.0))
    storage.put_scalar("loss", 2.0)
    storage.put_scalar("time", 0.5)
    storage.put_scalar("loss", torch.tensor(3.0, dtype=torch.bfloat16))  # read as float32 would
    storage.put_scalar("grad_norm", torch.tensor(7.0), smoothing_hint=False)  # latest() only
    assert storage.latest() == {"loss": 3.0, "time": 0.5, "grad_norm": 7.0}
    assert storage.median("loss", 3) == 2.0
    storage.put_scalar("loss", torch.tensor(5.0))
    assert storage.state_dict()["history"] == {"loss": [1.0, 2.0, 3.0, 5.0], "time": [0.5]}
