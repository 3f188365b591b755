"""The cost of ``LearningRateScheduler.step()`` per policy, side by side with torch's
``MultiStepLR`` (the reference, 1.00x) and ``OneCycleLR`` (which also writes the momentum)
stepping the same optimizer.

    python -m pet.bench.scheduler_benchmark [--calls 1000] [--repeats 21]

Every repeat times ``calls`` steps of each candidate in turn (interleaved, so drift of the
machine hits all alike); the figure is the median over repeats, in microseconds per step. The
optimizer is SGD with momentum over a small model with Pet's rules on (several param groups:
default, bias, norm), as the trainer builds it.
"""
import argparse
import statistics
import time
import warnings
from typing import Callable, Dict, Sequence

import torch
from torch import nn

from pet.lib.config import get_cfg
from pet.lib.utils.lr_scheduler import LearningRateScheduler
from pet.lib.utils.optimizer import Optimizer

POLICIES = ("STEP", "COSINE", "STEP_COSINE", "POLY", "EXPONENTIAL", "LINEAR", "COSINE_RESTARTS",
            "ONE_CYCLE", "CYCLIC", "WSD", "PHASES")
TORCH_REFERENCE = "torch MultiStepLR"
TORCH_ONE_CYCLE = "torch OneCycleLR"
PHASES = [{"POLICY": "LINEAR", "LENGTH": 500}, {"POLICY": "COSINE"}]


def solver_cfg(policy: str):
    """``SOLVER`` of a 1000-iteration schedule of ``policy`` with a 50-iteration warm-up."""
    cfg = get_cfg()
    cfg.SOLVER.OPTIMIZER.MOMENTUM = 0.9
    cfg.SOLVER.OPTIMIZER.BIAS_LR_FACTOR = 2.0
    cfg.SOLVER.SCHEDULER.POLICY = policy
    if policy == "PHASES":
        cfg.SOLVER.SCHEDULER.PHASES = PHASES
    return cfg.SOLVER


def stepper(scheduler) -> Callable[[int], None]:
    """``calls`` steps of ``scheduler``; a schedule stepped past its end holds its last value,
    so the iteration is wound back first and every repeat times the same iterations."""
    def run(calls: int) -> None:
        scheduler.last_epoch = -1
        for _ in range(calls):
            scheduler.step()
    return run


def candidates(policies: Sequence[str], calls: int) -> Dict[str, Callable[[int], None]]:
    """name -> a function stepping it ``calls`` times; all drive one optimizer's groups."""
    model = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 2))
    optimizer = Optimizer(model, solver_cfg("STEP").OPTIMIZER).build()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()  # else torch warns of a scheduler stepped before its optimizer
    runs = {TORCH_REFERENCE: stepper(torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=[600, 800], gamma=0.1))}
    for policy in policies:
        runs[policy] = stepper(LearningRateScheduler(optimizer, solver_cfg(policy)))
    # Last: its constructor rewrites every group's initial_lr (the others have read theirs).
    runs[TORCH_ONE_CYCLE] = stepper(torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=0.01, total_steps=calls))
    return runs


def step_costs(policies: Sequence[str] = POLICIES, calls: int = 1000,
               repeats: int = 21) -> Dict[str, float]:
    """name -> median microseconds per ``step()`` (torch's MultiStepLR first)."""
    runs = candidates(policies, calls)
    seconds = {name: [] for name in runs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's "step() before optimizer.step()" et al.
        for run in runs.values():  # warm-up
            run(calls)
        for _ in range(repeats):
            for name, run in runs.items():
                start = time.perf_counter()
                run(calls)
                seconds[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(values) * 1e6 for name, values in seconds.items()}


def format_costs(costs: Dict[str, float]) -> str:
    """One line per candidate: microseconds per step and the ratio to torch's MultiStepLR."""
    reference = costs[TORCH_REFERENCE]
    lines = [f"{'scheduler':<20} {'us/step':>8} {'x torch':>8}"]
    lines += [f"{name:<20} {us:8.2f} {us / reference:8.2f}" for name, us in costs.items()]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000, help="steps per timing (1000: the whole schedule)")
    parser.add_argument("--repeats", type=int, default=21, help="timings per candidate")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(format_costs(step_costs(calls=args.calls, repeats=args.repeats)))


if __name__ == "__main__":
    main()
