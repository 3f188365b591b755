"""The loops the training-loop benchmark compares run the same job: train_net's path with its
outputs, and bare loops that follow the job's lr schedule and evaluate where the job does."""
import json
import math

import torch

from pet.lib.config.defaults import get_cfg
from pet.bench.loop_benchmark import SOLVER_LOOP, BareLoop, SolverLoop, time_job
from pet.engine.logger import close_logging


def tiny_job():
    cfg = get_cfg()
    cfg.MODEL.CNN.CHANNELS = (4, 8, 8)
    cfg.MODEL.CNN.HIDDEN_DIM = 16
    cfg.SOLVER.OPTIMIZER.BASE_LR = 0.05
    cfg.SOLVER.SCHEDULER.POLICY = "STEP"
    cfg.SOLVER.SCHEDULER.TOTAL_ITERS = 24
    cfg.SOLVER.SCHEDULER.STEPS = (12, 18)
    cfg.SOLVER.SCHEDULER.WARM_UP_ITERS = 6
    cfg.SOLVER.SCHEDULER.WARM_UP_FACTOR = 0.1
    cfg.SOLVER.SNAPSHOT_ITERS = 10
    cfg.TEST.EVAL_ITERS = 10
    return cfg


def test_the_solver_loop_is_train_nets_path_with_its_outputs(tmp_path):
    cfg = tiny_job()
    with open(tmp_path / "console.txt", "w") as console:
        loop = SolverLoop(cfg, str(tmp_path / "out"), console)
        try:
            for _ in range(24):
                loop.step()
        finally:
            close_logging()
    out = tmp_path / "out"
    assert {"config.yaml", "log.txt", "metrics.json", "model_0000010.pth", "model_0000020.pth",
            "model_final.pth"} <= {p.name for p in out.iterdir()}
    records = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert [r["iteration"] for r in records if "accuracy" in r] == [9, 19, 23]
    assert "Evaluation after iteration 24" in (out / "log.txt").read_text()
    assert loop.seconds > 0


def test_a_bare_loop_follows_the_jobs_lr_and_evaluates_where_the_job_does(tmp_path):
    cfg = tiny_job()
    loop = BareLoop(cfg, fused=True)
    expected = [0.05 * f for f in [0.1 + 0.9 * i / 6 for i in range(6)] + [1.0] * 6
                + [0.1] * 6 + [0.01] * 6]
    lrs = []
    for _ in range(24):
        lrs.append(loop.optimizer.param_groups[0]["lr"])
        loop.step()
    assert all(math.isclose(a, b, rel_tol=1e-12) for a, b in zip(lrs, expected))
    assert loop.optimizer.param_groups[0]["fused"] is True
    assert 0 < loop.eval_seconds < loop.seconds


def test_time_job_times_every_loop_and_restores_the_thread_count():
    threads = torch.get_num_threads()
    result = time_job(tiny_job())
    assert list(result) == [SOLVER_LOOP, "bare loop, torch default", "bare loop, fused"]
    assert all(r["seconds"] > 0 for r in result.values())
    assert result[SOLVER_LOOP]["eval_seconds"] == 0.0
    assert all(result[name]["eval_seconds"] > 0 for name in list(result)[1:])
    assert torch.get_num_threads() == threads
