"""End-to-end tests of tools/train_net.py, run as a user runs it: a subprocess on short schedules,
real files, real checkpoints, a real SIGKILL."""
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pet.lib.config import load_cfg
from pet.lib.config.loader import merge_from_list
from pet.lib.utils.lr_scheduler import LearningRateScheduler, build_schedule

REPO = Path(__file__).resolve().parents[2]
TRAIN_NET = REPO / "tools" / "train_net.py"

# A tiny job (a few seconds): 44 iterations per epoch (1437 training images, batches of 32).
TINY_JOB = {
    "LOG_PERIOD": 1,
    "MODEL": {"TYPE": "cnn", "CNN": {"CHANNELS": [4, 8, 8], "HIDDEN_DIM": 16}},
    "SOLVER": {
        "OPTIMIZER": {"TYPE": "SGD", "BASE_LR": 0.05, "BIAS_LR_FACTOR": 2.0},
        "SCHEDULER": {"POLICY": "STEP", "TOTAL_ITERS": 60, "STEPS": [30, 45], "WARM_UP_ITERS": 10},
        "SNAPSHOT_ITERS": 20,
    },
    "TEST": {"EVAL_ITERS": 30},
}


def write_cfg(directory: Path, job: dict, name: str = "job.yaml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(job))
    return path


def train_command(cfg_file: Path, *args) -> list:
    return [sys.executable, str(TRAIN_NET), "--cfg", str(cfg_file), *map(str, args)]


def train(cwd: Path, cfg_file: Path, *args) -> subprocess.CompletedProcess:
    """Run train_net in ``cwd``; return the finished process (output captured, not a terminal)."""
    return subprocess.run(train_command(cfg_file, *args), cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def read_metrics(output_dir: Path) -> list:
    with open(output_dir / "metrics.json") as f:
        return [json.loads(line) for line in f]


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_bad_input(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit status 2, exactly one line on stderr holding every fragment, no traceback."""
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def snapshot_dir(directory: Path) -> dict:
    """{name: (size, mtime_ns)} of every file, to prove a refused run wrote nothing."""
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in directory.iterdir()}


# ---------------------------------------------------------------------------------------------
# A normal run
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One tiny run with command-line overrides, shared by the tests that read its outputs."""
    cwd = tmp_path_factory.mktemp("tiny")
    cfg_file = write_cfg(cwd, TINY_JOB)
    result = train(cwd, cfg_file, "OUTPUT_DIR", "out", "SOLVER.OPTIMIZER.BASE_LR", "0.02",
                   "SOLVER.SCHEDULER.STEPS", "(20, 40)")
    assert result.returncode == 0, result.stderr
    return cwd, cwd / "out", result


def test_overrides_reach_the_merged_config(tiny_run):
    cwd, output_dir, _ = tiny_run
    merged = load_cfg(str(output_dir / "config.yaml"))
    assert merged.SOLVER.OPTIMIZER.BASE_LR == 0.02
    assert merged.SOLVER.SCHEDULER.STEPS == (20, 40)
    assert merged.SOLVER.OPTIMIZER.BIAS_LR_FACTOR == 2.0  # from the YAML file
    assert merged.OUTPUT_DIR == "out"


def test_run_writes_config_log_metrics_checkpoints(tiny_run):
    _, output_dir, _ = tiny_run
    events = [p.name for p in output_dir.glob("events.out.tfevents.*")]
    assert sorted(p.name for p in output_dir.iterdir() if p.name not in events) == [
        "config.yaml", "last_checkpoint", "log.txt", "metrics.json",
        "model_0000020.pth", "model_0000040.pth", "model_best.pth", "model_final.pth",
    ]
    # TensorBoard by default (WRITERS): tensorboard --logdir OUTPUT_DIR shows every logged loss.
    assert len(events) == 1
    accumulator = EventAccumulator(str(output_dir))
    accumulator.Reload()
    losses = [(e.step, e.value) for e in accumulator.Scalars("loss")]
    assert losses == [(r["iterations_done"], pytest.approx(r["loss"], rel=1e-6)) for r in read_metrics(output_dir)]
    assert (output_dir / "last_checkpoint").read_text() == "model_final.pth"
    log = (output_dir / "log.txt").read_text()
    assert "Evaluation after iteration 30" in log and "Done: held-out accuracy" in log


def test_metrics_show_the_scheduled_lr_loss_and_evaluations(tiny_run):
    _, output_dir, _ = tiny_run
    records = read_metrics(output_dir)
    assert [r["iteration"] for r in records] == list(range(60))
    schedule = build_schedule(load_cfg(str(output_dir / "config.yaml")).SOLVER.SCHEDULER)
    # The largest param group holds the conv weights: lr = BASE_LR * factor(i), exactly.
    assert [r["lr"] for r in records] == [0.02 * schedule.factor(i) for i in range(60)]
    assert records[0]["lr"] == pytest.approx(0.02 / 3)
    assert records[25]["lr"] == pytest.approx(0.002)
    assert all(r["loss"] > 0 and "time" in r and "eta_seconds" in r for r in records)
    evaluated = [r["iteration"] for r in records if "accuracy" in r]
    assert evaluated == [29, 59]
    assert 0 <= records[-1]["accuracy"] <= 100 and records[-1]["test_loss"] > 0


def test_checkpoints_hold_each_state_once(tiny_run):
    _, output_dir, _ = tiny_run
    checkpoint = load(output_dir / "model_0000040.pth")  # weights_only=True must work
    # The progress is the iteration: the schedule and the data position follow from it. The
    # scheduler's own entry (Pet's layout: optimizer and scheduler) holds it too, checked on resume.
    assert set(checkpoint) == {"model", "optimizer", "scheduler", "optim_wrapper", "eval_hook",
                               "metrics", "iteration", "rng", "config"}
    assert checkpoint["iteration"] == 40 == checkpoint["scheduler"]["iteration"]
    assert checkpoint["optim_wrapper"] == {"micro_batches": 0, "skipped_steps": 0,
                                           "nonfinite_steps": 0, "nonfinite_in_a_row": 0}
    # The losses behind loss_smoothed (the last 100 steps), as metrics.json logged them.
    assert checkpoint["metrics"]["history"]["loss"] == [r["loss"] for r in read_metrics(output_dir)][:40]
    groups = checkpoint["optimizer"]["param_groups"]
    assert any("backbone.conv1.conv.weight" in g["param_names"] for g in groups)
    assert {g["initial_lr"] for g in groups} == {0.02, 0.04}  # BIAS_LR_FACTOR 2 for biases
    assert all("momentum_buffer" in state for state in checkpoint["optimizer"]["state"].values())
    final = load(output_dir / "model_final.pth")
    assert final["iteration"] == 60
    accuracies = [r["accuracy"] for r in read_metrics(output_dir) if "accuracy" in r]
    best_epoch = 2 if accuracies[1] > accuracies[0] else 1  # evaluations after epochs 1 and 2
    assert final["eval_hook"] == {"accuracy": accuracies[-1], "epoch": 2,
                                  "best_accuracy": max(accuracies), "best_epoch": best_epoch}
    assert checkpoint["eval_hook"]["accuracy"] == accuracies[0]  # evaluated after iteration 30
    log = (output_dir / "log.txt").read_text()
    assert f"Done: held-out accuracy {accuracies[-1]:.2f}% (best {max(accuracies):.2f}% at epoch" in log


def test_output_is_quiet_when_not_a_terminal(tiny_run):
    _, _, result = tiny_run
    assert "\r" not in result.stdout
    # A few plain lines, not one per logged iteration (tests/tools/test_terminal.py has more).
    assert len(result.stdout.splitlines()) < 15


# ---------------------------------------------------------------------------------------------
# Exact resume after SIGKILL
# ---------------------------------------------------------------------------------------------
RESUME_JOBS = {
    # BatchNorm, dropout, SGD momentum, shifted images, a STEP schedule over several epochs.
    "cnn": {
        "LOG_PERIOD": 1,
        "MODEL": {"TYPE": "cnn"},
        "DATA": {"MAX_SHIFT": 1},
        "SOLVER": {
            "OPTIMIZER": {"TYPE": "SGD", "BASE_LR": 0.05},
            "SCHEDULER": {"POLICY": "STEP", "TOTAL_EPOCHS": 8, "STEPS": [5, 7], "WARM_UP_EPOCHS": 1},
            "SNAPSHOT_ITERS": 50,
        },
        "TEST": {"EVAL_EPOCHS": 2},
    },
    # Embeddings, LayerNorm, attention dropout, AdamW moments, a COSINE schedule.
    "transformer": {
        "LOG_PERIOD": 1,
        "MODEL": {"TYPE": "transformer", "TRANSFORMER": {"EMBED_DIM": 32, "DROPOUT": 0.1}},
        "SOLVER": {
            "OPTIMIZER": {"TYPE": "ADAMW", "BASE_LR": 0.002, "WEIGHT_DECAY": 0.05},
            "SCHEDULER": {"POLICY": "COSINE", "TOTAL_ITERS": 200, "WARM_UP_ITERS": 20},
            "SNAPSHOT_ITERS": 50,
        },
        "TEST": {"EVAL_ITERS": 60},
    },
}


def kill_after_checkpoint(cwd: Path, cfg_file: Path, checkpoint: Path, delay: float) -> None:
    """Start a run, SIGKILL it ``delay`` seconds after ``checkpoint`` appears (between two
    checkpoints), and check it really was killed mid-run."""
    process = subprocess.Popen(train_command(cfg_file), cwd=cwd, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not checkpoint.exists():
        assert process.poll() is None, f"the run ended before {checkpoint.name}: {process.stderr.read()}"
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.005)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL, "the run finished before it could be killed"
    process.stderr.close()


def assert_same_final_state(run: Path, reference: Path) -> None:
    """The final checkpoints of two runs hold the same weights, optimizer moments, wrapper,
    evaluation state and metrics history, bit for bit, and their metrics.json the same losses
    (the smoothed one too: its window carries over the resume)."""
    final, expected = load(run / "model_final.pth"), load(reference / "model_final.pth")
    assert final["iteration"] == expected["iteration"]
    assert final["model"].keys() == expected["model"].keys()
    for name, tensor in expected["model"].items():
        assert torch.equal(final["model"][name], tensor), f"{name} differs after resume"
    optimizers = [name for name in expected if name.split(".")[0] == "optimizer"]  # one, or by name
    assert optimizers and [name for name in final if name.split(".")[0] == "optimizer"] == optimizers
    for optimizer in optimizers:
        for index, state in expected[optimizer]["state"].items():
            for key, value in state.items():
                assert torch.equal(final[optimizer]["state"][index][key], value), f"{optimizer} {index}.{key}"
    assert [final[n] for n in final if n.startswith("scheduler")] == [expected[n] for n in expected if n.startswith("scheduler")]
    assert final["eval_hook"] == expected["eval_hook"]
    assert final["optim_wrapper"] == expected["optim_wrapper"]
    assert final["metrics"]["history"]["loss"] == expected["metrics"]["history"]["loss"]
    # Every line is there once (a metrics line is written before its iteration's checkpoint),
    # with the same numbers.
    for field in ("iteration", "loss", "loss_smoothed", "grad_norm"):
        assert ([r.get(field) for r in read_metrics(run)]
                == [r.get(field) for r in read_metrics(reference)]), field


@pytest.mark.parametrize("model", sorted(RESUME_JOBS))
def test_sigkill_and_resume_gives_bit_identical_weights(tmp_path, model):
    sigkill_resume_matches_reference(tmp_path, RESUME_JOBS[model])


def sigkill_resume_matches_reference(tmp_path: Path, job: dict) -> None:
    """Run ``job`` uninterrupted, and again killed with SIGKILL after its checkpoint of
    iteration 100 and resumed: the same final state, bit for bit, and the same metrics."""
    reference_cfg = write_cfg(tmp_path, dict(job, OUTPUT_DIR="reference"), "reference.yaml")
    resumed_cfg = write_cfg(tmp_path, dict(job, OUTPUT_DIR="resumed"), "resumed.yaml")
    reference = train(tmp_path, reference_cfg)
    assert reference.returncode == 0, reference.stderr

    kill_after_checkpoint(tmp_path, resumed_cfg, tmp_path / "resumed" / "model_0000100.pth", delay=0.15)
    assert not (tmp_path / "resumed" / "model_final.pth").exists()
    resumed = train(tmp_path, resumed_cfg, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "Resuming from" in resumed.stdout

    assert_same_final_state(tmp_path / "resumed", tmp_path / "reference")

    # Each iteration logged once, with the same lr and loss as the uninterrupted run.
    def progress(records):
        return [{k: v for k, v in r.items() if k not in ("time", "data_time", "eta_seconds", "images_per_s", "loss_smoothed")} for r in records]
    resumed_metrics = read_metrics(tmp_path / "resumed")
    assert progress(resumed_metrics) == progress(read_metrics(tmp_path / "reference"))


def copy_of_finished_run(tiny_run, tmp_path: Path) -> Path:
    """A copy of the tiny run's OUTPUT_DIR at ``tmp_path/out`` and its YAML at ``tmp_path/job.yaml``
    (which says OUTPUT_DIR out); returns the YAML's path."""
    _, output_dir, _ = tiny_run
    shutil.copytree(output_dir, tmp_path / "out")
    return write_cfg(tmp_path, dict(TINY_JOB, OUTPUT_DIR="out"))


def test_a_pets_own_loop_resumes_its_scheduler_from_the_checkpoint(tiny_run):
    """Pet's solver description: the checkpoint holds the optimizer and the scheduler."""
    _, output_dir, _ = tiny_run
    checkpoint = load(output_dir / "model_0000040.pth")
    cfg = load_cfg(str(REPO / "cfgs" / "digits_cnn_sgd_step.yaml"), [])
    merge_from_list(cfg, ["SOLVER.SCHEDULER.TOTAL_EPOCHS", "None", "SOLVER.SCHEDULER.TOTAL_ITERS", "60",
                          "SOLVER.SCHEDULER.STEPS", "(30, 45)", "SOLVER.SCHEDULER.WARM_UP_EPOCHS", "None",
                          "SOLVER.SCHEDULER.WARM_UP_ITERS", "10", "SOLVER.OPTIMIZER.BASE_LR", "0.05"])
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    scheduler = LearningRateScheduler(optimizer, cfg.SOLVER)
    scheduler.load_state_dict(checkpoint["scheduler"])
    assert scheduler.iteration == 40
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.005)  # 0.05 after the step at 30


def test_a_checkpoint_without_a_scheduler_entry_resumes_from_its_iteration(tiny_run, tmp_path):
    """Checkpoints written before the scheduler was saved: derived from the iteration."""
    cfg_file = copy_of_finished_run(tiny_run, tmp_path)
    checkpoint = load(tmp_path / "out" / "model_final.pth")
    del checkpoint["scheduler"]
    torch.save(checkpoint, tmp_path / "out" / "model_final.pth")
    result = train(tmp_path, cfg_file, "--resume", "SOLVER.SCHEDULER.TOTAL_ITERS", "62")
    assert result.returncode == 0, result.stderr
    assert "has no 'scheduler' entry (written before Pet saved it): derived {'iteration': 60}" in result.stdout
    assert [r["iteration"] for r in read_metrics(tmp_path / "out")] == list(range(62))
    assert load(tmp_path / "out" / "model_final.pth")["scheduler"]["iteration"] == 62


def _scheduler_at_45(checkpoint):
    checkpoint["scheduler"]["iteration"] = 45


def _rng_without_numpy(checkpoint):
    del checkpoint["rng"][0]["numpy"]  # one state per process


def _rng_python_state_cut(checkpoint):
    python = checkpoint["rng"][0]["python"]
    python["internal"] = python["internal"][:5]


@pytest.mark.parametrize("damage, fragments", [
    (_scheduler_at_45, ["model_final.pth: entry 'scheduler' is at iteration 45 but the checkpoint "
                        "at iteration 60; the file is damaged"]),
    (_rng_without_numpy, ["model_final.pth: entry 'rng' cannot be restored (KeyError: 'numpy')"]),
    (_rng_python_state_cut, ["model_final.pth: entry 'rng' cannot be restored (ValueError: state vector"]),
], ids=["scheduler-at-another-iteration", "rng-without-numpy", "rng-python-state-cut"])
def test_a_readable_checkpoint_with_a_damaged_entry_is_one_line_before_anything_is_written(
        tiny_run, tmp_path, damage, fragments):
    cfg_file = copy_of_finished_run(tiny_run, tmp_path)
    checkpoint = load(tmp_path / "out" / "model_final.pth")
    damage(checkpoint)
    torch.save(checkpoint, tmp_path / "out" / "model_final.pth")
    before = snapshot_dir(tmp_path / "out")
    result = train(tmp_path, cfg_file, "--resume", "SOLVER.SCHEDULER.TOTAL_ITERS", "62")
    assert_bad_input(result, *fragments)
    assert snapshot_dir(tmp_path / "out") == before


def test_resume_takes_hyperparameters_from_the_config_and_logs_them(tiny_run, tmp_path):
    cfg_file = copy_of_finished_run(tiny_run, tmp_path)
    # Continue the finished 60-iteration run to 80, with a new lr, momentum and milestones.
    result = train(tmp_path, cfg_file, "--resume", "SOLVER.SCHEDULER.TOTAL_ITERS", "80",
                   "SOLVER.SCHEDULER.STEPS", "(20, 70)", "SOLVER.OPTIMIZER.BASE_LR", "0.01",
                   "SOLVER.OPTIMIZER.MOMENTUM", "0.8")
    assert result.returncode == 0, result.stderr
    assert "param group 0 initial_lr: 0.02 in the checkpoint, 0.01 from the config (used)" in result.stdout
    assert "momentum: 0.9 in the checkpoint, 0.8 from the config (used)" in result.stdout
    assert "SOLVER.OPTIMIZER.BASE_LR was 0.02 in the checkpoint's run, is 0.01 now (used)" in result.stdout
    records = read_metrics(tmp_path / "out")
    assert [r["iteration"] for r in records] == list(range(80))
    # The new BASE_LR under the new milestones: one decay before 70, two after.
    assert records[65]["lr"] == pytest.approx(0.001)
    assert records[75]["lr"] == pytest.approx(0.0001)
    final = load(tmp_path / "out" / "model_final.pth")
    assert final["iteration"] == 80
    assert {g["momentum"] for g in final["optimizer"]["param_groups"]} == {0.8}
    assert {g["initial_lr"] for g in final["optimizer"]["param_groups"]} == {0.01, 0.02}


@pytest.mark.parametrize("overrides, fragments", [
    (["MODEL.TYPE", "transformer"], ["was saved from a different model", "MODEL.TYPE"]),
    (["MODEL.CNN.HIDDEN_DIM", "32"], ["head.fc1.weight has shape (16, 32) there and (32, 32) here"]),
    # Biases get the default lr and weight decay: their param group merges with the weights'.
    (["SOLVER.OPTIMIZER.BIAS_LR_FACTOR", "1.0", "SOLVER.OPTIMIZER.WEIGHT_DECAY_BIAS", "0.0001"],
     ["has 3 optimizer param groups, this config builds 2"]),
])
def test_resume_with_another_model_or_grouping_fails_clearly(tiny_run, tmp_path, overrides, fragments):
    cfg_file = copy_of_finished_run(tiny_run, tmp_path)
    before = snapshot_dir(tmp_path / "out")
    assert_bad_input(train(tmp_path, cfg_file, "--resume", *overrides), *fragments)
    assert snapshot_dir(tmp_path / "out") == before


@pytest.mark.parametrize("entry", ["optim_wrapper", "eval_hook"])
def test_resume_from_a_checkpoint_without_an_entry_fails_clearly(tiny_run, tmp_path, entry):
    cfg_file = copy_of_finished_run(tiny_run, tmp_path)
    checkpoint = load(tmp_path / "out" / "model_final.pth")
    del checkpoint[entry]  # as a checkpoint written before that state was saved
    torch.save(checkpoint, tmp_path / "out" / "model_final.pth")
    before = snapshot_dir(tmp_path / "out")
    assert_bad_input(train(tmp_path, cfg_file, "--resume"), f"model_final.pth has no '{entry}' entry")
    assert snapshot_dir(tmp_path / "out") == before


def test_eval_only_reports_accuracy_and_writes_nothing(tiny_run, tmp_path):
    _, output_dir, _ = tiny_run
    accuracy = read_metrics(output_dir)[-1]["accuracy"]
    cfg_file = write_cfg(tmp_path, dict(TINY_JOB, OUTPUT_DIR="elsewhere"))
    result = train(tmp_path, cfg_file, "--eval-only", "MODEL.WEIGHTS", output_dir / "model_final.pth")
    assert result.returncode == 0, result.stderr
    assert f"held-out accuracy {accuracy:.2f}%" in result.stdout
    assert not (tmp_path / "elsewhere").exists()


# ---------------------------------------------------------------------------------------------
# Bad input: exit 2, one line naming the key and the problem, nothing written
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cfg_name, overrides, fragments", [
    ("missing.yaml", [], ["--cfg missing.yaml: no such file"]),
    ("job.json", [], ["only YAML files"]),
    ("job.yaml", ["SOLVER.OPTIMIZER.BASE_RL", "0.1"],
     ["unknown config key SOLVER.OPTIMIZER.BASE_RL", "did you mean SOLVER.OPTIMIZER.BASE_LR?"]),
    ("job.yaml", ["DATA.BATCH_SIZE", "big"], ["DATA.BATCH_SIZE: expected an integer, got 'big'"]),
    ("job.yaml", ["SOLVER.SCHEDULER.STEPS", "(45, 30)"], ["SOLVER.SCHEDULER.STEPS: must be sorted"]),
    ("job.yaml", ["SOLVER.OPTIMIZER.BASE_LR", "-0.1"], ["SOLVER.OPTIMIZER.BASE_LR: must be >= 0"]),
    ("job.yaml", ["MODEL.TYPE", "resnet"], ["MODEL.TYPE: unknown value 'resnet'; allowed: cnn, transformer"]),
    ("job.yaml", ["DATA.BATCH_SIZE", "0"], ["DATA.BATCH_SIZE: expected an integer >= 1, got 0"]),
    ("job.yaml", ["--resume"], ["--resume:", "last_checkpoint does not exist"]),
    ("job.yaml", ["SOLVER.OPTIMIZER.TYPE", "ADAMW", "SOLVER.SCHEDULER.PARAMS",
                  "({'PARAM': 'momentum', 'START': 0.9, 'END': 0.99},)"],
     ["SOLVER.SCHEDULER.PARAMS[0].PARAM: AdamW has no param-group key 'momentum'; its keys:"]),
    ("job.yaml", ["TF32", "yes"], ["TF32: expected True or False, got 'yes'"]),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, cfg_name, overrides, fragments):
    write_cfg(tmp_path, TINY_JOB, "job.yaml")
    (tmp_path / "job.json").write_text(json.dumps(TINY_JOB))
    # Flags may come after the KEY VALUE pairs too.
    result = train(tmp_path, Path(cfg_name), "OUTPUT_DIR", "out", *overrides)
    assert_bad_input(result, *fragments)
    assert not (tmp_path / "out").exists()


def test_a_run_with_checkpoints_is_not_overwritten(tiny_run, tmp_path):
    cfg_file = copy_of_finished_run(tiny_run, tmp_path)
    before = snapshot_dir(tmp_path / "out")
    assert_bad_input(train(tmp_path, cfg_file), "OUTPUT_DIR out already holds checkpoints", "--resume")
    assert snapshot_dir(tmp_path / "out") == before


def test_a_diverging_run_stops_with_status_1_and_a_clear_line(tmp_path):
    cfg_file = write_cfg(tmp_path, dict(TINY_JOB, OUTPUT_DIR="out"))
    result = train(tmp_path, cfg_file, "SOLVER.OPTIMIZER.BASE_LR", "1e6")
    assert result.returncode == 1
    assert result.stderr.startswith("error: loss became nan at iteration ")
    assert "lower SOLVER.OPTIMIZER.BASE_LR" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "model_final.pth").exists()
