"""lr curves recorded from the training scheduler, and the merging of identical curves."""
import warnings

import pytest
import torch
from torch import nn

from pet.lib.config import get_cfg
from pet.reports.lr_curve import LrCurve, distinct_curves, record_lrs
from pet.lib.utils.lr_scheduler import build_schedule
from pet.lib.utils.optimizer import Optimizer


def small_solver():
    cfg = get_cfg()
    scheduler = cfg.SOLVER.SCHEDULER
    scheduler.POLICY = "STEP_COSINE"
    scheduler.TOTAL_EPOCHS = 6
    scheduler.STEPS = (2, 4)
    scheduler.WARM_UP_ITERS = 5
    cfg.SOLVER.OPTIMIZER.BIAS_LR_FACTOR = 2.0
    return cfg.SOLVER


def test_record_lrs_follows_the_schedule_for_every_group_without_warnings():
    solver = small_solver()
    optimizer = Optimizer(nn.Linear(3, 2), solver.OPTIMIZER).build()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scheduler, lrs = record_lrs(optimizer, solver, iter_per_epoch=7)
    schedule = build_schedule(solver.SCHEDULER, 7)
    assert scheduler.max_iter == schedule.max_iter == 42
    for curve, group in zip(lrs, optimizer.param_groups):
        assert len(curve) == 43
        expected = [schedule.factor(i) * group["initial_lr"] for i in range(43)]
        assert curve == pytest.approx(expected, rel=1e-12)


def test_record_lrs_needs_iter_per_epoch_for_epoch_configs():
    solver = small_solver()
    optimizer = torch.optim.SGD(nn.Linear(3, 2).parameters(), lr=0.1)
    with pytest.raises(ValueError, match="TOTAL_EPOCHS=6 needs the iterations per epoch"):
        record_lrs(optimizer, solver)


def test_distinct_curves_merge_identical_curves_and_their_rules():
    lrs = [[1.0, 0.5], [2.0, 1.0], [1.0, 0.5]]
    rules = [("default",), ("bias",), ("norm", "default")]
    assert distinct_curves(lrs, rules) == [
        LrCurve("default/norm", (0, 2), (1.0, 0.5)),
        LrCurve("bias", (1,), (2.0, 1.0)),
    ]
