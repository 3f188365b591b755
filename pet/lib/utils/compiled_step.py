"""SOLVER.OPTIMIZER.COMPILE: the optimizer step (clipping included) compiled once by
torch.compile, its schedulable hyper-parameters held as tensors (torch's recipe for a compiled
step: a schedule that writes into the tensors in place never recompiles).

The lr of every group becomes a 0-dim float64 tensor; so do SGD's momentum and weight decay and
Adam's and AdamW's betas and weight decay, which those three step through
``tensor_updates`` (torch's own code branches on their values). The scheduler and the
hyper-parameter schedules write into the tensors in place. Checkpoints hold them as tensors;
``set_hyperparameter_form`` turns a loaded optimizer's values into the form its run steps with
(a run resumes compiled or eager alike).
"""
import logging
from types import MethodType
from typing import Any, Callable, Dict, Iterable, Optional

import torch

from pet.lib.config.errors import ConfigError
from pet.lib.utils.grad_clip import GradientClipping
from pet.lib.utils.step_call import record_step_call
from pet.lib.utils.tensor_updates import TENSOR_KEYS, init_adam_state, tensor_update, torch_class


def _as_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    return torch.tensor(float(value), dtype=torch.float64)


def _as_float(value: Any) -> Any:
    return float(value) if isinstance(value, torch.Tensor) else value


def set_hyperparameter_form(optimizer: torch.optim.Optimizer, compiled: bool) -> None:
    """Every group's lr (and the TENSOR_KEYS of SGD, Adam and AdamW) as tensors when
    ``compiled``, else as floats."""
    cls = torch_class(optimizer)
    tensor_keys = TENSOR_KEYS[cls] if compiled and cls is not None else ()
    for group in optimizer.param_groups:
        group["lr"] = _as_tensor(group["lr"]) if compiled else _as_float(group["lr"])
        for key in ("momentum", "weight_decay", "betas"):
            if key not in group:
                continue
            convert = _as_tensor if key in tensor_keys else _as_float
            value = group[key]
            group[key] = tuple(map(convert, value)) if isinstance(value, (tuple, list)) else convert(value)


def check_scheduled_keys(optimizer: torch.optim.Optimizer, momentum_cycled: bool, params: Iterable[str]) -> None:
    """ConfigError when a schedule would change a hyper-parameter the compiled step holds as a
    number (the momentum or weight decay of an optimizer other than SGD, Adam and AdamW): each
    change would compile the step again."""
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
                              f"COMPILE False, or use SGD, ADAM or ADAMW (their compiled step holds "
                              f"{key} as a tensor)")


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


class _ProfilerRangeNotice(logging.Filter):
    """Drops dynamo's "Profiler record function ... will be ignored": the compiled step keeps
    torch's step wrapper for its hooks, whose profiler range a compiled graph cannot record;
    said on every run's standard error, it reported nothing a run could act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Profiler record function")


_DYNAMO_CONTEXT_LOG = logging.getLogger("torch._dynamo.variables.ctx_manager")
_PROFILER_RANGE_NOTICE = _ProfilerRangeNotice()


def compiled_step(optimizer: torch.optim.Optimizer) -> Callable[[], None]:
    """``optimizer.step()`` (its clipping included) through torch.compile. SGD, Adam and
    AdamW step through their ``tensor_updates``: that update becomes this optimizer's ``step``
    (torch's step hooks kept around it). The compiled code calls the hooked step, never an
    instance's patch of ``optimizer.step``; an lr scheduler's record is set as its patch sets it."""
    _DYNAMO_CONTEXT_LOG.addFilter(_PROFILER_RANGE_NOTICE)  # once: a filter is added at most once
    update = tensor_update(optimizer)
    if update is not None:
        optimizer.step = MethodType(torch.optim.Optimizer.profile_hook_step(_step_of(update)), optimizer)
    # The hooked step without an lr scheduler's recording wrapper, which breaks dynamo's graph
    # (a weak reference): the record is set outside, as the wrapper sets it.
    hooked_step = optimizer.step if update is not None else type(optimizer).step.__get__(optimizer)

    def call_step() -> None:
        hooked_step()
    # dynamo keeps its compiled graphs on the code object, at most recompile_limit (8) per
    # object: a copy of the code per optimizer, or a ninth optimizer (SOLVER.OPTIMIZERS)
    # would step eagerly.
    call_step.__code__ = call_step.__code__.replace()
    compiled = torch.compile(call_step, fullgraph=False)
    state_ready = [False]

    def step() -> None:
        record_step_call(optimizer)
        if not state_ready[0]:
            if _creates_momentum_buffers(optimizer):
                type(optimizer).step(optimizer)  # once, from scratch: torch's own step makes the buffers
                return
            if isinstance(optimizer, torch.optim.Adam):
                init_adam_state(optimizer)
            state_ready[0] = True
        compiled()
    return step


def _step_of(update: Callable[[torch.optim.Optimizer], None]) -> Callable:
    """An optimizer's ``step(closure=None)`` that clips (GradientClipping) and runs ``update``."""
    def step(optimizer: torch.optim.Optimizer, closure: Optional[Callable] = None) -> Any:
        loss = None
        if closure is not None:  # it computes the gradients: they must exist before the clip
            with torch.enable_grad():
                loss = closure()
        if isinstance(optimizer, GradientClipping):
            optimizer.clip_gradients_()
        update(optimizer)
        return loss
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
