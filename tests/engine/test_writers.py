"""Tests of pet/engine/writers.py through the MetricsWriter hook: the documented fields, the CSV
rows, TensorBoard event files read back with tensorboard's own reader, resume truncation, and
the progress line's width."""
import csv
import json

import pytest
from torch import nn

from pet.engine.events import MetricsStorage
from pet.engine.hooks import IterationTimer, LRScheduler, MetricsWriter
from pet.engine.logger import ProgressBar, fit_status
from pet.engine.writers import CSV_FILE, JSON_FILE, build_writers
from pet.lib.config import get_cfg
from pet.lib.utils.lr_scheduler import LearningRateScheduler
from pet.lib.utils.optimizer import Optimizer


def run_writer(output_dir, names, iterations, start_iter=0, period=2):
    """Steps start_iter..iterations-1 through an lr hook (two param groups of distinct lrs) and
    a MetricsWriter with the writers ``names``; an evaluation after step 5."""
    model = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))
    cfg = get_cfg()
    cfg.SOLVER.OPTIMIZER.BIAS_LR_FACTOR = 2.0
    cfg.SOLVER.SCHEDULER.TOTAL_ITERS = 8
    cfg.SOLVER.SCHEDULER.WARM_UP_ITERS = 0
    cfg.SOLVER.SCHEDULER.STEPS = (4,)
    optimizer = Optimizer(model, cfg.SOLVER.OPTIMIZER).build()
    scheduler = LearningRateScheduler(optimizer, cfg.SOLVER, start_iter=start_iter)
    timer = IterationTimer(8, 0)
    writer = MetricsWriter(str(output_dir / JSON_FILE), period, 8, timer,
                           progress_bar=ProgressBar(stream=open(output_dir / "bar", "w")),
                           writers=build_writers(names, str(output_dir), start_iter),
                           iter_per_epoch=4, images_per_iter=32)
    hooks = [timer, LRScheduler(optimizer, scheduler), writer]
    storage = MetricsStorage(start_iter)
    for it in range(start_iter, iterations):
        storage.begin_iteration(it)
        for hook in hooks:
            hook.before_step(storage)
        storage.put_scalar("loss", 10.0 - it)
        if it == 5:
            storage.put_scalar("accuracy", 50.0, smoothing_hint=False)
        optimizer.step()  # as the loop steps (no gradients: nothing changes)
        for hook in hooks:
            hook.after_step(storage)
    if iterations == 8:
        storage.iter = 8
        for hook in hooks:
            hook.after_train(storage)
    else:
        for w in writer.writers:  # a killed run: the files as they were flushed
            w.close()


def test_json_records_hold_the_documented_fields(tmp_path):
    run_writer(tmp_path, ["json"], 8)
    records = [json.loads(line) for line in (tmp_path / JSON_FILE).read_text().splitlines()]
    assert [r["iteration"] for r in records] == [1, 3, 5, 7]
    assert [r["iterations_done"] for r in records] == [2, 4, 6, 8]  # as the log counts
    assert [r["epoch"] for r in records] == [1, 1, 2, 2]
    first = records[0]
    assert first["loss"] == 9.0 and first["loss_smoothed"] == 9.5  # median of 10 and 9
    assert first["lr_group0"] != first["lr_group1"] and first["lr"] in (first["lr_group0"], first["lr_group1"])
    assert first["images_per_s"] > 0 and "eta_seconds" in first and "time" in first
    assert records[2]["accuracy"] == 50.0 and "accuracy" not in records[1]


def test_csv_rows_and_tensorboard_events_carry_the_same_numbers(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_writer(tmp_path, ["json", "csv", "tensorboard"], 8)
    records = [json.loads(line) for line in (tmp_path / JSON_FILE).read_text().splitlines()]
    with open(tmp_path / CSV_FILE, newline="") as f:
        rows = list(csv.DictReader(f))
    loss_rows = [(int(r["iterations_done"]), int(r["epoch"]), float(r["value"])) for r in rows if r["name"] == "loss"]
    assert loss_rows == [(r["iterations_done"], r["epoch"], r["loss"]) for r in records]
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert {"loss", "loss_smoothed", "lr", "accuracy", "epoch", "images_per_s"} <= set(events.Tags()["scalars"])
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(r["iterations_done"], r["loss"]) for r in records]
    assert [e.step for e in events.Scalars("accuracy")] == [6]


def test_resume_drops_what_the_killed_run_wrote_after_its_checkpoint(tmp_path):
    run_writer(tmp_path, ["json", "csv"], 7)  # killed after step 6; checkpoint at 4 done
    run_writer(tmp_path, ["json", "csv"], 8, start_iter=4)
    records = [json.loads(line) for line in (tmp_path / JSON_FILE).read_text().splitlines()]
    assert [r["iterations_done"] for r in records] == [2, 4, 6, 8]
    with open(tmp_path / CSV_FILE, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["iterations_done"]) for r in rows if r["name"] == "loss"] == [2, 4, 6, 8]


@pytest.mark.parametrize("width", [40, 80, 200])
def test_the_status_line_fits_the_width_and_at_most_80_columns(width):
    text = "ep 12 iter 123456/200000 lr 0.000123 loss 0.1234 1234 it/s eta 12:34:56"
    line = fit_status(text, 0.5, min(width, 80))
    assert len(line) <= min(width, 80) - 1
    assert line.startswith("[") or width < 80
