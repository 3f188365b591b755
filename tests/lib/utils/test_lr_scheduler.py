"""LearningRateScheduler against the issue's formulas (written out here independently) and
against torch's own schedulers, step for step."""
import logging
import math
import warnings

import pytest
import torch
from torch import nn

from pet.lib.config import ConfigError, get_cfg
from pet.lib.utils.lr_scheduler import LearningRateScheduler

T, W, F, M = 100, 10, 0.25, 0.05
STEPS, GAMMA, POW = (40, 70), 0.5, 0.9


def expected_factor(policy, method, i, T=T, W=W, f=F, m=M, steps=STEPS, gamma=GAMMA, power=POW):
    """The issue's semantics, transcribed literally."""
    i = min(i, T)
    warmup = 1.0
    if i < W:
        warmup = f if method == "CONSTANT" else f + (1 - f) * i / W
    n_passed = sum(1 for s in steps if s <= i)
    if policy == "STEP":
        return warmup * gamma ** n_passed
    if policy == "COSINE":
        return warmup if i < W else m + (1 - m) * 0.5 * (1 + math.cos(math.pi * (i - W) / (T - W)))
    if policy == "POLY":
        return warmup if i < W else m + (1 - m) * (1 - (i - W) / (T - W)) ** power
    L = steps[-1]
    if i < L:
        return warmup * gamma ** n_passed
    return gamma ** len(steps) * (m + (1 - m) * 0.5 * (1 + math.cos(math.pi * (i - L) / (T - L))))


def make_solver(policy="STEP", method="LINEAR", warmup_iters=W, min_lr=M, total_iters=T, steps=STEPS):
    solver = get_cfg().SOLVER
    s = solver.SCHEDULER
    s.POLICY, s.WARM_UP_METHOD, s.WARM_UP_ITERS, s.WARM_UP_FACTOR = policy, method, warmup_iters, F
    s.TOTAL_ITERS, s.STEPS, s.GAMMA, s.LR_POW, s.MIN_LR_FACTOR = total_iters, steps, GAMMA, POW, min_lr
    solver.OPTIMIZER.BASE_LR = 0.2
    return solver


def make_optimizer(lrs=(0.2, 0.05)):
    params = [nn.Parameter(torch.zeros(2)) for _ in lrs]
    return torch.optim.SGD([dict(params=[p], lr=lr) for p, lr in zip(params, lrs)], lr=lrs[0])


def run(scheduler, n):
    """lrs of every group for iterations start .. start + n - 1 (optimizer.step() each time)."""
    history = []
    for _ in range(n):
        history.append([g["lr"] for g in scheduler.optimizer.param_groups])
        scheduler.optimizer.step()
        scheduler.step()
    return history


@pytest.mark.parametrize("policy", ["STEP", "COSINE", "STEP_COSINE", "POLY"])
@pytest.mark.parametrize("method", ["CONSTANT", "LINEAR"])
def test_every_policy_and_warmup_follows_the_formula(policy, method):
    scheduler = LearningRateScheduler(make_optimizer(), make_solver(policy, method))
    for i, lrs in enumerate(run(scheduler, T + 20)):  # 20 iterations past the end
        factor = expected_factor(policy, method, i)
        assert lrs == pytest.approx([0.2 * factor, 0.05 * factor], rel=1e-12, abs=1e-15), (i, lrs)
        assert min(lrs) >= 0


@pytest.mark.parametrize("policy", ["COSINE", "POLY", "STEP_COSINE"])
def test_schedule_stays_at_its_last_value_past_the_end(policy):
    scheduler = LearningRateScheduler(make_optimizer(), make_solver(policy, min_lr=0.0))
    history = run(scheduler, T + 50)
    assert history[T:] == [history[T]] * 50
    assert history[T][0] == pytest.approx(0.0, abs=1e-15)


def torch_side_by_side(make_torch, solver, n=T):
    ours = LearningRateScheduler(make_optimizer(), solver)
    torch_opt = make_optimizer()
    theirs = make_torch(torch_opt)
    for i in range(n + 1):
        assert [g["lr"] for g in ours.optimizer.param_groups] == pytest.approx(
            [g["lr"] for g in torch_opt.param_groups], rel=1e-9, abs=1e-12
        ), i
        ours.optimizer.step(), torch_opt.step()
        ours.step(), theirs.step()


def test_step_without_warmup_equals_multisteplr():
    torch_side_by_side(
        lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=list(STEPS), gamma=GAMMA),
        make_solver("STEP", warmup_iters=0),
    )


def test_cosine_without_warmup_and_floor_equals_cosineannealinglr():
    torch_side_by_side(
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=T),
        make_solver("COSINE", warmup_iters=0, min_lr=0.0),
    )


def test_poly_without_warmup_and_floor_equals_polynomiallr():
    torch_side_by_side(
        lambda o: torch.optim.lr_scheduler.PolynomialLR(o, total_iters=T, power=POW),
        make_solver("POLY", warmup_iters=0, min_lr=0.0),
    )


def test_linear_warmup_then_step_equals_torch_chain():
    """LINEAR warm-up is torch's LinearLR(start_factor=f, total_iters=W) times MultiStepLR."""
    def chained(o):
        warm = torch.optim.lr_scheduler.LinearLR(o, start_factor=F, total_iters=W)
        step = torch.optim.lr_scheduler.MultiStepLR(o, milestones=list(STEPS), gamma=GAMMA)
        return torch.optim.lr_scheduler.ChainedScheduler([warm, step])

    torch_side_by_side(chained, make_solver("STEP", "LINEAR"))


def test_epoch_mode_converts_epochs_to_iterations():
    solver = make_solver("STEP", "LINEAR")
    s = solver.SCHEDULER
    s.TOTAL_EPOCHS, s.STEPS, s.WARM_UP_EPOCHS = 10, (4, 7), 1
    s.TOTAL_ITERS, s.WARM_UP_ITERS = 999999, 999  # ignored in epoch mode
    scheduler = LearningRateScheduler(make_optimizer(), solver, iter_per_epoch=10)
    assert (scheduler.max_iter, scheduler.milestones, scheduler.warmup_iters) == (100, (40, 70), 10)
    for i, lrs in enumerate(run(scheduler, T + 1)):
        assert lrs[0] == pytest.approx(0.2 * expected_factor("STEP", "LINEAR", i))


def test_warmup_epochs_alone_convert_in_iteration_mode():
    solver = make_solver("COSINE")
    solver.SCHEDULER.WARM_UP_EPOCHS = 0.5
    scheduler = LearningRateScheduler(make_optimizer(), solver, iter_per_epoch=20)
    assert scheduler.warmup_iters == 10 and scheduler.max_iter == T


@pytest.mark.parametrize("policy", ["STEP", "COSINE", "STEP_COSINE", "POLY"])
@pytest.mark.parametrize("resume_at", [0, 1, 9, 10, 39, 40, 41, 99, 100, 130])
def test_resume_at_any_iteration_continues_exactly(policy, resume_at):
    uninterrupted = run(LearningRateScheduler(make_optimizer(), make_solver(policy)), T + 40)
    first = LearningRateScheduler(make_optimizer(), make_solver(policy))
    run(first, resume_at)
    state = first.state_dict()
    assert state == {"iteration": resume_at, "info": first.info}
    resumed = LearningRateScheduler(make_optimizer(), make_solver(policy))
    resumed.load_state_dict(state)
    assert resumed.last_epoch == resume_at
    assert run(resumed, T + 40 - resume_at) == uninterrupted[resume_at:]


@pytest.mark.parametrize("start", [0, 5, 55])
def test_start_iter_and_last_epoch_set_the_iteration(start):
    expected = run(LearningRateScheduler(make_optimizer(), make_solver("COSINE")), 70)[start:]
    by_start = LearningRateScheduler(make_optimizer(), make_solver("COSINE"), start_iter=start)
    assert by_start.iteration == start
    assert run(by_start, 70 - start) == expected
    optimizer = make_optimizer()
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]
    by_last_epoch = LearningRateScheduler(optimizer, make_solver("COSINE"), last_epoch=start - 1)
    assert run(by_last_epoch, 70 - start) == expected


def test_start_iter_and_last_epoch_together_are_refused():
    with pytest.raises(ValueError, match="not both"):
        LearningRateScheduler(make_optimizer(), make_solver(), start_iter=3, last_epoch=5)


def test_resume_follows_the_current_config_not_the_checkpoint():
    old = LearningRateScheduler(make_optimizer(), make_solver("STEP", total_iters=100, steps=(40, 70)))
    run(old, 50)
    state = old.state_dict()
    # The user extends the schedule and moves the milestones before resuming, and the optimizer
    # carries the lr the old run had at iteration 50 (as Optimizer.load_state_dict restores it;
    # the groups' initial_lr is the config's, which the checkpointer re-applies).
    optimizer = make_optimizer()
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]
        group["lr"] *= 0.5
    new_solver = make_solver("STEP", total_iters=200, steps=(60, 150))
    resumed = LearningRateScheduler(optimizer, new_solver)
    resumed.load_state_dict(state)
    history = run(resumed, 150)
    for offset, lrs in enumerate(history):
        i = 50 + offset
        factor = expected_factor("STEP", "LINEAR", i, T=200, steps=(60, 150))
        assert lrs == pytest.approx([0.2 * factor, 0.05 * factor])


def test_state_dict_is_plain_numbers_for_weights_only_loading(tmp_path):
    scheduler = LearningRateScheduler(make_optimizer(), make_solver())
    run(scheduler, 7)
    scheduler.info["best_acc"] = 0.93
    torch.save(scheduler.state_dict(), tmp_path / "s.pth")
    state = torch.load(tmp_path / "s.pth", weights_only=True)
    fresh = LearningRateScheduler(make_optimizer(), make_solver())
    fresh.load_state_dict(state)
    assert fresh.iteration == 7 and fresh.info["best_acc"] == 0.93


def test_large_lr_changes_are_logged_once_each(caplog):
    scheduler = LearningRateScheduler(make_optimizer(), make_solver("STEP", warmup_iters=0))
    with caplog.at_level(logging.INFO, logger="pet.lib.utils.lr_scheduler"):
        run(scheduler, T + 5)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "Changing learning rate 0.2000000 -> 0.1000000 at iteration 40",
        "Changing learning rate 0.1000000 -> 0.0500000 at iteration 70",
    ]


def test_the_log_line_names_the_optimizer_of_several(caplog):
    """SOLVER.OPTIMIZERS: each optimizer's scheduler says whose lr changes."""
    scheduler = LearningRateScheduler(make_optimizer(), make_solver("STEP", warmup_iters=0), name="generator")
    with caplog.at_level(logging.INFO, logger="pet.lib.utils.lr_scheduler"):
        run(scheduler, 45)
    assert [r.getMessage() for r in caplog.records] == [
        "Changing learning rate of generator 0.2000000 -> 0.1000000 at iteration 40"]


def test_a_linear_ramp_is_not_logged_but_a_constant_warmup_end_is(caplog):
    with caplog.at_level(logging.INFO, logger="pet.lib.utils.lr_scheduler"):
        run(LearningRateScheduler(make_optimizer(), make_solver("STEP", "LINEAR")), 45)
        assert [r.getMessage() for r in caplog.records] == [
            "Changing learning rate 0.2000000 -> 0.1000000 at iteration 40"
        ]
        caplog.clear()
        run(LearningRateScheduler(make_optimizer(), make_solver("STEP", "CONSTANT")), 12)
        assert [r.getMessage() for r in caplog.records] == [
            "Changing learning rate 0.0500000 -> 0.2000000 at iteration 10"
        ]


def test_no_torch_warnings_in_normal_use():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(LearningRateScheduler(make_optimizer(), make_solver()), 5)


def scheduler_error(solver, iter_per_epoch=-1):
    with pytest.raises(ConfigError) as error:
        LearningRateScheduler(make_optimizer(), solver, iter_per_epoch=iter_per_epoch)
    assert "\n" not in str(error.value)
    return str(error.value)


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("POLICY", "EXP", "SOLVER.SCHEDULER.POLICY: unknown value 'EXP'; allowed: STEP, COSINE, STEP_COSINE, POLY, EXPONENTIAL, LINEAR, COSINE_RESTARTS, ONE_CYCLE, CYCLIC, WSD, PHASES"),
        ("WARM_UP_METHOD", "EXPONENTIAL", "SOLVER.SCHEDULER.WARM_UP_METHOD: unknown value 'EXPONENTIAL'; allowed: CONSTANT, LINEAR"),
        ("STEPS", (70, 40), "SOLVER.SCHEDULER.STEPS: must be sorted in increasing order, got (70, 40)"),
        ("STEPS", (-5, 40), "SOLVER.SCHEDULER.STEPS: must be >= 0, got (-5, 40)"),
        ("STEPS", (40, 100), "SOLVER.SCHEDULER.STEPS: every milestone must be below the schedule's length (100 iterations)"),
        ("GAMMA", 0.0, "SOLVER.SCHEDULER.GAMMA: must be > 0, got 0.0"),
        ("GAMMA", -0.1, "SOLVER.SCHEDULER.GAMMA: must be > 0, got -0.1"),
        ("WARM_UP_FACTOR", -0.1, "SOLVER.SCHEDULER.WARM_UP_FACTOR: must be >= 0"),
        ("WARM_UP_FACTOR", 1.5, "SOLVER.SCHEDULER.WARM_UP_FACTOR: must be <= 1"),
        ("MIN_LR_FACTOR", -0.1, "SOLVER.SCHEDULER.MIN_LR_FACTOR: must be >= 0"),
        ("WARM_UP_ITERS", 100, "SOLVER.SCHEDULER.WARM_UP_ITERS=100: the warm-up must be shorter than the schedule (100 iterations)"),
        ("WARM_UP_ITERS", -1, "SOLVER.SCHEDULER.WARM_UP_ITERS: expected an integer >= 0, got -1"),
        ("TOTAL_ITERS", 0, "SOLVER.SCHEDULER.TOTAL_ITERS: expected an integer >= 1, got 0"),
        ("LR_POW", 0.0, "SOLVER.SCHEDULER.LR_POW: must be > 0"),
    ],
)
def test_bad_scheduler_values_are_rejected_naming_the_key(key, value, message):
    solver = make_solver()
    solver.SCHEDULER[key] = value
    assert scheduler_error(solver).startswith(message)


def test_epochs_without_iter_per_epoch_are_rejected():
    solver = make_solver()
    solver.SCHEDULER.TOTAL_EPOCHS = 12
    assert scheduler_error(solver) == (
        "SOLVER.SCHEDULER.TOTAL_EPOCHS=12 needs the iterations per epoch (iter_per_epoch > 0), "
        "got iter_per_epoch=-1"
    )
    solver = make_solver()
    solver.SCHEDULER.WARM_UP_EPOCHS = 1
    assert scheduler_error(solver).startswith("SOLVER.SCHEDULER.WARM_UP_EPOCHS=1 needs the iterations per epoch")


def test_warmup_epochs_longer_than_the_epoch_schedule_are_rejected():
    solver = make_solver(steps=(2,))
    solver.SCHEDULER.TOTAL_EPOCHS, solver.SCHEDULER.WARM_UP_EPOCHS = 5, 6
    assert scheduler_error(solver, iter_per_epoch=10).startswith(
        "SOLVER.SCHEDULER.WARM_UP_EPOCHS=6: the warm-up must be shorter than the schedule (5 epochs = 50 iterations)"
    )


def test_step_cosine_needs_a_milestone_after_the_warmup():
    assert scheduler_error(make_solver("STEP_COSINE", steps=())).startswith(
        "SOLVER.SCHEDULER.STEPS: STEP_COSINE needs at least one milestone"
    )
    assert scheduler_error(make_solver("STEP_COSINE", steps=(5,))).startswith(
        "SOLVER.SCHEDULER.STEPS: STEP_COSINE's last milestone (5 iterations) must not fall inside the warm-up"
    )
