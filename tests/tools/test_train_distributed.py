"""tools/train_net.py on other layouts, run as a user runs it: accumulation, float16/bfloat16
autocast on the CPU, and real ``torchrun`` jobs of 2 processes (gloo), killed with SIGKILL and
resumed. One config trains the same job on every layout."""
import os
import shutil
import socket
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_train_net import (
    TRAIN_NET,
    assert_bad_input,
    assert_same_final_state,
    load,
    read_metrics,
    train,
    write_cfg,
)

pytestmark = pytest.mark.slow  # every test here runs train_net (or torchrun) in a subprocess

# No batch statistics, no dropout: micro-batches and processes change nothing but the order of
# float additions.
LAYOUT_JOB = {
    "LOG_PERIOD": 1,
    "MODEL": {"TYPE": "transformer", "TRANSFORMER": {"EMBED_DIM": 32, "DEPTH": 1, "DROPOUT": 0.0}},
    "SOLVER": {
        "OPTIMIZER": {"TYPE": "SGD", "BASE_LR": 0.1},
        "SCHEDULER": {"POLICY": "COSINE", "TOTAL_ITERS": 24, "WARM_UP_ITERS": 4},
        "SNAPSHOT_ITERS": 8,
    },
}
# BatchNorm and dropout: each process's own RNG stream and DDP's buffer broadcast matter.
CNN_JOB = {
    "LOG_PERIOD": 1,
    "MODEL": {"TYPE": "cnn", "CNN": {"CHANNELS": [4, 8, 8], "HIDDEN_DIM": 16}},
    "SOLVER": {
        "OPTIMIZER": {"TYPE": "SGD", "BASE_LR": 0.05},
        "SCHEDULER": {"POLICY": "STEP", "TOTAL_ITERS": 150, "STEPS": [100], "WARM_UP_ITERS": 5},
        "SNAPSHOT_ITERS": 20,
    },
    "TEST": {"EVAL_ITERS": 50},
}


def free_port() -> int:
    """A port nothing listens on now: each job gets its own (a fixed one can still be held by
    the previous job's sockets, or by a job of a test run beside this one)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_command(cfg_file: Path, *args, nproc: int = 2) -> list:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
            "--master_port", str(free_port()), str(TRAIN_NET), "--cfg", str(cfg_file),
            *map(str, args)]


def torchrun(cwd: Path, cfg_file: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run(torchrun_command(cfg_file, *args), cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def sigkill_job(process: subprocess.Popen) -> None:
    """SIGKILL a job started in a session of its own and everything it started, as a node that
    dies takes it all, and return once all of it is gone: torchrun starts its workers in
    sessions of their own, out of reach of a signal to its group (alone they follow their
    launcher at once, yet the next run must not meet one still writing)."""
    os.killpg(process.pid, signal.SIGSTOP)  # no process is started after this
    with open(f"/proc/{process.pid}/task/{process.pid}/children") as f:
        started = [int(pid) for pid in f.read().split()]
    for pid in started:
        os.kill(pid, signal.SIGKILL)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    deadline = time.monotonic() + 60
    while any(alive(pid) for pid in started):
        assert time.monotonic() < deadline, f"processes {started} outlived the SIGKILL"
        time.sleep(0.01)


def kill_job_after_checkpoint(cwd: Path, command: list, checkpoint: Path) -> None:
    """Start ``command`` in its own session and SIGKILL it (torchrun and its workers) right
    after ``checkpoint`` appears."""
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)
    deadline = time.monotonic() + 240
    while not checkpoint.exists():
        assert process.poll() is None, f"the run ended before {checkpoint.name}: {process.stderr.read()}"
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.005)
    time.sleep(0.05)
    sigkill_job(process)
    process.stderr.close()


def test_one_config_trains_the_same_job_on_every_layout(tmp_path):
    cfg_file = write_cfg(tmp_path, LAYOUT_JOB)
    assert train(tmp_path, cfg_file, "OUTPUT_DIR", "k1").returncode == 0
    result = train(tmp_path, cfg_file, "OUTPUT_DIR", "k4", "SOLVER.ACCUMULATION_STEPS", 4)
    assert result.returncode == 0, result.stderr
    assert "1 process(es) x 4 micro-batch(es) of 8 images per step" in result.stdout
    result = torchrun(tmp_path, cfg_file, "OUTPUT_DIR", "p2k2", "SOLVER.ACCUMULATION_STEPS", 2)
    assert result.returncode == 0, result.stderr
    assert "2 process(es) x 2 micro-batch(es) of 8 images per step" in result.stdout
    reference = load(tmp_path / "k1" / "model_final.pth")["model"]
    for layout in ("k4", "p2k2"):
        weights = load(tmp_path / layout / "model_final.pth")["model"]
        for name, tensor in reference.items():
            torch.testing.assert_close(weights[name], tensor, rtol=1e-5, atol=1e-5, msg=f"{layout} {name}")
        # The logged loss is the whole batch's, on every layout, and so is its median.
        for field in ("loss", "loss_smoothed", "grad_norm"):
            values = [r[field] for r in read_metrics(tmp_path / layout)]
            expected = [r[field] for r in read_metrics(tmp_path / "k1")]
            assert values == pytest.approx(expected, rel=1e-4), field
    # Rank 0 alone writes: every iteration once, the log once.
    assert [r["iteration"] for r in read_metrics(tmp_path / "p2k2")] == list(range(24))
    log = (tmp_path / "p2k2" / "log.txt").read_text()
    assert log.count("Starting training at iteration 0") == 1
    assert result.stdout.count("Done: held-out accuracy") == 1


def test_two_processes_killed_and_resumed_end_bit_identical(tmp_path):
    reference_cfg = write_cfg(tmp_path, dict(CNN_JOB, OUTPUT_DIR="reference"), "reference.yaml")
    resumed_cfg = write_cfg(tmp_path, dict(CNN_JOB, OUTPUT_DIR="resumed"), "resumed.yaml")
    result = torchrun(tmp_path, reference_cfg)
    assert result.returncode == 0, result.stderr
    kill_job_after_checkpoint(tmp_path, torchrun_command(resumed_cfg),
                              tmp_path / "resumed" / "model_0000020.pth")
    assert not (tmp_path / "resumed" / "model_final.pth").exists()
    shutil.copytree(tmp_path / "resumed", tmp_path / "one_process")
    result = torchrun(tmp_path, resumed_cfg, "--resume")
    assert result.returncode == 0, result.stderr
    assert "Resuming from" in result.stdout
    assert_same_final_state(tmp_path / "resumed", tmp_path / "reference")

    # The same checkpoint resumed by one process: same schedule and batches, and it says so.
    result = train(tmp_path, resumed_cfg, "--resume", "OUTPUT_DIR", "one_process")
    assert result.returncode == 0, result.stderr
    assert "Resuming a run of 2 process(es) on 1" in result.stdout
    assert load(tmp_path / "one_process" / "model_final.pth")["iteration"] == 150
    lrs = [r["lr"] for r in read_metrics(tmp_path / "one_process")]
    assert lrs == [r["lr"] for r in read_metrics(tmp_path / "reference")]


def test_float16_run_killed_and_resumed_ends_bit_identical(tmp_path):
    job = dict(CNN_JOB, SOLVER=dict(CNN_JOB["SOLVER"], AMP={"ENABLED": True, "DTYPE": "float16"},
                                    OPTIMIZER=dict(CNN_JOB["SOLVER"]["OPTIMIZER"],
                                                   CLIP_GRADIENTS={"ENABLED": True})))
    reference_cfg = write_cfg(tmp_path, dict(job, OUTPUT_DIR="reference"), "reference.yaml")
    resumed_cfg = write_cfg(tmp_path, dict(job, OUTPUT_DIR="resumed"), "resumed.yaml")
    result = train(tmp_path, reference_cfg)
    assert result.returncode == 0, result.stderr
    assert "float16 autocast" in result.stdout
    kill_job_after_checkpoint(tmp_path, [sys.executable, str(TRAIN_NET), "--cfg", str(resumed_cfg)],
                              tmp_path / "resumed" / "model_0000020.pth")
    assert not (tmp_path / "resumed" / "model_final.pth").exists()
    result = train(tmp_path, resumed_cfg, "--resume")
    assert result.returncode == 0, result.stderr
    assert_same_final_state(tmp_path / "resumed", tmp_path / "reference")
    saved = load(tmp_path / "reference" / "model_final.pth")["optim_wrapper"]
    assert saved["scaler"]["scale"] > 0 and saved["skipped_steps"] >= 0
    # The scaler's state shows in every metrics line, the unscaled gradient norm in the lines
    # of the LOG_PERIOD grid.
    records = read_metrics(tmp_path / "reference")
    assert all("loss_scale" in r and "skipped_steps" in r for r in records)
    norms = [r["grad_norm"] for r in records if "grad_norm" in r]
    assert norms and all(0 < n < 100 for n in norms)


def test_bfloat16_autocast_trains_like_float32_to_its_precision(tmp_path):
    cfg_file = write_cfg(tmp_path, LAYOUT_JOB)
    assert train(tmp_path, cfg_file, "OUTPUT_DIR", "fp32").returncode == 0
    result = train(tmp_path, cfg_file, "OUTPUT_DIR", "bf16", "SOLVER.AMP.ENABLED", True)
    assert result.returncode == 0, result.stderr
    assert "bfloat16 autocast" in result.stdout
    bf16, fp32 = read_metrics(tmp_path / "bf16"), read_metrics(tmp_path / "fp32")
    assert [r["loss"] for r in bf16] == pytest.approx([r["loss"] for r in fp32], rel=0.02)
    assert [r["loss"] for r in bf16] != [r["loss"] for r in fp32]  # autocast really ran
    assert "loss_scale" not in bf16[-1]  # bfloat16 needs no loss scaling


def test_a_bad_config_under_torchrun_fails_every_process_with_one_line(tmp_path):
    cfg_file = write_cfg(tmp_path, LAYOUT_JOB)
    started = time.monotonic()
    result = torchrun(tmp_path, cfg_file, "SOLVER.ACCUMULATION_STEPS", 3)
    assert time.monotonic() - started < 120  # no hang
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == ["error: DATA.BATCH_SIZE: 32 images per step cannot be split into "
                      "SOLVER.ACCUMULATION_STEPS=3 x 2 processes equal micro-batches; use a multiple of 6"]
    assert "exitcode  : 2" in result.stderr
    assert not (tmp_path / "ckpts").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_a_device_that_is_not_there_exits_2(tmp_path, device):
    result = train(tmp_path, write_cfg(tmp_path, LAYOUT_JOB), "MODEL.DEVICE", device)
    assert_bad_input(result, f"MODEL.DEVICE: '{device}' needs CUDA, which this machine does not have")
    assert not (tmp_path / "ckpts").exists()


def test_a_refusal_of_rank_0_after_the_group_is_joined_ends_every_process_with_one_line(tmp_path):
    import fcntl

    cfg_file = write_cfg(tmp_path, dict(LAYOUT_JOB, OUTPUT_DIR="taken"))
    (tmp_path / "taken").mkdir()
    fd = os.open(tmp_path / "taken", os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another run holds the directory
    try:
        started = time.monotonic()
        result = torchrun(tmp_path, cfg_file)
    finally:
        os.close(fd)
    assert time.monotonic() - started < 120  # no hang
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "another run is writing to it" in errors[0], result.stderr
    assert result.stderr.count("exitcode  : 2") >= 1 and "Traceback" not in result.stderr.split("error: ")[0]
