"""Hyper-parameters scheduled beside the lr (SOLVER.SCHEDULER.PARAMS) against hand-computed
values: DINO's cosine weight decay 0.04 -> 0.4 (its cosine_scheduler's formula), per-group
ratios, a STEP momentum schedule, resume, and every bad input as one ConfigError line."""
import math

import pytest
import torch
from torch import nn

from pet.lib.config import get_cfg
from pet.lib.config.errors import ConfigError
from pet.lib.utils.lr_scheduler import LearningRateScheduler
from pet.lib.utils.solver import validate_solver

# Nothing is trained: torch's "scheduler.step() before optimizer.step()" is moot.
pytestmark = pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")


def dino_weight_decay(i, total, base=0.04, final=0.4):
    """DINO's utils.cosine_scheduler(base, final, epochs, niter_per_ep) at iteration i."""
    return final + 0.5 * (base - final) * (1 + math.cos(math.pi * i / total))


def solver(params, total=100, policy="COSINE", warm_up=0):
    cfg = get_cfg()
    cfg.SOLVER.OPTIMIZER.TYPE = "ADAMW"
    cfg.SOLVER.SCHEDULER.POLICY = policy
    cfg.SOLVER.SCHEDULER.TOTAL_ITERS = total
    cfg.SOLVER.SCHEDULER.STEPS = (50,)
    cfg.SOLVER.SCHEDULER.WARM_UP_ITERS = warm_up
    cfg.SOLVER.SCHEDULER.PARAMS = tuple(params)
    return cfg.SOLVER


def three_groups(cls=torch.optim.AdamW, **kwargs):
    """Groups built with weight decay 0.04 (weights), 0.02 (half) and 0 (norms, biases)."""
    model = nn.Linear(4, 4)
    extra = nn.Linear(4, 1, bias=False)
    return cls([{"params": [model.weight], "weight_decay": 0.04},
                {"params": [extra.weight], "weight_decay": 0.02},
                {"params": [model.bias], "weight_decay": 0.0}], lr=1e-3, **kwargs)


def test_a_dino_cosine_weight_decay_matches_dinos_formula_in_every_group_ratio():
    optimizer = three_groups()
    scheduler = LearningRateScheduler(optimizer, solver([{"PARAM": "weight_decay", "START": 0.04, "END": 0.4}]))
    for i in range(101):
        expected = dino_weight_decay(i, 100)
        decays = [g["weight_decay"] for g in optimizer.param_groups]
        assert decays[0] == pytest.approx(expected, rel=1e-12, abs=1e-15), i
        assert decays[1] == pytest.approx(expected / 2, rel=1e-12, abs=1e-15)
        assert decays[2] == 0.0  # a group without weight decay keeps none
        scheduler.step()


def test_a_resumed_scheduler_sets_the_value_of_its_iteration():
    params = [{"PARAM": "weight_decay", "START": 0.04, "END": 0.4}]
    stepped, resumed = three_groups(), three_groups()
    scheduler = LearningRateScheduler(stepped, solver(params))
    for _ in range(37):
        scheduler.step()
    other = LearningRateScheduler(resumed, solver(params))
    other.load_state_dict(scheduler.state_dict())
    assert [g["weight_decay"] for g in resumed.param_groups] == [g["weight_decay"] for g in stepped.param_groups]
    assert resumed.param_groups[0]["weight_decay"] == pytest.approx(dino_weight_decay(37, 100))


def test_a_step_policy_moves_the_momentum_at_its_milestone_and_warm_up_maps_the_lrs_ramp():
    optimizer = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1, momentum=0.9)
    scheduler = LearningRateScheduler(optimizer, solver(
        [{"PARAM": "momentum", "START": 0.9, "END": 0.99, "POLICY": "STEP", "GAMMA": 0.1}], policy="STEP"))
    values = []
    for _ in range(101):
        values.append(optimizer.param_groups[0]["momentum"])
        scheduler.step()
    assert values[:50] == [pytest.approx(0.9)] * 50 and values[50:] == [pytest.approx(0.99)] * 51
    # A warm-up of its own: the curve's factor ramps from WARM_UP_FACTOR, mapped alike.
    optimizer = three_groups()
    LearningRateScheduler(optimizer, solver([{"PARAM": "weight_decay", "START": 0.04, "END": 0.0,
                                              "WARM_UP_ITERS": 10, "WARM_UP_FACTOR": 0.5}]))
    assert optimizer.param_groups[0]["weight_decay"] == pytest.approx(0.02)


@pytest.mark.parametrize("params, message", [
    ([{"PARAM": "momentum", "START": 0.9, "END": 0.99}],
     r"^SOLVER.SCHEDULER.PARAMS\[0\].PARAM: AdamW has no param-group key 'momentum'; its keys: .*betas"),
    ([{"PARAM": "weight_decay", "START": 0.0, "END": 0.4}], r"^SOLVER.SCHEDULER.PARAMS\[0\].START: must not be 0"),
    ([{"PARAM": "weight_decay", "START": 0.04}], r"^SOLVER.SCHEDULER.PARAMS\[0\].END: expected a finite number, got None"),
    ([{"PARAM": "weight_decay", "START": 0.04, "END": float("inf")}], r"\.END: expected a finite number, got inf"),
    ([{"PARAM": "weight_decay", "START": 0.04, "END": 0.4, "GAMA": 0.1}],
     r"^SOLVER.SCHEDULER.PARAMS\[0\].GAMA: unknown key; allowed: PARAM, START, END, POLICY"),
    ([{"PARAM": "lr", "START": 0.1, "END": 0.0}], r"\.PARAM: 'lr' cannot be scheduled here; the lr follows SOLVER.SCHEDULER"),
    ([{"PARAM": "weight_decay", "START": 0.04, "END": 0.4}] * 2, r"^SOLVER.SCHEDULER.PARAMS\[1\].PARAM: 'weight_decay' is scheduled twice"),
    ([{"PARAM": "weight_decay", "START": 0.04, "END": 0.4, "POLICY": "COSINUS"}],
     r"^SOLVER.SCHEDULER.PARAMS\[0\].POLICY: unknown"),
    ([{"PARAM": "weight_decay", "START": 0.04, "END": 0.4, "WARM_UP_ITERS": 100}],
     r"^SOLVER.SCHEDULER.PARAMS\[0\].WARM_UP_ITERS=100: the warm-up must be shorter"),
    (["weight_decay"], r"^SOLVER.SCHEDULER.PARAMS\[0\]: expected a mapping"),
    # torch.optim.AdamW(weight_decay=-1) raises "Invalid weight_decay value": so does a schedule to it.
    ([{"PARAM": "weight_decay", "START": 0.1, "END": -1}],
     r"^SOLVER.SCHEDULER.PARAMS\[0\].END: -1 has the other sign than START \(0.1\); a scheduled weight_decay "
     r"must not cross 0$"),
], ids=["not-a-key-of-the-optimizer", "zero-start", "no-end", "inf-end", "unknown-key", "the-lr",
        "twice", "unknown-policy", "warm-up-too-long", "not-a-mapping", "crosses-zero"])
def test_bad_entries_are_one_line_naming_the_entry(params, message):
    with pytest.raises(ConfigError, match=message):
        validate_solver(solver(params))


def test_a_pair_such_as_betas_is_refused_by_the_scheduler_naming_the_optimizer():
    with pytest.raises(ConfigError, match=r"PARAMS\[0\].PARAM: AdamW's 'betas' is \(0.9, 0.999\), not a number"):
        LearningRateScheduler(three_groups(), solver([{"PARAM": "betas", "START": 0.9, "END": 0.99}]))
