"""Value checks of the schedule's policy keys (the sub-nodes EXPONENTIAL ... WSD), the floors and
PHASES, with no torch import. Every error is a one-line ConfigError naming the full key.

Lengths are checked in iterations: ``to_iters`` converts a length in the schedule's unit, and
``run_iters`` is how long the policy runs (the schedule after the warm-up, or its phase).
"""
from typing import Any, Callable, Mapping

from yacs.config import CfgNode

from pet.lib.config.errors import ConfigError
from pet.lib.config.validate import check_bool, check_choice, check_int, check_number

_SCHED = "SOLVER.SCHEDULER"
ANNEAL_STRATEGIES = ("cos", "linear")
CYCLIC_MODES = ("triangular", "triangular2", "exp_range")
DECAY_SHAPES = ("LINEAR", "COSINE", "SQRT")
# The keys a phase of a built-in policy without a sub-node may set (read from SOLVER.SCHEDULER).
SHARED_POLICY_KEYS = {"STEP": ("STEPS", "GAMMA"), "STEP_COSINE": ("STEPS", "GAMMA"),
                      "POLY": ("LR_POW",)}
PHASE_KEYS = ("POLICY", "LENGTH", "SCALE")


def policy_keys(scheduler: CfgNode, policy: str) -> tuple:
    """The keys a phase of ``policy`` may set besides POLICY, LENGTH and SCALE."""
    if isinstance(scheduler.get(policy), CfgNode):
        return tuple(scheduler[policy].keys())
    return SHARED_POLICY_KEYS.get(policy, ())


def _check_length(value: Any, key: str, to_iters: Callable[[float], int], epoch_mode: bool) -> int:
    """A length in the schedule's unit: an integer >= 1 in iterations, > 0 epochs that come to
    at least one iteration; returns it in iterations."""
    if not epoch_mode:
        check_int(value, key, minimum=1)
        return value
    check_number(value, key, positive=True)
    if to_iters(value) < 1:
        raise ConfigError(f"{key}={value}: comes to less than one iteration")
    return to_iters(value)


def _check_momentum(keys: Mapping[str, Any], prefix: str) -> None:
    check_bool(keys["CYCLE_MOMENTUM"], f"{prefix}.CYCLE_MOMENTUM")
    for name in ("BASE_MOMENTUM", "MAX_MOMENTUM"):
        check_number(keys[name], f"{prefix}.{name}", minimum=0.0, below=1.0)


def _check_one_cycle(keys, prefix, run_iters, to_iters, epoch_mode):
    check_number(keys["PCT_START"], f"{prefix}.PCT_START", positive=True, below=1.0)
    check_number(keys["DIV_FACTOR"], f"{prefix}.DIV_FACTOR", positive=True)
    check_number(keys["FINAL_DIV_FACTOR"], f"{prefix}.FINAL_DIV_FACTOR", positive=True)
    check_choice(keys["ANNEAL_STRATEGY"], f"{prefix}.ANNEAL_STRATEGY", ANNEAL_STRATEGIES, str.lower)
    check_bool(keys["THREE_PHASE"], f"{prefix}.THREE_PHASE")
    _check_momentum(keys, prefix)
    # torch's phases end at steps pct * n - 1 (and 2 pct * n - 2), then n - 1: each must be
    # longer than the one before, or its progress divides by zero or runs backwards.
    rise_end = keys["PCT_START"] * run_iters - 1
    last_start = 2 * rise_end if keys["THREE_PHASE"] else rise_end
    if rise_end <= 0 or last_start >= run_iters - 1:
        raise ConfigError(
            f"{prefix}.PCT_START={keys['PCT_START']}: leaves a phase of one iteration or less "
            f"over the {run_iters} iterations ONE_CYCLE runs"
        )


def _check_cyclic(keys, prefix, run_iters, to_iters, epoch_mode):
    check_number(keys["BASE_LR_FACTOR"], f"{prefix}.BASE_LR_FACTOR", minimum=0.0, maximum=1.0)
    _check_length(keys["STEP_SIZE_UP"], f"{prefix}.STEP_SIZE_UP", to_iters, epoch_mode)
    if keys["STEP_SIZE_DOWN"] is not None:
        _check_length(keys["STEP_SIZE_DOWN"], f"{prefix}.STEP_SIZE_DOWN", to_iters, epoch_mode)
    check_choice(keys["MODE"], f"{prefix}.MODE", CYCLIC_MODES, str.lower)
    check_number(keys["GAMMA"], f"{prefix}.GAMMA", positive=True, maximum=1.0)
    _check_momentum(keys, prefix)


def _check_wsd(keys, prefix, run_iters, to_iters, epoch_mode):
    check_choice(keys["DECAY_SHAPE"], f"{prefix}.DECAY_SHAPE", DECAY_SHAPES, str.upper)
    check_number(keys["DECAY_FRACTION"], f"{prefix}.DECAY_FRACTION", positive=True, maximum=1.0)
    if keys["DECAY_ITERS"] is not None:
        check_int(keys["DECAY_ITERS"], f"{prefix}.DECAY_ITERS", minimum=1)
        if keys["DECAY_ITERS"] > run_iters:
            raise ConfigError(
                f"{prefix}.DECAY_ITERS={keys['DECAY_ITERS']}: the decay must fit in the "
                f"{run_iters} iterations after the warm-up"
            )


def _check_steps(keys, prefix, run_iters, to_iters, epoch_mode):
    steps = tuple(keys["STEPS"])
    for step in steps:
        check_number(step, f"{prefix}.STEPS", minimum=0.0, shown=steps)
    if list(steps) != sorted(steps) or any(to_iters(step) >= run_iters for step in steps):
        raise ConfigError(f"{prefix}.STEPS: must be sorted and below the phase's length, got {steps}")
    check_number(keys["GAMMA"], f"{prefix}.GAMMA", positive=True)


POLICY_CHECKS = {
    "EXPONENTIAL": lambda k, p, *_: check_number(k["GAMMA"], f"{p}.GAMMA", positive=True, maximum=1.0),
    "LINEAR": lambda k, p, *_: (
        check_number(k["START_FACTOR"], f"{p}.START_FACTOR", positive=True, maximum=1.0),
        check_number(k["END_FACTOR"], f"{p}.END_FACTOR", minimum=0.0, maximum=1.0)),
    "COSINE_RESTARTS": lambda k, p, n, to_iters, epochs: (
        _check_length(k["T_0"], f"{p}.T_0", to_iters, epochs),
        check_int(k["T_MULT"], f"{p}.T_MULT", minimum=1)),
    "ONE_CYCLE": _check_one_cycle,
    "CYCLIC": _check_cyclic,
    "WSD": _check_wsd,
    "STEP": _check_steps,
    "STEP_COSINE": _check_steps,
    "POLY": lambda k, p, *_: check_number(k["LR_POW"], f"{p}.LR_POW", positive=True),
}


def validate_policy_keys(policy: str, keys: Mapping[str, Any], prefix: str, run_iters: int,
                         to_iters: Callable[[float], int], epoch_mode: bool) -> None:
    """Check the keys of a built-in ``policy`` (named ``prefix``.KEY in messages); a user
    policy has none. ``run_iters``: the iterations the policy runs."""
    check = POLICY_CHECKS.get(policy)
    if check is not None:
        check(keys, prefix, run_iters, to_iters, epoch_mode)


def validate_phase_keys(scheduler: CfgNode, index: int, phase: Any, policy: str,
                        last: bool) -> None:
    """The structure of phase ``index``: a mapping with POLICY, LENGTH (optional on the last
    phase), SCALE (optional, >= 0) and keys of its policy only; no momentum cycling."""
    key = f"{_SCHED}.PHASES[{index}]"
    allowed = PHASE_KEYS + policy_keys(scheduler, policy)
    for name in phase:
        if name not in allowed:
            raise ConfigError(f"{key}.{name}: unknown key for {policy}; allowed: {', '.join(allowed)}")
    if "LENGTH" not in phase and not last:
        raise ConfigError(f"{key}.LENGTH: missing (only the last phase may leave it out)")
    if phase.get("SCALE") is not None:
        check_number(phase["SCALE"], f"{key}.SCALE", minimum=0.0)
    sub_node = scheduler[policy] if isinstance(scheduler.get(policy), CfgNode) else {}
    if phase.get("CYCLE_MOMENTUM", sub_node.get("CYCLE_MOMENTUM", False)) is True:
        raise ConfigError(f"{key}.CYCLE_MOMENTUM: momentum is not cycled inside PHASES; set "
                          f"CYCLE_MOMENTUM: False in the phase")


def phase_lengths(scheduler: CfgNode, run_iters: int, to_iters: Callable[[float], int],
                  epoch_mode: bool) -> list:
    """The phases' lengths in iterations (the last, when left out, takes the rest); ConfigError
    unless they fill the ``run_iters`` iterations after the warm-up exactly."""
    phases = scheduler.PHASES
    lengths = [_check_length(phase["LENGTH"], f"{_SCHED}.PHASES[{k}].LENGTH", to_iters, epoch_mode)
               for k, phase in enumerate(phases) if "LENGTH" in phase]
    if len(lengths) < len(phases):
        lengths.append(run_iters - sum(lengths))
        if lengths[-1] < 1:
            raise ConfigError(f"{_SCHED}.PHASES: the phases before the last fill the "
                              f"{run_iters} iterations after the warm-up; the last has none left")
    elif sum(lengths) != run_iters:
        raise ConfigError(f"{_SCHED}.PHASES: the lengths come to {sum(lengths)} iterations, the "
                          f"schedule after the warm-up to {run_iters}")
    return lengths


def validate_phases_list(scheduler: CfgNode, policy: str) -> None:
    """PHASES is a non-empty list of mappings when POLICY is PHASES, and empty otherwise."""
    phases = scheduler.PHASES
    if policy != "PHASES":
        if phases:
            raise ConfigError(f"{_SCHED}.PHASES: set, but POLICY is {policy}; set "
                              f"{_SCHED}.POLICY PHASES to run them")
        return None
    if not phases or not all(isinstance(phase, Mapping) for phase in phases):
        raise ConfigError(f"{_SCHED}.PHASES: POLICY PHASES needs a list of mappings "
                          f"({{POLICY: ..., LENGTH: ...}}), got {phases!r}")
    for k, phase in enumerate(phases):
        if "POLICY" not in phase:
            raise ConfigError(f"{_SCHED}.PHASES[{k}].POLICY: missing")
