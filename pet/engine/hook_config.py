"""Hooks listed by name in the config (``CUSTOM_HOOKS``, MMEngine's custom_hooks) and the order
of all the hooks of a run by priority."""
import inspect
from typing import Any, Dict, List, Sequence

from pet.engine.hooks import HOOKS, HookBase
from pet.lib.config.errors import ConfigError
from pet.lib.config.runtime import priority_name, split_hook_entry


def _hook_class(hook_type: str, index: int) -> type:
    return HOOKS.get(HOOKS.check(hook_type, f"CUSTOM_HOOKS[{index}].TYPE"))


def _check_arguments(hook_class: type, kwargs: Dict[str, Any], index: int) -> None:
    """ConfigError naming the entry and the key when ``hook_class(**kwargs)`` cannot bind."""
    signature = inspect.signature(hook_class)
    accepted = [name for name, p in signature.parameters.items()
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    takes_any = any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values())
    where = f"CUSTOM_HOOKS[{index}] ({hook_class.__name__})"
    allowed = ", ".join(name.upper() for name in accepted) or "no keys"
    for name in kwargs:
        if name not in accepted and not takes_any:
            raise ConfigError(f"{where}: unknown key {name.upper()}; {hook_class.__name__} takes: {allowed}")
    try:
        signature.bind(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}; {hook_class.__name__} takes: {allowed}") from None


def check_custom_hooks(entries: Sequence[Any]) -> None:
    """Check every CUSTOM_HOOKS entry (its shape, TYPE against the HOOKS registry, PRIORITY, and
    its keys against the hook's constructor) without building it; ConfigError on the first bad
    one."""
    for index, entry in enumerate(entries):
        hook_type, _, kwargs = split_hook_entry(entry, index)
        _check_arguments(_hook_class(hook_type, index), kwargs, index)


def build_custom_hooks(entries: Sequence[Any]) -> List[HookBase]:
    """The hooks of CUSTOM_HOOKS, each built with its keys as keyword arguments (in lower case)
    and given its PRIORITY."""
    hooks = []
    for index, entry in enumerate(entries):
        hook_type, priority, kwargs = split_hook_entry(entry, index)
        hook_class = _hook_class(hook_type, index)
        _check_arguments(hook_class, kwargs, index)
        hook = hook_class(**kwargs)
        hook.priority = priority
        hooks.append(hook)
    return hooks


def order_hooks(hooks: Sequence[HookBase]) -> List[HookBase]:
    """``hooks`` sorted by priority (smaller first); equal priorities keep their order."""
    return sorted(hooks, key=lambda hook: hook.priority)


def describe_hooks(hooks: Sequence[HookBase]) -> str:
    """``"IterationTimer (VERY_HIGH), LRScheduler (HIGH), ..."`` for the log."""
    return ", ".join(f"{type(hook).__name__} ({priority_name(hook.priority)})" for hook in hooks)
