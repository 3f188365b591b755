"""WSD (its formulas and its extension on resume) and PHASES (against torch's SequentialLR where
torch gets it right, hand-computed values where it does not), floors and the change log."""
import logging
import math
import warnings

import pytest
from torch.optim import lr_scheduler as tls

from pet.lib.utils.lr_scheduler import LearningRateScheduler
from tests.lib.utils.test_lr_policies_torch import LRS, make_optimizer, make_solver, values


def lrs_over(scheduler, n):
    """Group 0's lr at iterations start .. start + n - 1."""
    history = []
    for _ in range(n):
        history.append(scheduler.optimizer.param_groups[0]["lr"])
        scheduler.optimizer.step(), scheduler.step()
    return history


# --- WSD -------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,decay", [
    ("LINEAR", lambda p: 1 - p), ("COSINE", lambda p: (1 + math.cos(math.pi * p)) / 2),
    ("SQRT", lambda p: 1 - math.sqrt(p))])
def test_wsd_warms_up_holds_then_decays_to_the_floor(shape, decay):
    solver = make_solver("WSD", 10, total=100, DECAY_ITERS=30, DECAY_SHAPE=shape, MIN_LR_FACTOR=0.1)
    history = lrs_over(LearningRateScheduler(make_optimizer(), solver), 110)
    for i, lr in enumerate(history):
        if i < 10:
            factor = 0.1 + 0.9 * i / 10
        elif i < 70:
            factor = 1.0
        else:
            factor = 0.1 + 0.9 * decay(min(i - 70, 30) / 30)
        assert lr == pytest.approx(LRS[0] * factor, rel=1e-12), i


def test_wsd_decay_fraction_is_of_the_whole_schedule():
    solver = make_solver("WSD", 0, total=200, DECAY_FRACTION=0.25)
    history = lrs_over(LearningRateScheduler(make_optimizer(), solver), 201)
    assert history[150] == LRS[0] and history[151] < LRS[0] and history[200] == 0.0


def test_wsd_extended_on_resume_keeps_the_stable_phase_and_decays_at_the_new_end():
    short = make_solver("WSD", 10, total=1000, DECAY_ITERS=100)
    first = LearningRateScheduler(make_optimizer(), short)
    lrs_over(first, 600)
    longer = make_solver("WSD", 10, total=3000, DECAY_ITERS=100)
    resumed = LearningRateScheduler(make_optimizer(), longer, start_iter=first.iteration)
    history = lrs_over(resumed, 2401)  # iterations 600 .. 3000
    assert history[:2300] == [LRS[0]] * 2300  # stable until 2900, where the old run had decayed
    assert history[2350] == pytest.approx(LRS[0] * 0.5)
    assert history[-1] == 0.0
    # And through the state dict, as train_net resumes.
    again = LearningRateScheduler(make_optimizer(), longer)
    again.load_state_dict(first.state_dict())
    assert lrs_over(again, 2401) == history


# --- PHASES ----------------------------------------------------------------------------------
def phases_solver(phases, warmup=0, total=120, **keys):
    solver = make_solver("PHASES", warmup, total=total, **keys)
    solver.SCHEDULER.PHASES = tuple(phases)
    return solver


def test_linear_warmup_then_cosine_equals_sequentiallr():
    phases = [dict(POLICY="LINEAR", LENGTH=20, START_FACTOR=0.05, END_FACTOR=1.0), dict(POLICY="COSINE")]
    ours_opt, theirs_opt = make_optimizer(), make_optimizer()
    ours = LearningRateScheduler(ours_opt, phases_solver(phases))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = tls.SequentialLR(theirs_opt, [tls.LinearLR(theirs_opt, 0.05, 1.0, total_iters=20),
                                               tls.CosineAnnealingLR(theirs_opt, T_max=100)], [20])
        for i in range(121):
            assert values(ours_opt)[0] == pytest.approx(values(theirs_opt)[0], rel=1e-9, abs=1e-15), i
            ours_opt.step(), theirs_opt.step(), ours.step(), theirs.step()


def test_stated_scale_1_restarts_each_phase_from_base_lr_like_sequentiallr():
    """SequentialLR starts every scheduler from the base lr: SCALE 1.0 in every phase."""
    phases = [dict(POLICY="EXPONENTIAL", LENGTH=30, GAMMA=0.9),
              dict(POLICY="STEP", LENGTH=50, STEPS=(10, 30), GAMMA=0.5, SCALE=1.0),
              dict(POLICY="EXPONENTIAL", GAMMA=0.95, SCALE=1.0)]
    ours_opt, theirs_opt = make_optimizer(), make_optimizer()
    ours = LearningRateScheduler(ours_opt, phases_solver(phases))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = tls.SequentialLR(theirs_opt, [tls.ExponentialLR(theirs_opt, 0.9),
                                               tls.MultiStepLR(theirs_opt, [10, 30], 0.5),
                                               tls.ExponentialLR(theirs_opt, 0.95)], [30, 80])
        for i in range(121):
            assert values(ours_opt)[0] == pytest.approx(values(theirs_opt)[0], rel=1e-9), i
            ours_opt.step(), theirs_opt.step(), ours.step(), theirs.step()


def test_phases_continue_from_where_the_previous_ended_by_default():
    """Hand-computed: SequentialLR cannot continue a phase from the previous one's end (each
    restarts at the base lr), MMEngine's chained schedulers can; here it is the default."""
    phases = [dict(POLICY="EXPONENTIAL", LENGTH=30, GAMMA=0.9),
              dict(POLICY="STEP", LENGTH=50, STEPS=(10,), GAMMA=0.5),
              dict(POLICY="COSINE", SCALE=0.2)]
    history = lrs_over(LearningRateScheduler(make_optimizer(), phases_solver(phases, warmup=10, total=130)), 131)
    for i, lr in enumerate(history):
        if i < 10:
            factor = 0.1 + 0.9 * i / 10
        elif i < 40:
            factor = 0.9 ** (i - 10)
        elif i < 90:
            factor = 0.9 ** 30 * (0.5 if i - 40 >= 10 else 1.0)
        else:
            factor = 0.2 * (1 + math.cos(math.pi * min(i - 90, 40) / 40)) / 2
        assert lr == pytest.approx(LRS[0] * factor, rel=1e-12), i


def test_phase_lengths_are_in_epochs_in_epoch_mode():
    solver = phases_solver([dict(POLICY="LINEAR", LENGTH=1.5, START_FACTOR=0.1, END_FACTOR=1.0),
                            dict(POLICY="COSINE")])
    solver.SCHEDULER.TOTAL_EPOCHS = 5
    scheduler = LearningRateScheduler(make_optimizer(), solver, iter_per_epoch=10)
    assert scheduler.schedule.options.begins == (0, 15)
    assert scheduler.log_events == frozenset({15})


# --- floors ----------------------------------------------------------------------------------
def test_min_lr_is_one_absolute_floor_for_every_group_like_eta_min():
    ours_opt, theirs_opt = make_optimizer(), make_optimizer()
    ours = LearningRateScheduler(ours_opt, make_solver("COSINE", 0, MIN_LR=0.01))
    theirs = tls.CosineAnnealingLR(theirs_opt, T_max=120, eta_min=0.01)
    for i in range(121):
        assert values(ours_opt)[0] == pytest.approx(values(theirs_opt)[0], rel=1e-9), i
        ours_opt.step(), theirs_opt.step(), ours.step(), theirs.step()
    assert values(ours_opt)[0] == pytest.approx([0.01, 0.01])  # at the end: the floor, every group


def test_min_lr_applies_inside_phases():
    solver = phases_solver([dict(POLICY="LINEAR", LENGTH=20, START_FACTOR=0.5, END_FACTOR=1.0),
                            dict(POLICY="WSD", DECAY_ITERS=50)], MIN_LR=0.02)
    scheduler = LearningRateScheduler(make_optimizer(), solver)
    lrs_over(scheduler, 120)
    assert values(scheduler.optimizer)[0] == pytest.approx([0.02, 0.02])


# --- the change log --------------------------------------------------------------------------
@pytest.mark.parametrize("policy", ["COSINE", "POLY", "STEP_COSINE", "WSD", "LINEAR", "EXPONENTIAL"])
def test_a_smooth_decay_is_not_logged(policy, caplog):
    solver = make_solver(policy, 10, total=1000, STEPS=(500,), MIN_LR_FACTOR=0.0)
    with caplog.at_level(logging.INFO, logger="pet.lib.utils.lr_scheduler"):
        lrs_over(LearningRateScheduler(make_optimizer(), solver), 1001)
    expected = ["Changing learning rate 0.2000000 -> 0.0200000 at iteration 500"] if policy == "STEP_COSINE" else []
    assert [r.getMessage() for r in caplog.records] == expected


def test_phase_boundaries_and_restarts_are_logged(caplog):
    solver = phases_solver([dict(POLICY="COSINE_RESTARTS", LENGTH=60, T_0=30),
                            dict(POLICY="STEP", STEPS=(30,), GAMMA=0.5, SCALE=0.5)])
    with caplog.at_level(logging.INFO, logger="pet.lib.utils.lr_scheduler"):
        lrs_over(LearningRateScheduler(make_optimizer(), solver), 121)
    assert [r.getMessage() for r in caplog.records] == [
        "Changing learning rate 0.0005478 -> 0.2000000 at iteration 30",
        "Changing learning rate 0.0005478 -> 0.1000000 at iteration 60",
        "Changing learning rate 0.1000000 -> 0.0500000 at iteration 90",
    ]
