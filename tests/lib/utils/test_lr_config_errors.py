"""Every bad combination of the new scheduler keys is one ConfigError line naming the key, and
a user policy registered in one place is selected by name."""
import pytest
import torch
from torch import nn

from pet.lib.config import ConfigError, get_cfg
from pet.lib.utils.lr_scheduler import LR_POLICIES, LearningRateScheduler, build_schedule
from tests.lib.utils.test_lr_policies_torch import make_optimizer, make_solver
from tests.lib.utils.test_lr_phases import phases_solver

S = "SOLVER.SCHEDULER"
CASES = [
    (make_solver("COSINE", MIN_LR=0.01, MIN_LR_FACTOR=0.1), f"{S}.MIN_LR=0.01: set MIN_LR (absolute) or MIN_LR_FACTOR"),
    (make_solver("COSINE", MIN_LR=-1.0), f"{S}.MIN_LR: must be >= 0"),
    (make_solver("EXPONENTIAL", GAMMA=1.5), f"{S}.EXPONENTIAL.GAMMA: must be <= 1"),
    (make_solver("LINEAR", START_FACTOR=0.0), f"{S}.LINEAR.START_FACTOR: must be > 0"),
    (make_solver("LINEAR", END_FACTOR=2.0), f"{S}.LINEAR.END_FACTOR: must be <= 1"),
    (make_solver("COSINE_RESTARTS", T_0=0), f"{S}.COSINE_RESTARTS.T_0: expected an integer >= 1"),
    (make_solver("COSINE_RESTARTS", T_MULT=0), f"{S}.COSINE_RESTARTS.T_MULT: expected an integer >= 1"),
    (make_solver("ONE_CYCLE", PCT_START=1.0), f"{S}.ONE_CYCLE.PCT_START: must be < 1"),
    (make_solver("ONE_CYCLE", PCT_START=0.005), f"{S}.ONE_CYCLE.PCT_START=0.005: leaves a phase of one iteration"),
    (make_solver("ONE_CYCLE", THREE_PHASE=True, PCT_START=0.6), f"{S}.ONE_CYCLE.PCT_START=0.6: leaves a phase"),
    (make_solver("ONE_CYCLE", ANNEAL_STRATEGY="exp"), f"{S}.ONE_CYCLE.ANNEAL_STRATEGY: unknown value 'exp'; allowed: cos, linear"),
    (make_solver("ONE_CYCLE", MAX_MOMENTUM=1.0), f"{S}.ONE_CYCLE.MAX_MOMENTUM: must be < 1"),
    (make_solver("CYCLIC", MODE="sawtooth"), f"{S}.CYCLIC.MODE: unknown value 'sawtooth'"),
    (make_solver("CYCLIC", STEP_SIZE_DOWN=-3), f"{S}.CYCLIC.STEP_SIZE_DOWN: expected an integer >= 1"),
    (make_solver("CYCLIC", BASE_LR_FACTOR=1.5), f"{S}.CYCLIC.BASE_LR_FACTOR: must be <= 1"),
    (make_solver("WSD", DECAY_SHAPE="EXP"), f"{S}.WSD.DECAY_SHAPE: unknown value 'EXP'; allowed: LINEAR, COSINE, SQRT"),
    (make_solver("WSD", DECAY_FRACTION=0.0), f"{S}.WSD.DECAY_FRACTION: must be > 0"),
    (make_solver("WSD", 50, DECAY_ITERS=100), f"{S}.WSD.DECAY_ITERS=100: the decay must fit in the 70 iterations after the warm-up"),
    (make_solver("COSINE", PHASES=({"POLICY": "COSINE"},)), f"{S}.PHASES: set, but POLICY is COSINE"),
    (make_solver("PHASES"), f"{S}.PHASES: POLICY PHASES needs a list of mappings"),
    (phases_solver([{"LENGTH": 3}]), f"{S}.PHASES[0].POLICY: missing"),
    (phases_solver([{"POLICY": "NOPE"}]), f"{S}.PHASES[0].POLICY: unknown value 'NOPE'; allowed: STEP"),
    (phases_solver([{"POLICY": "PHASES"}]), f"{S}.PHASES[0].POLICY: PHASES cannot be nested"),
    (phases_solver([{"POLICY": "COSINE", "GAMMA": 0.5}]), f"{S}.PHASES[0].GAMMA: unknown key for COSINE; allowed: POLICY, LENGTH, SCALE"),
    (phases_solver([{"POLICY": "COSINE"}, {"POLICY": "COSINE"}]), f"{S}.PHASES[0].LENGTH: missing"),
    (phases_solver([{"POLICY": "COSINE", "LENGTH": 50}]), f"{S}.PHASES: the lengths come to 50 iterations, the schedule after the warm-up to 120"),
    (phases_solver([{"POLICY": "COSINE", "LENGTH": 150}, {"POLICY": "COSINE"}]), f"{S}.PHASES: the phases before the last fill"),
    (phases_solver([{"POLICY": "COSINE", "LENGTH": 2.5}, {"POLICY": "COSINE"}]), f"{S}.PHASES[0].LENGTH: expected an integer >= 1"),
    (phases_solver([{"POLICY": "COSINE", "SCALE": -1}]), f"{S}.PHASES[0].SCALE: must be >= 0"),
    (phases_solver([{"POLICY": "ONE_CYCLE"}]), f"{S}.PHASES[0].CYCLE_MOMENTUM: momentum is not cycled inside PHASES"),
    (phases_solver([{"POLICY": "EXPONENTIAL", "GAMMA": 2}]), f"{S}.PHASES[0].GAMMA: must be <= 1"),
    (phases_solver([{"POLICY": "STEP", "STEPS": (200,)}]), f"{S}.PHASES[0].STEPS: must be sorted and below the phase's length"),
    (phases_solver([{"POLICY": "STEP_COSINE", "STEPS": ()}]), f"{S}.PHASES[0].STEPS: STEP_COSINE needs at least one milestone"),
]


@pytest.mark.parametrize("solver,message", CASES, ids=[message.split(":")[0] for _, message in CASES])
def test_bad_keys_are_one_line_naming_the_key(solver, message):
    with pytest.raises(ConfigError) as error:
        LearningRateScheduler(make_optimizer(), solver)
    assert "\n" not in str(error.value)
    assert str(error.value).startswith(message), str(error.value)


def test_epoch_lengths_below_one_iteration_are_refused():
    solver = make_solver("COSINE_RESTARTS", T_0=0.01)
    solver.SCHEDULER.TOTAL_EPOCHS = 3
    with pytest.raises(ConfigError, match=r"COSINE_RESTARTS.T_0=0.01: comes to less than one iteration"):
        build_schedule(solver.SCHEDULER, 10)


def test_a_user_policy_is_selected_by_name_alone_and_in_phases():
    @LR_POLICIES.register()
    def square_root_decay(schedule, i):
        """A pure function of the iteration, registered in the user's module."""
        return 1.0 / (1 + i) ** 0.5

    try:
        optimizer = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.8)
        solver = make_solver("square_root_decay")
        scheduler = LearningRateScheduler(optimizer, solver)
        for _ in range(3):
            optimizer.step(), scheduler.step()
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.8 / 2)
        solver = phases_solver([{"POLICY": "STEP", "LENGTH": 10, "STEPS": (5,), "GAMMA": 0.5},
                                {"POLICY": "SQUARE_ROOT_DECAY"}])
        schedule = build_schedule(solver.SCHEDULER)
        assert schedule.factor(13) == pytest.approx(0.5 / 2)
    finally:
        LR_POLICIES.unregister("square_root_decay")


def test_a_warm_up_that_rounds_to_the_whole_schedule_is_refused():
    scheduler = get_cfg().SOLVER.SCHEDULER
    scheduler.POLICY, scheduler.TOTAL_EPOCHS, scheduler.WARM_UP_EPOCHS, scheduler.STEPS = "COSINE", 1.0, 0.99, ()
    with pytest.raises(ConfigError, match=r"^SOLVER.SCHEDULER.WARM_UP_EPOCHS=0.99: the warm-up must be "
                                          r"shorter than the schedule; rounded to iterations both are 10"):
        build_schedule(scheduler, iter_per_epoch=10)


def test_momentum_cycling_needs_an_optimizer_with_momentum_or_betas():
    cfg = get_cfg()
    cfg.SOLVER.SCHEDULER.POLICY = "ONE_CYCLE"
    adagrad = torch.optim.Adagrad([nn.Parameter(torch.zeros(2))], lr=0.1)
    with pytest.raises(ConfigError, match=r"ONE_CYCLE.CYCLE_MOMENTUM: True needs an optimizer with a "
                                          r"momentum or betas, Adagrad has neither"):
        LearningRateScheduler(adagrad, cfg.SOLVER)
    cfg.SOLVER.SCHEDULER.ONE_CYCLE.CYCLE_MOMENTUM = False
    LearningRateScheduler(adagrad, cfg.SOLVER)
