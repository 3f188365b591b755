"""pet.bench.scheduler_benchmark runs and reports every candidate (no assertion on speed: the
figures are measured on a quiet machine); a policy's precomputed constants are built once per
schedule and the factors stay a pure function of the iteration."""
import math

from pet.bench.scheduler_benchmark import TORCH_ONE_CYCLE, TORCH_REFERENCE, format_costs, step_costs
from pet.lib.utils.lr_schedules import LR_POLICIES, LRPolicy, Schedule


def test_every_candidate_is_timed_beside_torch():
    costs = step_costs(policies=("STEP", "ONE_CYCLE", "PHASES"), calls=20, repeats=2)
    assert list(costs) == [TORCH_REFERENCE, "STEP", "ONE_CYCLE", "PHASES", TORCH_ONE_CYCLE]
    assert all(math.isfinite(us) and us > 0 for us in costs.values())
    assert format_costs(costs).splitlines()[1].split()[-1] == "1.00"


def test_precompute_runs_once_per_schedule_and_factors_are_pure():
    calls = []

    def halves(schedule):
        calls.append(schedule.max_iter)
        return schedule.max_iter // 2

    LR_POLICIES.register(LRPolicy(lambda s, i: 1.0 if i < s.precomputed else 0.5, precompute=halves),
                         name="HALVES")
    try:
        schedule = Schedule(policy="HALVES", max_iter=10)
        forward = [schedule.factor(i) for i in range(11)]
        assert [schedule.factor(i) for i in reversed(range(11))] == forward[::-1]
        assert forward == [1.0] * 5 + [0.5] * 6 and calls == [10]
        floored = schedule.with_floor(0.1)  # a new schedule: its own constants
        assert floored.factor(4) == 1.0 and calls == [10, 10]
    finally:
        LR_POLICIES.unregister("HALVES")
