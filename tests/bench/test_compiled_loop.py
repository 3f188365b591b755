"""Tests of pet/bench/loop_benchmark.time_compiled_job: train_net's loop eager and with
MODEL.COMPILE side by side, the compilation timed apart (inductor builds C++ on the CPU)."""
import os
import shutil

import pytest

from pet.bench.loop_benchmark import time_compiled_job
from pet.lib.config import load_cfg

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None,
                                 reason="torch.compile on the CPU needs a C++ compiler")]


def test_both_loops_run_the_whole_job_and_the_compiled_one_compiles_in_its_first_iteration():
    cfg = load_cfg("cfgs/digits_cnn_sgd_step.yaml", [
        "SOLVER.SCHEDULER.TOTAL_EPOCHS", "None", "SOLVER.SCHEDULER.TOTAL_ITERS", "12", "SOLVER.SCHEDULER.STEPS", "(8,)",
        "SOLVER.SCHEDULER.WARM_UP_EPOCHS", "None", "SOLVER.SCHEDULER.WARM_UP_ITERS", "2",
        "SOLVER.SNAPSHOT_EPOCHS", "None", "SOLVER.SNAPSHOT_ITERS", "0", "TEST.EVAL_EPOCHS", "None",
        "MODEL.CNN.CHANNELS", "(4, 8, 8)", "MODEL.CNN.HIDDEN_DIM", "16"])
    times = time_compiled_job(cfg)
    assert set(times) == {"eager", "compiled"}
    assert all(t["seconds"] > 0 and t["first_seconds"] > 0 for t in times.values())
    assert times["compiled"]["first_seconds"] > times["eager"]["first_seconds"]  # it compiles then
