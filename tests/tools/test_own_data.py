"""tools/train_net.py on a user's own data set (a CUSTOM_IMPORTS module, tests/tools/
own_data_probe.py) through real DataLoader workers: each process's shard under torchrun, every
kind of bad input, and workers that never outlive the run."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_train_distributed import alive, free_port
from test_train_net import TRAIN_NET, assert_bad_input, load, write_cfg

from pet.data import BatchPlan

pytestmark = pytest.mark.slow  # every test here runs train_net (or torchrun) in a subprocess

HERE = Path(__file__).resolve().parent
# 44 iterations per epoch (1437 training digits, batches of 32), two processes of 16 each.
PROBE_JOB = {
    "CUSTOM_IMPORTS": ["own_data_probe"],
    "LOG_PERIOD": 10,
    "MODEL": {"TYPE": "cnn", "CNN": {"CHANNELS": [4, 8, 8], "HIDDEN_DIM": 16}},
    "DATA": {"DATASET": "probe", "NUM_WORKERS": 2},
    "SOLVER": {
        "OPTIMIZER": {"TYPE": "SGD", "BASE_LR": 0.05},
        "SCHEDULER": {"POLICY": "STEP", "TOTAL_ITERS": 44, "STEPS": [30], "WARM_UP_ITERS": 0},
        "SNAPSHOT_ITERS": 20,
    },
}


def probe_env(log_dir: Path = None, bad_index: int = -1, bad_kind: str = "") -> dict:
    env = dict(os.environ, PYTHONPATH=str(HERE), PROBE_BAD_INDEX=str(bad_index), PROBE_BAD_KIND=bad_kind)
    if log_dir is not None:
        log_dir.mkdir(exist_ok=True)
        env["PROBE_LOG"] = str(log_dir)
    return env


def run(cwd: Path, command: list, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def train_command(cfg_file: Path, *args) -> list:
    return [sys.executable, str(TRAIN_NET), "--cfg", str(cfg_file), *map(str, args)]


def reads(log_dir: Path) -> list:
    """(rank, pid, index) of every training item read."""
    return [tuple(map(int, line.split())) for path in log_dir.iterdir() for line in path.read_text().splitlines()]


def first_item_of(iteration: int, seed: int = 0) -> int:
    """The first item the batch of ``iteration`` reads (the plan is a pure function)."""
    return int(BatchPlan(1437, 32, True, seed).global_batch(iteration)[0])


def test_two_processes_each_read_their_own_shard_every_item_once_per_epoch(tmp_path):
    cfg_file = write_cfg(tmp_path, dict(PROBE_JOB, OUTPUT_DIR="out"))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), str(TRAIN_NET), "--cfg", str(cfg_file)]
    result = run(tmp_path, command, probe_env(tmp_path / "log"))
    assert result.returncode == 0, result.stderr
    records = reads(tmp_path / "log")
    shards = [[index for rank, _, index in records if rank == r] for r in (0, 1)]
    epoch = BatchPlan(1437, 32, True, seed=0)
    expected = sorted(int(i) for it in range(44) for i in epoch.global_batch(it))
    assert sorted(shards[0] + shards[1]) == expected  # each item of the epoch once over the processes
    assert len(shards[0]) == len(shards[1]) == 44 * 16 and not set(shards[0]) & set(shards[1])
    # Each process read through its own 2 workers.
    assert all(len({pid for rank, pid, _ in records if rank == r}) == 2 for r in (0, 1))


def test_a_data_set_whose_build_fails_is_one_line_before_training(tmp_path):
    cfg_file = write_cfg(tmp_path, dict(PROBE_JOB, OUTPUT_DIR="out"))
    result = run(tmp_path, train_command(cfg_file, "DATA.DATASET", "probe_broken"), probe_env())
    assert_bad_input(result, "DATA.DATASET: building 'probe_broken' failed (FileNotFoundError: "
                             "no such directory: (DATA.ROOT is empty))")
    assert not (tmp_path / "out").exists()
    result = run(tmp_path, train_command(cfg_file, "DATA.DATASET", "mnist"), probe_env())
    assert_bad_input(result, "DATA.DATASET: unknown value 'mnist'; allowed: digits, probe, probe_broken")


@pytest.mark.parametrize("kind, workers, line", [
    ("raises", 2, r"error: data item {index} raised OSError: cannot decode item {index}: truncated file "
                  r"in DataLoader worker [01]"),
    ("shape", 0, r"error: data item {index} has shape \[\(\(1, 9, 9\), uint8\), 'int'\] where the other items "
                 r"of its batch have \[\(\(1, 8, 8\), uint8\), 'int'\]; a batch stacks its items: make every item "
                 r"the same shape in the training process"),
    ("label", 2, r"error: data item {index} has label 12, outside MODEL.NUM_CLASSES=10 \(allowed: 0..9\) "
                 r"in DataLoader worker [01]"),
    ("kill", 2, r"error: DataLoader worker \(pid(?:\(s\))? \d+(?:, \d+)*\) (is killed by signal: Killed|exited unexpectedly) "
                r"\(a worker the OS ended, often for memory: lower DATA.NUM_WORKERS or DATA.PREFETCH_FACTOR\)"),
])
def test_a_bad_item_during_training_is_one_line_keeping_the_last_good_checkpoint(tmp_path, kind, workers, line):
    index = first_item_of(30)  # read after the checkpoint of iteration 20
    cfg_file = write_cfg(tmp_path, dict(PROBE_JOB, OUTPUT_DIR="out"))
    result = run(tmp_path, train_command(cfg_file, "DATA.NUM_WORKERS", workers),
                 probe_env(bad_index=index, bad_kind=kind))
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    expected = line.format(index=index) + "; last good checkpoint: out/model_0000020.pth"
    assert re.fullmatch(expected, lines[0]), lines[0]
    assert load(tmp_path / "out" / "model_0000020.pth")["iteration"] == 20
    assert not (tmp_path / "out" / "model_final.pth").exists()


def long_probe_job(tmp_path: Path) -> Path:
    job = dict(PROBE_JOB, OUTPUT_DIR="out")
    job["SOLVER"] = dict(PROBE_JOB["SOLVER"], SCHEDULER=dict(PROBE_JOB["SOLVER"]["SCHEDULER"], TOTAL_ITERS=100000))
    return write_cfg(tmp_path, job)


def stop_after_checkpoint(tmp_path: Path, command: list, sig: int, workers: int):
    """Start ``command``, send ``sig`` to it once its checkpoint of iteration 20 is written and
    its ``workers`` DataLoader workers read; once it exited, return (their pids, its status,
    its stderr)."""
    log_dir = tmp_path / "log"
    process = subprocess.Popen(command, cwd=tmp_path, env=probe_env(log_dir), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / "out" / "model_0000020.pth").exists():
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    pids = {pid for _, pid, _ in reads(log_dir)}
    assert len(pids) == workers and all(alive(pid) for pid in pids)
    # A kill of the process alone; SIGINT and SIGTERM to the whole group, as a terminal's
    # Ctrl-C or a cluster's SIGTERM reach every process.
    process.send_signal(sig) if sig == signal.SIGKILL else os.killpg(process.pid, sig)
    status = process.wait(timeout=60)
    # Until every process holding its stderr is gone (a worker left behind fails here).
    stderr = process.communicate(timeout=30)[1]
    return pids, status, stderr


def assert_gone(pids: set, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while any(alive(pid) for pid in pids):
        assert time.monotonic() < deadline, f"workers {pids} outlived the run"
        time.sleep(0.1)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_workers_never_outlive_the_run(tmp_path, sig):
    pids, status, stderr = stop_after_checkpoint(tmp_path, train_command(long_probe_job(tmp_path)), sig, workers=2)
    assert status == {signal.SIGKILL: -9, signal.SIGTERM: 143, signal.SIGINT: 130}[sig], stderr
    if sig != signal.SIGKILL:  # stopped at a checkpoint of its own, as without workers
        assert "continue with:" in stderr and len(stderr.strip().splitlines()) == 1, stderr
    # SIGTERM and SIGINT: the run stops its workers on the way out; SIGKILL: the orphans notice
    # their parent is gone (torch's worker watchdog, every 5 s) and leave.
    assert_gone(pids, 1 if sig != signal.SIGKILL else 20)


def test_workers_never_outlive_a_torchrun_job(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), str(TRAIN_NET), "--cfg", str(long_probe_job(tmp_path))]
    pids, status, stderr = stop_after_checkpoint(tmp_path, command, signal.SIGTERM, workers=4)
    assert status != 0, stderr  # torchrun reports the signal its own way (a traceback of its own)
    assert_gone(pids, 10)


def test_the_shipped_example_killed_mid_epoch_resumes_bit_identical_with_any_worker_count(tmp_path):
    """README's example (files on disk, read and augmented in 2 workers), killed with SIGKILL in
    the middle of its second epoch, resumed with 2 workers and, from a copy, with none."""
    from test_train_net import assert_same_final_state, kill_after_checkpoint, train
    from tools.write_image_folder import write_image_folder

    write_image_folder(str(tmp_path / "digits_folder"), 0.2, 0)
    job = {
        "CUSTOM_IMPORTS": ["cfgs.image_folder"],
        "LOG_PERIOD": 1,
        "MODEL": {"TYPE": "cnn", "CNN": {"CHANNELS": [4, 8, 8], "HIDDEN_DIM": 16}},
        "DATA": {"DATASET": "digits_folder", "ROOT": str(tmp_path / "digits_folder"), "MAX_SHIFT": 1,
                 "NUM_WORKERS": 2},
        "SOLVER": {"OPTIMIZER": {"TYPE": "SGD", "BASE_LR": 0.05, "MOMENTUM": 0.9},
                   "SCHEDULER": {"POLICY": "STEP", "TOTAL_ITERS": 120, "STEPS": [90], "WARM_UP_ITERS": 5},
                   "SNAPSHOT_ITERS": 25},
        "TEST": {"EVAL_ITERS": 40},
    }
    reference_cfg = write_cfg(tmp_path, dict(job, OUTPUT_DIR="reference"), "reference.yaml")
    resumed_cfg = write_cfg(tmp_path, dict(job, OUTPUT_DIR="resumed"), "resumed.yaml")
    result = train(tmp_path, reference_cfg)
    assert result.returncode == 0, result.stderr
    kill_after_checkpoint(tmp_path, resumed_cfg, tmp_path / "resumed" / "model_0000050.pth", delay=0.05)
    assert not (tmp_path / "resumed" / "model_final.pth").exists()
    shutil.copytree(tmp_path / "resumed", tmp_path / "no_workers")
    result = train(tmp_path, resumed_cfg, "--resume")
    assert result.returncode == 0, result.stderr
    assert "Resuming from" in result.stdout
    assert_same_final_state(tmp_path / "resumed", tmp_path / "reference")
    result = train(tmp_path, resumed_cfg, "--resume", "OUTPUT_DIR", "no_workers", "DATA.NUM_WORKERS", 0)
    assert result.returncode == 0, result.stderr
    assert_same_final_state(tmp_path / "no_workers", tmp_path / "reference")


def test_a_torchrun_killed_with_sigkill_takes_its_processes_with_it(tmp_path):
    """torchrun starts each process in a session of its own: killing torchrun alone (the OOM
    killer, a scheduler) must not leave them behind, training and writing checkpoints where
    a job restarted at once resumes. They die with it, at once: even stopped ones, which no
    watcher of theirs could run in (a watcher's next look took up to 1 s before the fix)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
               str(free_port()), str(TRAIN_NET), "--cfg", str(long_probe_job(tmp_path)), "DATA.NUM_WORKERS", "0"]
    log_dir = tmp_path / "log"
    process = subprocess.Popen(command, cwd=tmp_path, env=probe_env(log_dir), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / "out" / "model_0000020.pth").exists():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    pids = {pid for _, pid, _ in reads(log_dir)}
    assert len(pids) == 2
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=60) == -9
        assert_gone(pids, 10)
    finally:
        for pid in filter(alive, pids):
            os.kill(pid, signal.SIGKILL)
