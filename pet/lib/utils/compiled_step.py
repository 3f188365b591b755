"""SOLVER.OPTIMIZER.COMPILE: the optimizer step (clipping included) compiled once by
torch.compile, its schedulable hyper-parameters held as tensors (torch's recipe for a compiled
step: a schedule that writes into the tensors in place never recompiles).

The lr of every group becomes a 0-dim float64 tensor, and so do Adam's and AdamW's betas (the
momentum a schedule may cycle); the scheduler and the hyper-parameter schedules write into them
in place. Checkpoints hold them as tensors; ``set_hyperparameter_form`` turns a loaded
optimizer's values into the form its run steps with (a run resumes compiled or eager alike).
"""
from typing import Any, Callable, Dict, Iterable

import torch

from pet.lib.config.errors import ConfigError

# Optimizers whose betas torch takes as tensors (their single-tensor path, which compile fuses).
_TENSOR_BETAS = (torch.optim.Adam, torch.optim.AdamW)


def _as_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    return torch.tensor(float(value), dtype=torch.float64)


def _as_float(value: Any) -> Any:
    return float(value) if isinstance(value, torch.Tensor) else value


def set_hyperparameter_form(optimizer: torch.optim.Optimizer, compiled: bool) -> None:
    """Every group's lr (and betas where torch takes tensors) as tensors when ``compiled``,
    else as floats."""
    convert = _as_tensor if compiled else _as_float
    tensor_betas = compiled and isinstance(optimizer, _TENSOR_BETAS)
    for group in optimizer.param_groups:
        group["lr"] = convert(group["lr"])
        if "betas" in group:
            group["betas"] = tuple((_as_tensor if tensor_betas else _as_float)(b) for b in group["betas"])


def check_scheduled_keys(optimizer: torch.optim.Optimizer, momentum_cycled: bool, params: Iterable[str]) -> None:
    """ConfigError when a schedule would change a hyper-parameter the compiled step holds as a
    number (SGD's momentum, a weight decay): each change would compile the step again."""
    group = optimizer.param_groups[0]
    keys = list(params)
    if momentum_cycled:
        keys.append("betas" if "betas" in group else "momentum")
    for key in keys:
        value = group[key][0] if key == "betas" else group.get(key)
        if not isinstance(value, torch.Tensor):
            shown = "the momentum (SOLVER.SCHEDULER's cycle)" if key in ("momentum", "betas") else \
                f"{key} (SOLVER.SCHEDULER.PARAMS)"
            raise ConfigError(f"SOLVER.OPTIMIZER.COMPILE: {type(optimizer).__name__} takes {shown} as a number, "
                              f"so each scheduled change would compile the step again; schedule it with "
                              f"COMPILE False, or use ADAM/ADAMW (their betas are tensors)")


def write_value(group: Dict[str, Any], key: str, value: float) -> None:
    """``group[key] = value``, into the tensor when the key holds one (no recompilation)."""
    if isinstance(group.get(key), torch.Tensor):
        group[key].fill_(value)
    else:
        group[key] = value


def write_beta1(group: Dict[str, Any], value: float) -> None:
    """The first of ``group``'s betas (Adam's momentum), in place when it is a tensor."""
    betas = group["betas"]
    if isinstance(betas[0], torch.Tensor):
        betas[0].fill_(value)
    else:
        group["betas"] = (value, *betas[1:])


def compiled_step(optimizer: torch.optim.Optimizer) -> Callable[[], None]:
    """``optimizer.step()`` (its clipping included) through torch.compile."""
    compiled = torch.compile(optimizer.step, fullgraph=False)
    state_ready = [False]

    def step() -> None:
        if not state_ready[0]:
            if _creates_momentum_buffers(optimizer):
                optimizer.step()  # once, in a run started from scratch: it makes the buffers
                return
            state_ready[0] = True
        compiled()
    return step


def _creates_momentum_buffers(optimizer: torch.optim.Optimizer) -> bool:
    """Whether this step of an SGD with momentum must create its buffers eagerly: dynamo's
    trace of torch 2.13's SGD diverges where a step creates them. Without dampening they start
    at zero here instead (``start_momentum_buffers``), so every step compiles; with dampening
    the first step of a run started from scratch runs eagerly (a resumed run loads its
    buffers)."""
    return isinstance(optimizer, torch.optim.SGD) and start_momentum_buffers(optimizer) == "dampened"


def start_momentum_buffers(optimizer: torch.optim.SGD) -> str:
    """Before an SGD step that would create the momentum buffers: "ready" when there are
    none to create (no momentum, or made by an earlier step, or loaded); "zeroed" when they
    were missing and now start at zero, exact without dampening (the first step's
    ``momentum * 0 + grad`` is torch's first ``buf = grad``); "dampened" when they are missing
    and dampening makes a zero start inexact (the caller decides)."""
    groups = [group for group in optimizer.param_groups if group["momentum"]]
    state = optimizer.state
    if not groups or any("momentum_buffer" in state[p] for group in groups for p in group["params"]):
        return "ready"
    if any(group["dampening"] for group in groups):
        return "dampened"
    for group in groups:
        for param in group["params"]:
            state[param]["momentum_buffer"] = torch.zeros_like(param)
    return "zeroed"
