"""Checks of the SOLVER section, run whenever a solver is built from a config.

Every error is a ConfigError whose message names the full key, the bad value and what is
allowed, so a misconfigured run stops before it trains instead of training the wrong thing.
"""
import math
from numbers import Real
from typing import Any, Optional

from yacs.config import CfgNode

from pet.lib.config.errors import ConfigError

OPTIMIZER_TYPES = ("SGD", "ADAMW", "ADAM", "RMSPROP")
FUSED_OPTIMIZER_TYPES = ("SGD", "ADAMW", "ADAM")  # torch has no fused RMSprop
IMPLEMENTATIONS = ("auto", "fused", "foreach", "loop")
CLIP_TYPES = ("value", "norm", "full_model")
POLICIES = ("STEP", "COSINE", "STEP_COSINE", "POLY")
WARM_UP_METHODS = ("CONSTANT", "LINEAR")

_OPT = "SOLVER.OPTIMIZER"
_CLIP = "SOLVER.OPTIMIZER.CLIP_GRADIENTS"
_SCHED = "SOLVER.SCHEDULER"


def validate_solver(solver: CfgNode, iter_per_epoch: Optional[int] = None) -> None:
    """Check the whole SOLVER section; ``iter_per_epoch`` is needed for epoch-based keys."""
    validate_optimizer(solver.OPTIMIZER)
    validate_scheduler(solver.SCHEDULER, iter_per_epoch)
    _check_int(solver.SNAPSHOT_ITERS, "SOLVER.SNAPSHOT_ITERS", minimum=0)
    if solver.SNAPSHOT_EPOCHS is not None:
        _check_number(solver.SNAPSHOT_EPOCHS, "SOLVER.SNAPSHOT_EPOCHS", positive=True)


def validate_optimizer(optimizer: CfgNode) -> None:
    """Check ``SOLVER.OPTIMIZER``; raises ConfigError."""
    _check_choice(optimizer.TYPE, f"{_OPT}.TYPE", OPTIMIZER_TYPES, str.upper)
    _check_choice(optimizer.IMPLEMENTATION, f"{_OPT}.IMPLEMENTATION", IMPLEMENTATIONS, str.lower)
    if optimizer.IMPLEMENTATION.lower() == "fused" and optimizer.TYPE.upper() not in FUSED_OPTIMIZER_TYPES:
        raise ConfigError(
            f"{_OPT}.IMPLEMENTATION: 'fused' is not available for TYPE {optimizer.TYPE}; "
            f"allowed: auto, foreach, loop (fused exists for {', '.join(FUSED_OPTIMIZER_TYPES)})"
        )
    for key in (
        "BASE_LR",
        "BIAS_LR_FACTOR",
        "BACKBONE_LR_FACTOR",
        "WEIGHT_DECAY",
        "WEIGHT_DECAY_BIAS",
        "WEIGHT_DECAY_NORM",
        "WEIGHT_DECAY_EMBED",
    ):
        _check_number(optimizer[key], f"{_OPT}.{key}", minimum=0.0)
    _check_number(optimizer.MOMENTUM, f"{_OPT}.MOMENTUM", minimum=0.0, below=1.0)
    if not isinstance(optimizer.NESTEROV, bool):
        raise ConfigError(f"{_OPT}.NESTEROV: expected True or False, got {optimizer.NESTEROV!r}")
    if optimizer.NESTEROV and optimizer.TYPE.upper() == "SGD" and optimizer.MOMENTUM <= 0:
        raise ConfigError(
            f"{_OPT}.NESTEROV: True needs {_OPT}.MOMENTUM > 0, got MOMENTUM={optimizer.MOMENTUM}"
        )
    if len(optimizer.BETAS) != 2:
        raise ConfigError(f"{_OPT}.BETAS: expected two numbers (beta1, beta2), got {optimizer.BETAS!r}")
    for beta in optimizer.BETAS:
        _check_number(beta, f"{_OPT}.BETAS", minimum=0.0, below=1.0, shown=optimizer.BETAS)
    _check_number(optimizer.EPS, f"{_OPT}.EPS", positive=True)
    _check_number(optimizer.RMSPROP_ALPHA, f"{_OPT}.RMSPROP_ALPHA", minimum=0.0, below=1.0)
    if not all(isinstance(word, str) and word for word in optimizer.EMBED_KEYWORDS):
        raise ConfigError(
            f"{_OPT}.EMBED_KEYWORDS: expected a list of non-empty strings, got {optimizer.EMBED_KEYWORDS!r}"
        )
    _check_custom_rules(optimizer.CUSTOM_RULES)
    clip = optimizer.CLIP_GRADIENTS
    if not isinstance(clip.ENABLED, bool):
        raise ConfigError(f"{_CLIP}.ENABLED: expected True or False, got {clip.ENABLED!r}")
    _check_choice(clip.CLIP_TYPE, f"{_CLIP}.CLIP_TYPE", CLIP_TYPES, str.lower)
    _check_number(clip.CLIP_VALUE, f"{_CLIP}.CLIP_VALUE", positive=True)
    _check_number(clip.NORM_TYPE, f"{_CLIP}.NORM_TYPE", positive=True)


def validate_scheduler(scheduler: CfgNode, iter_per_epoch: Optional[int] = None) -> None:
    """Check ``SOLVER.SCHEDULER``; epoch-based keys need ``iter_per_epoch`` > 0."""
    _check_choice(scheduler.POLICY, f"{_SCHED}.POLICY", POLICIES, str.upper)
    _check_choice(scheduler.WARM_UP_METHOD, f"{_SCHED}.WARM_UP_METHOD", WARM_UP_METHODS, str.upper)
    has_epochs = iter_per_epoch is not None and iter_per_epoch > 0
    for key in ("TOTAL_EPOCHS", "WARM_UP_EPOCHS"):
        if scheduler[key] is not None:
            _check_number(scheduler[key], f"{_SCHED}.{key}", minimum=0.0)
            if not has_epochs:
                raise ConfigError(
                    f"{_SCHED}.{key}={scheduler[key]} needs the iterations per epoch "
                    f"(iter_per_epoch > 0), got iter_per_epoch={iter_per_epoch}"
                )
    epoch_mode = scheduler.TOTAL_EPOCHS is not None
    if epoch_mode:
        _check_number(scheduler.TOTAL_EPOCHS, f"{_SCHED}.TOTAL_EPOCHS", positive=True)
    else:
        _check_int(scheduler.TOTAL_ITERS, f"{_SCHED}.TOTAL_ITERS", minimum=1)
    if scheduler.WARM_UP_EPOCHS is None:
        _check_int(scheduler.WARM_UP_ITERS, f"{_SCHED}.WARM_UP_ITERS", minimum=0)
    _check_number(scheduler.GAMMA, f"{_SCHED}.GAMMA", positive=True)
    _check_number(scheduler.WARM_UP_FACTOR, f"{_SCHED}.WARM_UP_FACTOR", minimum=0.0, maximum=1.0)
    _check_number(scheduler.LOG_LR_CHANGE_THRESHOLD, f"{_SCHED}.LOG_LR_CHANGE_THRESHOLD", minimum=1.0)
    _check_number(scheduler.LR_POW, f"{_SCHED}.LR_POW", positive=True)
    _check_number(scheduler.MIN_LR_FACTOR, f"{_SCHED}.MIN_LR_FACTOR", minimum=0.0, maximum=1.0)

    unit = "epochs" if epoch_mode else "iterations"
    steps = tuple(scheduler.STEPS)
    for step in steps:
        _check_number(step, f"{_SCHED}.STEPS", minimum=0.0, shown=steps)
    if list(steps) != sorted(steps):
        raise ConfigError(f"{_SCHED}.STEPS: must be sorted in increasing order, got {steps}")
    policy = scheduler.POLICY.upper()
    if policy == "STEP_COSINE" and not steps:
        raise ConfigError(
            f"{_SCHED}.STEPS: STEP_COSINE needs at least one milestone (where the cosine starts), got ()"
        )

    # Lengths compared in iterations, so epoch and iteration keys can be mixed.
    scale = iter_per_epoch if epoch_mode else 1
    total = scheduler.TOTAL_EPOCHS if epoch_mode else scheduler.TOTAL_ITERS
    max_iter = total * scale
    if scheduler.WARM_UP_EPOCHS is not None:
        warmup_iters, warmup_key = scheduler.WARM_UP_EPOCHS * iter_per_epoch, "WARM_UP_EPOCHS"
    else:
        warmup_iters, warmup_key = scheduler.WARM_UP_ITERS, "WARM_UP_ITERS"
    if warmup_iters > 0 and warmup_iters >= max_iter:
        raise ConfigError(
            f"{_SCHED}.{warmup_key}={scheduler[warmup_key]}: the warm-up must be shorter than the "
            f"schedule ({total} {unit}{'' if not epoch_mode else f' = {max_iter} iterations'})"
        )
    if policy in ("STEP", "STEP_COSINE") and steps and steps[-1] >= total:
        raise ConfigError(
            f"{_SCHED}.STEPS: every milestone must be below the schedule's length ({total} {unit}), "
            f"got {steps}"
        )
    if policy == "STEP_COSINE" and steps[-1] * scale < warmup_iters:
        raise ConfigError(
            f"{_SCHED}.STEPS: STEP_COSINE's last milestone ({steps[-1]} {unit}) must not fall "
            f"inside the warm-up ({_SCHED}.{warmup_key}={scheduler[warmup_key]})"
        )


def _check_custom_rules(rules: Any) -> None:
    key = f"{_OPT}.CUSTOM_RULES"
    for rule in rules:
        if not (isinstance(rule, (list, tuple)) and len(rule) == 3 and isinstance(rule[0], str) and rule[0]):
            raise ConfigError(
                f"{key}: each rule is (KEYWORD, LR_FACTOR, WEIGHT_DECAY_FACTOR) with a non-empty "
                f"KEYWORD, got {rule!r}"
            )
        for factor in rule[1:]:
            _check_number(factor, f"{key} ({rule[0]!r})", minimum=0.0, shown=tuple(rule))
    keywords = [rule[0] for rule in rules]
    if len(set(keywords)) != len(keywords):
        raise ConfigError(f"{key}: each KEYWORD may appear once, got {tuple(keywords)}")


def _check_choice(value: Any, key: str, allowed: tuple, normalize) -> None:
    if not isinstance(value, str) or normalize(value) not in allowed:
        raise ConfigError(f"{key}: unknown value {value!r}; allowed: {', '.join(allowed)}")


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and not math.isnan(value)


def _check_number(
    value: Any,
    key: str,
    minimum: float = None,
    maximum: float = None,
    below: float = None,
    positive: bool = False,
    shown: Any = None,
) -> None:
    shown = value if shown is None else shown
    if not _is_number(value):
        raise ConfigError(f"{key}: expected a number, got {shown!r}")
    if positive and not value > 0:
        raise ConfigError(f"{key}: must be > 0, got {shown!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{key}: must be >= {minimum:g}, got {shown!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{key}: must be <= {maximum:g}, got {shown!r}")
    if below is not None and not value < below:
        raise ConfigError(f"{key}: must be < {below:g}, got {shown!r}")


def _check_int(value: Any, key: str, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{key}: expected an integer >= {minimum}, got {value!r}")
