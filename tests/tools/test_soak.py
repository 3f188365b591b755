"""Kill-anywhere soak: one run killed with SIGKILL at random moments (seeded, so a failure
replays), resumed after each kill, ends bit-identical to an uninterrupted run, in float32, in
float16 with loss scaling and under 2 torchrun processes.

The suite kills each run PET_SOAK_KILLS times (default 4, to keep it short); the long variant
for manual runs is 30 kills, from any seed:

    PET_SOAK_KILLS=30 PET_SOAK_SEED=7 python -m pytest -q tests/tools/test_soak.py

A kill lands anywhere: while the modules load, while building, between steps, inside a
checkpoint write (one every 5 iterations), inside a metrics line or the TensorBoard file.
"""
import os
import random
import subprocess
import time
from pathlib import Path

import pytest

from tests.tools.test_train_distributed import sigkill_job, torchrun_command
from tests.tools.test_train_net import assert_same_final_state, train_command, write_cfg

pytestmark = pytest.mark.slow  # many real runs

KILLS = int(os.environ.get("PET_SOAK_KILLS", "4"))
SEED = int(os.environ.get("PET_SOAK_SEED", "0"))
SOAK_JOB = {
    "LOG_PERIOD": 1,
    "MODEL": {"TYPE": "cnn", "CNN": {"CHANNELS": [4, 8, 8], "HIDDEN_DIM": 16}},
    "SOLVER": {
        "OPTIMIZER": {"TYPE": "SGD", "BASE_LR": 0.05, "MOMENTUM": 0.9},
        "SCHEDULER": {"POLICY": "COSINE", "TOTAL_ITERS": 400, "WARM_UP_ITERS": 10},
        "SNAPSHOT_ITERS": 5,
    },
    "TEST": {"EVAL_ITERS": 100},
}
MODES = {
    "float32": ({}, train_command),
    "float16": ({"AMP": {"ENABLED": True, "DTYPE": "float16"}}, train_command),
    "torchrun-2": ({"ACCUMULATION_STEPS": 1}, torchrun_command),
}


def run_to_the_end(cwd: Path, command: list) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("mode", list(MODES))
def test_a_run_killed_at_random_moments_and_resumed_each_time_ends_bit_identical(tmp_path, mode):
    solver_keys, make_command = MODES[mode]
    job = dict(SOAK_JOB, SOLVER=dict(SOAK_JOB["SOLVER"], **solver_keys))
    run_to_the_end(tmp_path, make_command(write_cfg(tmp_path, dict(job, OUTPUT_DIR="reference"), "reference.yaml")))
    cfg_file = write_cfg(tmp_path, dict(job, OUTPUT_DIR="soaked"), "soaked.yaml")

    def resume() -> list:  # once a checkpoint file exists (its pointer may not, yet)
        return ["--resume"] if list((tmp_path / "soaked").glob("model_*.pth")) else []
    moments = random.Random(f"{SEED}-{mode}")
    kills = 0
    for _ in range(KILLS):
        command = make_command(cfg_file, *resume())
        process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(moments.uniform(0.05, 4.0))
        if process.poll() is not None:  # it finished before this kill
            break
        sigkill_job(process)  # torchrun and its workers alike
        kills += 1
    assert kills >= min(KILLS, 3), f"only {kills} kills landed before the run finished"
    run_to_the_end(tmp_path, make_command(cfg_file, *resume()))
    assert not list((tmp_path / "soaked").glob(".*.tmp"))
    assert_same_final_state(tmp_path / "soaked", tmp_path / "reference")
