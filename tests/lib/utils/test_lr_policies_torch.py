"""The torch-like policies against torch's own schedulers, step for step over whole schedules
(lr of every group and, where torch cycles it, momentum), with and without warm-up."""
import warnings

import pytest
import torch
from torch import nn
from torch.optim import lr_scheduler as tls

from pet.lib.config import get_cfg
from pet.lib.utils.lr_scheduler import LearningRateScheduler

T = 120
LRS = (0.2, 0.05)


def make_solver(policy, warmup_iters=0, total=T, **keys):
    solver = get_cfg().SOLVER
    s = solver.SCHEDULER
    s.POLICY, s.TOTAL_ITERS, s.WARM_UP_ITERS, s.WARM_UP_FACTOR = policy, total, warmup_iters, 0.1
    s.WARM_UP_METHOD = "LINEAR"
    for key, value in keys.items():
        node = s[policy] if key in s.get(policy, ()) else s  # the policy's own key first
        node[key] = value
    solver.OPTIMIZER.BASE_LR = LRS[0]
    return solver


def make_optimizer(kind="sgd"):
    params = [nn.Parameter(torch.zeros(2)) for _ in LRS]
    groups = [dict(params=[p], lr=lr) for p, lr in zip(params, LRS)]
    if kind == "adam":
        return torch.optim.Adam(groups, lr=LRS[0])
    return torch.optim.SGD(groups, lr=LRS[0], momentum=0.9)


def values(optimizer):
    """(lrs, momenta) of every group."""
    momenta = [g["betas"][0] if "betas" in g else g["momentum"] for g in optimizer.param_groups]
    return [g["lr"] for g in optimizer.param_groups], momenta


def side_by_side(make_torch, solver, steps=T, kind="sgd", warmup_iters=0, momentum=False):
    """Ours from iteration 0 against torch's scheduler started at ``warmup_iters`` (after a
    torch LinearLR warm-up when there is one), for ``steps`` iterations."""
    ours_opt, theirs_opt = make_optimizer(kind), make_optimizer(kind)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's own schedulers warn about their chaining
        ours = LearningRateScheduler(ours_opt, solver)
        if warmup_iters:
            theirs = tls.SequentialLR(theirs_opt, [tls.LinearLR(theirs_opt, 0.1, total_iters=warmup_iters),
                                                   make_torch(theirs_opt)], [warmup_iters])
        else:
            theirs = make_torch(theirs_opt)
        for i in range(steps):
            (our_lrs, our_m), (their_lrs, their_m) = values(ours_opt), values(theirs_opt)
            assert our_lrs == pytest.approx(their_lrs, rel=1e-9, abs=1e-15), i
            if momentum:
                assert our_m == pytest.approx(their_m, rel=1e-9), i
            ours_opt.step(), theirs_opt.step()
            ours.step(), theirs.step()


@pytest.mark.parametrize("warmup", [0, 10])
def test_exponential_equals_exponentiallr(warmup):
    side_by_side(lambda o: tls.ExponentialLR(o, gamma=0.97), make_solver("EXPONENTIAL", warmup, GAMMA=0.97),
                 warmup_iters=warmup)


def test_exponential_in_epoch_mode_steps_once_per_epoch():
    solver = make_solver("EXPONENTIAL", GAMMA=0.5)
    solver.SCHEDULER.TOTAL_EPOCHS = 6
    optimizer, reference = make_optimizer(), make_optimizer()
    ours = LearningRateScheduler(optimizer, solver, iter_per_epoch=7)
    theirs = tls.ExponentialLR(reference, gamma=0.5)
    for i in range(42):
        assert values(optimizer)[0] == pytest.approx(values(reference)[0]), i
        optimizer.step(), ours.step()
        if (i + 1) % 7 == 0:
            reference.step(), theirs.step()


@pytest.mark.parametrize("warmup", [0, 10])
@pytest.mark.parametrize("start,end", [(1.0, 0.0), (0.5, 0.9)])
def test_linear_equals_linearlr_over_the_schedule(warmup, start, end):
    side_by_side(lambda o: tls.LinearLR(o, start_factor=start, end_factor=end, total_iters=T - warmup),
                 make_solver("LINEAR", warmup, START_FACTOR=start, END_FACTOR=end),
                 warmup_iters=warmup, steps=T + 10)


@pytest.mark.parametrize("warmup", [0, 10])
@pytest.mark.parametrize("t_0,t_mult,floor", [(10, 1, 0.0), (7, 2, 0.1), (5, 3, 0.0)])
def test_cosine_restarts_equals_cosineannealingwarmrestarts(warmup, t_0, t_mult, floor):
    side_by_side(lambda o: tls.CosineAnnealingWarmRestarts(o, T_0=t_0, T_mult=t_mult, eta_min=0.01),
                 make_solver("COSINE_RESTARTS", warmup, T_0=t_0, T_MULT=t_mult, MIN_LR=0.01),
                 warmup_iters=warmup)


ONE_CYCLE_CASES = [
    dict(),
    dict(PCT_START=0.25, ANNEAL_STRATEGY="linear", DIV_FACTOR=10.0, FINAL_DIV_FACTOR=100.0),
    dict(THREE_PHASE=True, BASE_MOMENTUM=0.8, MAX_MOMENTUM=0.99),
    dict(THREE_PHASE=True, ANNEAL_STRATEGY="linear", PCT_START=0.4),
]


def torch_one_cycle(optimizer, keys, total_steps):
    return tls.OneCycleLR(
        optimizer, max_lr=list(LRS), total_steps=total_steps, pct_start=keys.get("PCT_START", 0.3),
        anneal_strategy=keys.get("ANNEAL_STRATEGY", "cos"), div_factor=keys.get("DIV_FACTOR", 25.0),
        final_div_factor=keys.get("FINAL_DIV_FACTOR", 1e4), three_phase=keys.get("THREE_PHASE", False),
        base_momentum=keys.get("BASE_MOMENTUM", 0.85), max_momentum=keys.get("MAX_MOMENTUM", 0.95))


@pytest.mark.parametrize("kind", ["sgd", "adam"])
@pytest.mark.parametrize("keys", ONE_CYCLE_CASES)
def test_one_cycle_equals_onecyclelr_lr_and_momentum(keys, kind):
    side_by_side(lambda o: torch_one_cycle(o, keys, T), make_solver("ONE_CYCLE", **keys),
                 kind=kind, momentum=True)


def test_one_cycle_after_a_warmup_is_onecyclelr_started_at_the_warmups_end():
    """torch cannot chain OneCycleLR after a warm-up (its constructor rewrites the lrs): the
    reference is OneCycleLR over the T - W iterations after the warm-up, shifted by W."""
    W = 20
    optimizer, reference = make_optimizer(), make_optimizer()
    ours = LearningRateScheduler(optimizer, make_solver("ONE_CYCLE", W))
    for i in range(W):
        assert values(optimizer)[0] == pytest.approx([lr * (0.1 + 0.9 * i / W) for lr in LRS]), i
        assert values(optimizer)[1] == pytest.approx([0.95, 0.95])
        optimizer.step(), ours.step()
    theirs = torch_one_cycle(reference, {}, T - W)
    for i in range(W, T + 5):
        assert values(optimizer) == (pytest.approx(values(reference)[0]), pytest.approx(values(reference)[1])), i
        optimizer.step(), ours.step()
        if i < T - 1:  # torch refuses to step past total_steps; ours holds its last value
            reference.step(), theirs.step()


CYCLIC_CASES = [
    dict(STEP_SIZE_UP=10),
    dict(STEP_SIZE_UP=7, STEP_SIZE_DOWN=13, MODE="triangular2", BASE_LR_FACTOR=0.2),
    dict(STEP_SIZE_UP=9, MODE="exp_range", GAMMA=0.99, BASE_MOMENTUM=0.7, MAX_MOMENTUM=0.95),
]


def torch_cyclic(optimizer, keys):
    factor = keys.get("BASE_LR_FACTOR", 0.1)
    return tls.CyclicLR(
        optimizer, base_lr=[lr * factor for lr in LRS], max_lr=list(LRS),
        step_size_up=keys["STEP_SIZE_UP"], step_size_down=keys.get("STEP_SIZE_DOWN"),
        mode=keys.get("MODE", "triangular"), gamma=keys.get("GAMMA", 1.0),
        base_momentum=keys.get("BASE_MOMENTUM", 0.8), max_momentum=keys.get("MAX_MOMENTUM", 0.9))


@pytest.mark.parametrize("kind", ["sgd", "adam"])
@pytest.mark.parametrize("keys", CYCLIC_CASES)
def test_cyclic_equals_cycliclr_lr_and_momentum(keys, kind):
    side_by_side(lambda o: torch_cyclic(o, keys), make_solver("CYCLIC", **keys), kind=kind, momentum=True)


@pytest.mark.parametrize("keys", CYCLIC_CASES[:2])
def test_cyclic_after_a_warmup_equals_sequentiallr(keys):
    side_by_side(lambda o: torch_cyclic(o, dict(keys, MAX_MOMENTUM=0.9)),
                 make_solver("CYCLIC", 10, CYCLE_MOMENTUM=False, **keys), warmup_iters=10)


@pytest.mark.parametrize("policy", ["ONE_CYCLE", "CYCLIC"])
def test_momentum_is_untouched_when_not_cycled(policy):
    optimizer = make_optimizer()
    scheduler = LearningRateScheduler(optimizer, make_solver(policy, CYCLE_MOMENTUM=False))
    for _ in range(T):
        optimizer.step(), scheduler.step()
        assert values(optimizer)[1] == [0.9, 0.9]
    assert scheduler.momentum is None


@pytest.mark.parametrize("policy", ["ONE_CYCLE", "CYCLIC"])
def test_resumed_momentum_follows_the_iteration_alone(policy):
    first_opt = make_optimizer()
    first = LearningRateScheduler(first_opt, make_solver(policy, STEP_SIZE_UP=10) if policy == "CYCLIC"
                                  else make_solver(policy))
    for _ in range(37):
        first_opt.step(), first.step()
    assert first.state_dict()["iteration"] == 37
    resumed_opt = make_optimizer()
    resumed = LearningRateScheduler(resumed_opt, make_solver(policy, STEP_SIZE_UP=10) if policy == "CYCLIC"
                                    else make_solver(policy))
    resumed.load_state_dict(first.state_dict())
    assert values(resumed_opt) == values(first_opt)
