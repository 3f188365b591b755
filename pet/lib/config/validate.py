"""Value checks of the SOLVER section: types, ranges and consistency, with no torch import.

The names a key may take from a registry (SOLVER.OPTIMIZER.TYPE, SOLVER.SCHEDULER.POLICY,
CLIP_GRADIENTS.CLIP_TYPE) are checked by the solver's adapters against the registries, the one
source of those names (``pet.lib.utils``). Every error is a ConfigError whose message names the
full key, the bad value and what is allowed, so a misconfigured run stops before it trains.
"""
import math
import re
from numbers import Real
from typing import Any, Optional

from yacs.config import CfgNode

from pet.lib.config.errors import ConfigError

IMPLEMENTATIONS = ("auto", "fused", "foreach", "loop")
WARM_UP_METHODS = ("CONSTANT", "LINEAR")
MUON_LR_ADJUSTMENTS = ("match_rms_adamw", "original")
CUSTOM_KEY_FIELDS = ("KEY", "LR_MULT", "DECAY_MULT")

_OPT = "SOLVER.OPTIMIZER"
_CLIP = "SOLVER.OPTIMIZER.CLIP_GRADIENTS"
_SCHED = "SOLVER.SCHEDULER"


def validate_optimizer(optimizer: CfgNode) -> None:
    """Check the values of ``SOLVER.OPTIMIZER`` (all but the registry names TYPE, CLIP_TYPE,
    RULES, PARAM_GROUPS_BUILDER, and KWARGS, which the chosen class's constructor decides);
    raises ConfigError."""
    check_choice(optimizer.IMPLEMENTATION, f"{_OPT}.IMPLEMENTATION", IMPLEMENTATIONS, str.lower)
    for key in (
        "BASE_LR",
        "BIAS_LR_FACTOR",
        "BACKBONE_LR_FACTOR",
        "WEIGHT_DECAY",
        "WEIGHT_DECAY_BIAS",
        "WEIGHT_DECAY_NORM",
        "WEIGHT_DECAY_EMBED",
        "DWCONV_DECAY_MULT",
        "FLAT_DECAY_MULT",
        "LR_MULT",
        "DECAY_MULT",
    ):
        check_number(optimizer[key], f"{_OPT}.{key}", minimum=0.0)
    check_number(optimizer.LAYER_DECAY, f"{_OPT}.LAYER_DECAY", positive=True, maximum=1.0)
    _check_pattern(optimizer.LAYER_DECAY_BLOCK_PATTERN, f"{_OPT}.LAYER_DECAY_BLOCK_PATTERN")
    check_number(optimizer.MOMENTUM, f"{_OPT}.MOMENTUM", minimum=0.0, below=1.0)
    for key in ("NESTEROV", "AMSGRAD", "CENTERED"):
        check_bool(optimizer[key], f"{_OPT}.{key}")
    if len(optimizer.BETAS) != 2:
        raise ConfigError(f"{_OPT}.BETAS: expected two numbers (beta1, beta2), got {optimizer.BETAS!r}")
    for beta in optimizer.BETAS:
        check_number(beta, f"{_OPT}.BETAS", minimum=0.0, below=1.0, shown=optimizer.BETAS)
    if optimizer.EPS is not None:
        check_number(optimizer.EPS, f"{_OPT}.EPS", positive=True)
    check_number(optimizer.RMSPROP_ALPHA, f"{_OPT}.RMSPROP_ALPHA", minimum=0.0, below=1.0)
    for key in ("EMBED_KEYWORDS", "FREEZE", "RULES"):
        if not all(isinstance(word, str) and word for word in optimizer[key]):
            raise ConfigError(f"{_OPT}.{key}: expected a list of non-empty strings, got {optimizer[key]!r}")
    _check_custom_keys(optimizer.CUSTOM_KEYS)
    _validate_muon(optimizer.MUON)
    clip = optimizer.CLIP_GRADIENTS
    check_bool(clip.ENABLED, f"{_CLIP}.ENABLED")
    check_number(clip.CLIP_VALUE, f"{_CLIP}.CLIP_VALUE", positive=True)
    check_number(clip.NORM_TYPE, f"{_CLIP}.NORM_TYPE", positive=True)


def _validate_muon(muon: CfgNode) -> None:
    key = f"{_OPT}.MUON"
    check_number(muon.MOMENTUM, f"{key}.MOMENTUM", minimum=0.0, below=1.0)
    check_bool(muon.NESTEROV, f"{key}.NESTEROV")
    check_int(muon.NS_STEPS, f"{key}.NS_STEPS", minimum=1)
    check_choice(muon.ADJUST_LR_FN, f"{key}.ADJUST_LR_FN", MUON_LR_ADJUSTMENTS)
    check_number(muon.ADAMW_LR_MULT, f"{key}.ADAMW_LR_MULT", minimum=0.0)
    if not all(isinstance(word, str) and word for word in muon.ADAMW_KEYS):
        raise ConfigError(f"{key}.ADAMW_KEYS: expected a list of non-empty strings, got {muon.ADAMW_KEYS!r}")


def _check_pattern(pattern: Any, key: str) -> None:
    try:
        groups = re.compile(pattern).groups if isinstance(pattern, str) else 0
    except re.error as e:
        raise ConfigError(f"{key}: not a regular expression ({e}), got {pattern!r}") from None
    if groups < 1:
        raise ConfigError(f"{key}: expected a regular expression whose first group is the block "
                          f"number, e.g. 'blocks\\.(\\d+)\\.', got {pattern!r}")


def validate_scheduler(scheduler: CfgNode, iter_per_epoch: Optional[int] = None,
                       uses_milestones: bool = True, decays_from_last_milestone: bool = False) -> None:
    """Check the values of ``SOLVER.SCHEDULER`` (all but the registry name POLICY); epoch-based
    keys need ``iter_per_epoch`` > 0.

    The policy's registry entry says how it reads STEPS: ``uses_milestones`` (each must lie
    inside the schedule), ``decays_from_last_milestone`` (at least one is needed, and the last
    must not fall inside the warm-up).
    """
    check_choice(scheduler.WARM_UP_METHOD, f"{_SCHED}.WARM_UP_METHOD", WARM_UP_METHODS, str.upper)
    has_epochs = iter_per_epoch is not None and iter_per_epoch > 0
    for key in ("TOTAL_EPOCHS", "WARM_UP_EPOCHS"):
        if scheduler[key] is not None:
            check_number(scheduler[key], f"{_SCHED}.{key}", minimum=0.0)
            if not has_epochs:
                raise ConfigError(
                    f"{_SCHED}.{key}={scheduler[key]} needs the iterations per epoch "
                    f"(iter_per_epoch > 0), got iter_per_epoch={iter_per_epoch}"
                )
    epoch_mode = scheduler.TOTAL_EPOCHS is not None
    if epoch_mode:
        check_number(scheduler.TOTAL_EPOCHS, f"{_SCHED}.TOTAL_EPOCHS", positive=True)
    else:
        check_int(scheduler.TOTAL_ITERS, f"{_SCHED}.TOTAL_ITERS", minimum=1)
    if scheduler.WARM_UP_EPOCHS is None:
        check_int(scheduler.WARM_UP_ITERS, f"{_SCHED}.WARM_UP_ITERS", minimum=0)
    check_number(scheduler.GAMMA, f"{_SCHED}.GAMMA", positive=True)
    check_number(scheduler.WARM_UP_FACTOR, f"{_SCHED}.WARM_UP_FACTOR", minimum=0.0, maximum=1.0)
    check_number(scheduler.LOG_LR_CHANGE_THRESHOLD, f"{_SCHED}.LOG_LR_CHANGE_THRESHOLD", minimum=1.0)
    check_number(scheduler.LR_POW, f"{_SCHED}.LR_POW", positive=True)
    check_number(scheduler.MIN_LR_FACTOR, f"{_SCHED}.MIN_LR_FACTOR", minimum=0.0, maximum=1.0)
    if scheduler.MIN_LR is not None:
        check_number(scheduler.MIN_LR, f"{_SCHED}.MIN_LR", minimum=0.0)
        if scheduler.MIN_LR_FACTOR != 0:
            raise ConfigError(
                f"{_SCHED}.MIN_LR={scheduler.MIN_LR}: set MIN_LR (absolute) or MIN_LR_FACTOR "
                f"(relative, here {scheduler.MIN_LR_FACTOR}), not both"
            )

    steps = tuple(scheduler.STEPS)
    for step in steps:
        check_number(step, f"{_SCHED}.STEPS", minimum=0.0, shown=steps)
    if list(steps) != sorted(steps):
        raise ConfigError(f"{_SCHED}.STEPS: must be sorted in increasing order, got {steps}")
    if decays_from_last_milestone and not steps:
        raise ConfigError(
            f"{_SCHED}.STEPS: {scheduler.POLICY} needs at least one milestone (where its decay "
            f"starts), got ()"
        )

    # Lengths compared in iterations, so epoch and iteration keys can be mixed.
    scale = iter_per_epoch if epoch_mode else 1
    total = scheduler.TOTAL_EPOCHS if epoch_mode else scheduler.TOTAL_ITERS
    unit = "epoch" if epoch_mode else "iteration"
    max_iter = total * scale
    if epoch_mode and int(round(max_iter)) < 1:
        raise ConfigError(
            f"{_SCHED}.TOTAL_EPOCHS={total}: {total} epochs of {iter_per_epoch} iterations round "
            f"to 0 iterations; train more than {1 / (2 * iter_per_epoch):.3g} epochs"
        )
    if epoch_mode and max_iter > MAX_INT:  # what TOTAL_ITERS allows
        raise ConfigError(
            f"{_SCHED}.TOTAL_EPOCHS={total}: {total} epochs of {iter_per_epoch} iterations are "
            f"{max_iter:.4g} iterations; at most {MAX_INT}"
        )
    if scheduler.WARM_UP_EPOCHS is not None:
        warmup_iters, warmup_key = scheduler.WARM_UP_EPOCHS * iter_per_epoch, "WARM_UP_EPOCHS"
    else:
        warmup_iters, warmup_key = scheduler.WARM_UP_ITERS, "WARM_UP_ITERS"
    if warmup_iters > 0 and warmup_iters >= max_iter:
        raise ConfigError(
            f"{_SCHED}.{warmup_key}={scheduler[warmup_key]}: the warm-up must be shorter than the "
            f"schedule ({amount(total, unit)}{'' if not epoch_mode else f' = {max_iter} iterations'})"
        )
    if (uses_milestones or decays_from_last_milestone) and steps and steps[-1] >= total:
        raise ConfigError(
            f"{_SCHED}.STEPS: every milestone must be below the schedule's length ({amount(total, unit)}), "
            f"got {steps}"
        )
    if decays_from_last_milestone and steps[-1] * scale < warmup_iters:
        raise ConfigError(
            f"{_SCHED}.STEPS: {scheduler.POLICY}'s last milestone ({amount(steps[-1], unit)}) must not fall "
            f"inside the warm-up ({_SCHED}.{warmup_key}={scheduler[warmup_key]})"
        )


def amount(number, unit: str) -> str:
    """``1 epoch``, ``2 epochs``, ``0.5 epochs`` (``number`` as it is shown: a number or text)."""
    return f"{number} {unit}{'' if str(number) == '1' else 's'}"


AMP_DTYPES = ("bfloat16", "float16")


def validate_step(solver: CfgNode) -> None:
    """Check SOLVER.ACCUMULATION_STEPS, SOLVER.AMP and SOLVER.SKIP_NONFINITE."""
    check_int(solver.ACCUMULATION_STEPS, "SOLVER.ACCUMULATION_STEPS", minimum=1)
    check_int(solver.SKIP_NONFINITE, "SOLVER.SKIP_NONFINITE", minimum=0)
    check_bool(solver.AMP.ENABLED, "SOLVER.AMP.ENABLED")
    check_choice(solver.AMP.DTYPE, "SOLVER.AMP.DTYPE", AMP_DTYPES)


def validate_snapshots(solver: CfgNode) -> None:
    """Check SOLVER.SNAPSHOT_ITERS, SOLVER.SNAPSHOT_EPOCHS and SOLVER.KEEP_CHECKPOINTS."""
    check_int(solver.SNAPSHOT_ITERS, "SOLVER.SNAPSHOT_ITERS", minimum=0)
    check_int(solver.KEEP_CHECKPOINTS, "SOLVER.KEEP_CHECKPOINTS", minimum=0)
    if solver.SNAPSHOT_EPOCHS is not None:
        check_number(solver.SNAPSHOT_EPOCHS, "SOLVER.SNAPSHOT_EPOCHS", positive=True)


STRATEGIES = ("ddp", "fsdp")


def validate_distributed(solver: CfgNode) -> None:
    """Check SOLVER.DISTRIBUTED and SOLVER.ASYNC_CHECKPOINT (their fit with the job: validate_job)."""
    check_choice(solver.DISTRIBUTED.STRATEGY, "SOLVER.DISTRIBUTED.STRATEGY", STRATEGIES)
    blocks = solver.DISTRIBUTED.FSDP_BLOCKS
    if not isinstance(blocks, (list, tuple)) or not all(isinstance(b, str) and b for b in blocks):
        raise ConfigError(f"SOLVER.DISTRIBUTED.FSDP_BLOCKS: expected a list of module name patterns "
                          f"(e.g. ['backbone.blocks.layers.*']), got {blocks!r}")
    check_bool(solver.ASYNC_CHECKPOINT, "SOLVER.ASYNC_CHECKPOINT")
    if solver.ASYNC_CHECKPOINT and solver.DISTRIBUTED.STRATEGY != "fsdp":
        raise ConfigError(f"SOLVER.ASYNC_CHECKPOINT: True needs SOLVER.DISTRIBUTED.STRATEGY fsdp (its "
                          f"sharded checkpoints are written in the background), got "
                          f"{solver.DISTRIBUTED.STRATEGY!r}; set ASYNC_CHECKPOINT False")


def _check_custom_keys(entries: Any) -> None:
    key = f"{_OPT}.CUSTOM_KEYS"
    seen = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise ConfigError(f"{key}: each entry is a mapping {{KEY: name, LR_MULT: x, DECAY_MULT: y}}, "
                              f"got {entry!r}")
        fields = {str(k).upper(): v for k, v in entry.items()}
        unknown = sorted(set(fields) - set(CUSTOM_KEY_FIELDS))
        if unknown:
            raise ConfigError(f"{key}: unknown field {unknown[0]!r} in {entry!r}; allowed: "
                              f"{', '.join(CUSTOM_KEY_FIELDS)}")
        name = fields.get("KEY")
        if not (isinstance(name, str) and name):
            raise ConfigError(f"{key}: each entry needs a non-empty string KEY, got {entry!r}")
        for field in CUSTOM_KEY_FIELDS[1:]:
            if field in fields:
                check_number(fields[field], f"{key} ({name!r}).{field}", minimum=0.0)
        seen.append(name)
    if len(set(seen)) != len(seen):
        raise ConfigError(f"{key}: each KEY may appear once, got {tuple(seen)}")


def check_choice(value: Any, key: str, allowed: tuple, normalize=lambda v: v) -> None:
    """ConfigError unless ``normalize(value)`` is one of ``allowed``."""
    if (isinstance(value, bool) or not isinstance(value, type(allowed[0]))
            or normalize(value) not in allowed):
        raise ConfigError(f"{key}: unknown value {value!r}; allowed: {', '.join(map(str, allowed))}")


def check_bool(value: Any, key: str) -> None:
    """ConfigError unless ``value`` is True or False."""
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected True or False, got {value!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and not math.isnan(value)


def check_number(
    value: Any,
    key: str,
    minimum: float = None,
    maximum: float = None,
    below: float = None,
    positive: bool = False,
    shown: Any = None,
) -> None:
    """ConfigError unless ``value`` is a number (not NaN) within the given bounds."""
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


# Integers a C int holds: larger ones overflow inside torch (or crash it) rather than fail.
MAX_INT = 2 ** 31 - 1


def check_int(value: Any, key: str, minimum: int, maximum: int = MAX_INT) -> None:
    """ConfigError unless ``value`` is an integer in [``minimum``, ``maximum``]."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"{key}: expected an integer >= {minimum}, got {value!r}")
    if value > maximum:
        raise ConfigError(f"{key}: must be <= {maximum}, got {value!r}")
