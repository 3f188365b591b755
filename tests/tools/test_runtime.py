"""End-to-end tests of the runtime a detectron2/MMEngine user expects: a user's hook from the
config, TensorBoard and CSV writers, tools/plot_metrics.py on two runs, the best checkpoint, the
log header, and the EMA of the weights resumed bit for bit after a SIGKILL."""
import csv
import subprocess
import sys

import torch

from tests.tools.test_train_net import (
    REPO,
    TINY_JOB,
    assert_bad_input,
    assert_same_final_state,
    kill_after_checkpoint,
    load,
    read_metrics,
    train,
    write_cfg,
)

USER_HOOK_MODULE = '''
from pet.engine.hooks import HOOKS, HookBase


@HOOKS.register()
class MarkerHook(HookBase):
    def __init__(self, path, every=1):
        self.path, self.every = path, every

    def after_step(self, storage):
        if (storage.iter + 1) % self.every == 0:
            with open(self.path, "a") as f:
                f.write(f"{storage.iter + 1} {'accuracy' in storage.latest()}\\n")
'''

RUNTIME_JOB = dict(
    TINY_JOB,
    LOG_PERIOD=5,
    CUSTOM_IMPORTS=["user_hooks"],
    CUSTOM_HOOKS=[{"TYPE": "MarkerHook", "PRIORITY": "LOW", "PATH": "marks.txt", "EVERY": 30}],
    WRITERS=["json", "csv", "tensorboard"],
    MODEL=dict(TINY_JOB["MODEL"], EMA={"ENABLED": True, "DECAY": 0.9, "WARMUP": True}),
)


def run_env_train(cwd, cfg_file, *args):
    (cwd / "user_hooks.py").write_text(USER_HOOK_MODULE)
    env_path = str(cwd)
    import os
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = env_path + (os.pathsep + old if old else "")
    try:
        return train(cwd, cfg_file, *args)
    finally:
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old


def test_hooks_writers_ema_best_checkpoint_and_plot(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = []
    for name, lr in (("a", 0.05), ("b", 0.02)):
        cfg_file = write_cfg(tmp_path, dict(RUNTIME_JOB, OUTPUT_DIR=name), f"{name}.yaml")
        result = run_env_train(tmp_path, cfg_file, "SOLVER.OPTIMIZER.BASE_LR", lr)
        assert result.returncode == 0, result.stderr
        runs.append(tmp_path / name)
    out = runs[0]
    # The user's hook ran at its priority, after the evaluation of the same step.
    assert (tmp_path / "marks.txt").read_text().splitlines()[:2] == ["30 True", "60 True"]
    log = (out / "log.txt").read_text()
    assert log.splitlines()[0].endswith(f"Command: {sys.executable} {REPO / 'tools' / 'train_net.py'} "
                                        f"--cfg {tmp_path / 'a.yaml'} SOLVER.OPTIMIZER.BASE_LR 0.05")
    assert "Versions: python" in log and "torch 2." in log and "CPU threads: 1; world size: 1" in log
    assert "MarkerHook (LOW)" in log
    records = read_metrics(out)
    evaluated = [r for r in records if "accuracy" in r]
    assert [r["iterations_done"] for r in evaluated] == [30, 60] and all("ema_accuracy" in r for r in evaluated)
    # CSV and TensorBoard hold the same losses at the same steps.
    with open(out / "metrics.csv", newline="") as f:
        csv_loss = [(int(r["iterations_done"]), float(r["value"])) for r in csv.DictReader(f) if r["name"] == "loss"]
    assert csv_loss == [(r["iterations_done"], r["loss"]) for r in records]
    events = EventAccumulator(str(out))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss")] == csv_loss
    assert [e.step for e in events.Scalars("ema_accuracy")] == [30, 60]
    # The EMA is in every checkpoint; model_best.pth holds the best accuracy.
    final = load(out / "model_final.pth")
    assert set(final["ema"]) == set(final["model"])
    best = load(out / "model_best.pth")
    assert best["accuracy"] == max(r["accuracy"] for r in evaluated) == final["eval_hook"]["best_accuracy"]
    # Both runs on one PNG; a directory without metrics is one line and status 2.
    plot = [sys.executable, str(REPO / "tools" / "plot_metrics.py"), "--out", "curves.png"]
    result = subprocess.run(plot + [str(p) for p in runs], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = subprocess.run(plot + [str(out), str(tmp_path)], cwd=tmp_path, capture_output=True, text=True)
    assert_bad_input(result, f"{tmp_path}: no metrics.json")


def test_unknown_hook_key_is_one_line_exit_2(tmp_path):
    job = dict(RUNTIME_JOB, OUTPUT_DIR="out",
               CUSTOM_HOOKS=[{"TYPE": "MarkerHook", "PATH": "m.txt", "EVRY": 3}])
    result = run_env_train(tmp_path, write_cfg(tmp_path, job))
    assert_bad_input(result, "CUSTOM_HOOKS[0] (MarkerHook): unknown key EVRY; MarkerHook takes: PATH, EVERY")
    assert not (tmp_path / "out").exists()


def test_ema_resumes_bit_exactly_after_sigkill(tmp_path):
    job = dict(TINY_JOB, WRITERS=["json", "csv", "tensorboard"],
               MODEL=dict(TINY_JOB["MODEL"], EMA={"ENABLED": True, "DECAY": 0.95, "EVERY": 2}),
               SOLVER=dict(TINY_JOB["SOLVER"], SCHEDULER=dict(TINY_JOB["SOLVER"]["SCHEDULER"], TOTAL_ITERS=120)))
    reference = train(tmp_path, write_cfg(tmp_path, dict(job, OUTPUT_DIR="reference"), "reference.yaml"))
    assert reference.returncode == 0, reference.stderr
    resumed_cfg = write_cfg(tmp_path, dict(job, OUTPUT_DIR="resumed"), "resumed.yaml")
    kill_after_checkpoint(tmp_path, resumed_cfg, tmp_path / "resumed" / "model_0000040.pth", delay=0.1)
    resumed = train(tmp_path, resumed_cfg, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_final_state(tmp_path / "resumed", tmp_path / "reference")
    final, expected = load(tmp_path / "resumed" / "model_final.pth"), load(tmp_path / "reference" / "model_final.pth")
    for name, tensor in expected["ema"].items():
        assert torch.equal(final["ema"][name], tensor), f"ema {name} differs after resume"

    def progress(records):
        return [{k: v for k, v in r.items() if k not in ("time", "data_time", "eta_seconds", "images_per_s", "loss_smoothed")} for r in records]
    assert progress(read_metrics(tmp_path / "resumed")) == progress(read_metrics(tmp_path / "reference"))
    with open(tmp_path / "resumed" / "metrics.csv", newline="") as f:
        steps = [int(r["iterations_done"]) for r in csv.DictReader(f) if r["name"] == "loss"]
    assert steps == list(range(1, 121))
