"""What a checkpoint must satisfy before it is loaded or written: the model's and the optimizer's
layout and type (resume), and finite values (save). Errors are one line naming the checkpoint
and what differs."""
import logging
import math
from typing import Any, Dict, List

import torch
from torch import nn

from pet.lib.config.errors import ConfigError
from pet.lib.utils.shards import local_shard

logger = logging.getLogger("pet.engine.checkpointer")

# Param-group keys that the scheduler rewrites every iteration: a difference is not news.
_SCHEDULED_KEYS = ("lr",)


class NonFiniteStateError(FloatingPointError):
    """The state to checkpoint holds NaN or inf values; nothing was written."""


class CheckpointError(ConfigError):
    """A checkpoint that cannot be used with this config: missing, unreadable, or made for a
    different model or param-group layout. Tools exit with status 2 on it, as on a bad config."""


# ---------------------------------------------------------------------------------------------
# Layout checks
# ---------------------------------------------------------------------------------------------
def _first_and_count(keys: List[str]) -> str:
    return keys[0] + (f" and {len(keys) - 1} more" if len(keys) > 1 else "")


def check_model_layout(saved: Dict[str, torch.Tensor], model: nn.Module, source: str) -> None:
    """Raise CheckpointError naming the first missing, unexpected or reshaped tensor."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in saved]
    unexpected = [key for key in saved if key not in expected]
    if missing or unexpected:
        parts = [f"{what} {_first_and_count(keys)}"
                 for what, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
        raise CheckpointError(
            f"checkpoint {source} was saved from a different model ({'; '.join(parts)}); "
            f"check MODEL.TYPE and the MODEL section"
        )
    for key, tensor in expected.items():
        if saved[key].shape != tensor.shape:
            raise CheckpointError(
                f"checkpoint {source} was saved from a different model: {key} has shape "
                f"{tuple(saved[key].shape)} there and {tuple(tensor.shape)} here; "
                f"check the MODEL section"
            )


def check_param_group_layout(saved_groups: List[Dict], optimizer: torch.optim.Optimizer,
                             source: str) -> None:
    """Raise CheckpointError naming the first param group or parameter that differs."""
    groups = optimizer.param_groups
    hint = ("the model or the SOLVER.OPTIMIZER keys that decide the grouping (lr factors, "
            "weight decays, EMBED_KEYWORDS) changed")
    if len(saved_groups) != len(groups):
        raise CheckpointError(
            f"checkpoint {source} has {len(saved_groups)} optimizer param groups, this config builds "
            f"{len(groups)}: {hint}"
        )
    for index, (saved, group) in enumerate(zip(saved_groups, groups)):
        saved_names = list(saved.get("param_names", ()))
        names = list(group.get("param_names", ()))
        if saved_names and names and saved_names != names:
            position = next((k for k, (a, b) in enumerate(zip(saved_names, names)) if a != b),
                            min(len(saved_names), len(names)))
            there = saved_names[position] if position < len(saved_names) else "(end of group)"
            here = names[position] if position < len(names) else "(end of group)"
            raise CheckpointError(
                f"checkpoint {source}: optimizer param group {index} differs at parameter {position}: "
                f"{there} in the checkpoint, {here} here: {hint}"
            )
        if len(saved["params"]) != len(group["params"]):
            raise CheckpointError(
                f"checkpoint {source}: optimizer param group {index} holds {len(saved['params'])} "
                f"parameters there and {len(group['params'])} here: {hint}"
            )


def check_optimizer_type(saved_groups: List[Dict], optimizer: torch.optim.Optimizer,
                         source: str) -> None:
    """Raise CheckpointError when the checkpoint's optimizer was of another type: its param
    groups lack a hyper-parameter this optimizer has (SGD's momentum, Adam's betas)."""
    wanted = set(optimizer.defaults)
    for saved in saved_groups:
        missing = sorted(key for key in wanted - set(saved) if not key.startswith("_"))
        if missing:
            raise CheckpointError(
                f"checkpoint {source} was saved by another optimizer type (its param groups have "
                f"no {', '.join(missing[:3])}, which {type(optimizer).__name__} needs); resume with "
                f"the checkpoint's SOLVER.OPTIMIZER.TYPE or start a new run"
            )


def check_finite_state(state: Any, what: str) -> None:
    """Raise NonFiniteStateError naming the first tensor of ``state`` (nested dicts and lists)
    that holds NaN or inf: such a state must never become a checkpoint."""
    if isinstance(state, torch.Tensor):
        state = local_shard(state)  # a sharded tensor: this process's shard (the caller gathers)
        if state.is_floating_point() and not bool(torch.isfinite(state).all()):
            raise NonFiniteStateError(f"{what} holds NaN or inf values")
    elif isinstance(state, dict):
        for key, value in state.items():
            check_finite_state(value, f"{what}.{key}")
    elif isinstance(state, (list, tuple)):
        for index, value in enumerate(state):
            check_finite_state(value, f"{what}[{index}]")
    elif isinstance(state, float) and not math.isfinite(state):
        raise NonFiniteStateError(f"{what} is {state}")


def optimizer_state_to_load(saved: Dict[str, Any], optimizer: torch.optim.Optimizer) -> Dict[str, Any]:
    """The state dict that resumes ``optimizer`` from the checkpoint's ``saved`` optimizer state:
    the checkpoint's per-parameter state (moments, step counts) under the checkpoint's param
    ids, with this run's group hyper-parameters, so ``load_state_dict`` sets the config's
    values directly (check the layout first with ``check_param_group_layout``)."""
    groups = [dict(group, params=list(saved_group["params"]))
              for saved_group, group in zip(saved["param_groups"], optimizer.param_groups)]
    return {"state": saved["state"], "param_groups": groups}


def log_hyperparam_changes(saved_groups: List[Dict[str, Any]], optimizer: torch.optim.Optimizer) -> None:
    """Log every param-group hyper-parameter of ``optimizer`` (this run's, the one used) that
    differs from the checkpoint's, except the lr, which the scheduler sets anyway."""
    for index, (saved, group) in enumerate(zip(saved_groups, optimizer.param_groups)):
        for key, value in group.items():
            if key in ("params", "param_names") or key in _SCHEDULED_KEYS:
                continue
            if saved.get(key) != value:
                logger.info("resume: param group %d %s: %r in the checkpoint, %r from the config (used)",
                            index, key, saved.get(key), value)


