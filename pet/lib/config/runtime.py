"""The runtime keys beside the solver: hooks listed by name (``CUSTOM_HOOKS``), the metrics
writers (``WRITERS``) and the EMA of the weights (``MODEL.EMA``); their priorities and value
checks. Needs neither torch nor the data: the names are checked against the registries by
``pet.engine.job.validate_job``.
"""
from typing import Any, Dict, Tuple

from yacs.config import CfgNode

from pet.lib.config.errors import ConfigError

# MMEngine's hook priorities: a smaller number runs earlier; hooks of equal priority keep the
# order in which they were listed (the built-in ones first, then CUSTOM_HOOKS in order).
PRIORITIES: Dict[str, int] = {
    "HIGHEST": 0,
    "VERY_HIGH": 10,
    "HIGH": 30,
    "ABOVE_NORMAL": 40,
    "NORMAL": 50,
    "BELOW_NORMAL": 60,
    "LOW": 70,
    "VERY_LOW": 90,
    "LOWEST": 100,
}
# The fields every CUSTOM_HOOKS entry may have besides the hook's own keyword arguments.
HOOK_ENTRY_FIELDS = ("TYPE", "PRIORITY")


def priority_value(priority: Any, key: str) -> int:
    """The number of ``priority``: a name of PRIORITIES (any case) or an int in [0, 100].
    ConfigError naming ``key`` otherwise."""
    if isinstance(priority, str) and priority.upper() in PRIORITIES:
        return PRIORITIES[priority.upper()]
    if isinstance(priority, int) and not isinstance(priority, bool) and 0 <= priority <= 100:
        return priority
    raise ConfigError(f"{key}: unknown priority {priority!r}; allowed: an integer in [0, 100] or "
                      f"{', '.join(PRIORITIES)}")


def priority_name(value: int) -> str:
    """``50`` -> ``"NORMAL"``; a number without a name as itself."""
    names = {number: name for name, number in PRIORITIES.items()}
    return names.get(value, str(value))


def split_hook_entry(entry: Any, index: int) -> Tuple[str, int, Dict[str, Any]]:
    """(TYPE, priority number, keyword arguments in lower case) of the CUSTOM_HOOKS entry
    ``entry``; ConfigError naming ``CUSTOM_HOOKS[index]`` when it is not such a mapping."""
    key = f"CUSTOM_HOOKS[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{key}: each entry is a mapping {{TYPE: hook name, PRIORITY: NORMAL, "
                          f"<the hook's own keys>}}, got {entry!r}")
    fields = {str(k).upper(): v for k, v in entry.items()}
    hook_type = fields.get("TYPE")
    if not (isinstance(hook_type, str) and hook_type):
        raise ConfigError(f"{key}: each entry needs a TYPE (a name of the HOOKS registry), got {entry!r}")
    priority = priority_value(fields.get("PRIORITY", "NORMAL"), f"{key}.PRIORITY")
    kwargs = {str(k).lower(): v for k, v in entry.items() if str(k).upper() not in HOOK_ENTRY_FIELDS}
    return hook_type, priority, kwargs


def validate_runtime(cfg: CfgNode) -> None:
    """Check CUSTOM_HOOKS (shape and priorities), WRITERS (a list of distinct names) and
    MODEL.EMA; ConfigError naming the first bad key. The names are checked against the HOOKS and
    WRITERS registries by pet.engine.job.validate_job."""
    for index, entry in enumerate(cfg.CUSTOM_HOOKS):
        split_hook_entry(entry, index)
    writers = cfg.WRITERS
    if not all(isinstance(name, str) for name in writers):
        raise ConfigError(f"WRITERS: expected a list of writer names, got {tuple(writers)!r}")
    if len({name.lower() for name in writers}) != len(writers):
        raise ConfigError(f"WRITERS: each writer may appear once, got {tuple(writers)}")
    ema = cfg.MODEL.EMA
    if not isinstance(ema.ENABLED, bool):
        raise ConfigError(f"MODEL.EMA.ENABLED: expected True or False, got {ema.ENABLED!r}")
    if not (isinstance(ema.DECAY, float) and 0.0 <= ema.DECAY < 1.0):
        raise ConfigError(f"MODEL.EMA.DECAY: must be in [0, 1), got {ema.DECAY!r}")
    if not (isinstance(ema.EVERY, int) and not isinstance(ema.EVERY, bool) and ema.EVERY >= 1):
        raise ConfigError(f"MODEL.EMA.EVERY: expected an integer >= 1, got {ema.EVERY!r}")
    if not isinstance(ema.WARMUP, bool):
        raise ConfigError(f"MODEL.EMA.WARMUP: expected True or False, got {ema.WARMUP!r}")
