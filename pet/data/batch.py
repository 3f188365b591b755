"""A batch's input as the model takes it: a tensor ``model(x)``, a tuple ``model(*x)`` or a dict
``model(**x)``, moved to the model's device."""
from typing import Any, Callable

import torch
from torch import nn


def map_leaves(value: Any, fn: Callable[[Any], Any]) -> Any:
    """``value`` with ``fn`` applied to every leaf of its dicts, tuples and lists (what a batch
    is made of), the containers rebuilt alike."""
    if isinstance(value, dict):
        return {key: map_leaves(v, fn) for key, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(map_leaves(v, fn) for v in value)
    return fn(value)


def to_device(value: Any, device: torch.device) -> Any:
    """``value`` (a tensor, or tuples, lists and dicts of them) on ``device``; the copies do not
    wait for the host (pinned batches overlap with the previous step's work on a GPU)."""
    if device.type == "cpu":
        return value  # the loader's batches are on the CPU
    return map_leaves(value, lambda v: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v)


def call_model(model: nn.Module, inputs: Any) -> Any:
    """``model`` on a batch's ``inputs``: unpacked when they are a tuple, list or dict."""
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)
