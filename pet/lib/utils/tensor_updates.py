"""SGD's, Adam's and AdamW's updates for a compiled step whose schedulable hyper-parameters
(lr, momentum, betas, weight decay) are all 0-dim tensors.

torch's own step code branches on ``weight_decay != 0`` and ``momentum != 0``: on a tensor that
is a graph break at every step, on a number a recompilation at every scheduled change. These are
the formulas of torch's single-tensor paths (``_single_tensor_sgd``, ``_single_tensor_adam``)
with no branch on a value: a weight decay of 0 adds ``0 * param`` (the same result), and momentum
is on where its buffer exists. The state (momentum buffers, Adam's moments and step counts) is
torch's, made eagerly before the first compiled call (``init_adam_state``; SGD's buffers:
``compiled_step.start_momentum_buffers``), so checkpoints resume into torch's own step and back.
"""
from typing import Any, Callable, Dict, Optional, Tuple

import torch

# The keys each class's update reads as tensors, besides lr.
TENSOR_KEYS: Dict[type, Tuple[str, ...]] = {
    torch.optim.SGD: ("momentum", "weight_decay"),
    torch.optim.Adam: ("betas", "weight_decay"),
    torch.optim.AdamW: ("betas", "weight_decay"),
}


def torch_class(optimizer: torch.optim.Optimizer) -> Optional[type]:
    """The TENSOR_KEYS class ``optimizer`` is (a clipped subclass included), or None."""
    return next((cls for cls in type(optimizer).__mro__ if cls in TENSOR_KEYS), None)


def _grad(param: torch.Tensor, group: dict) -> torch.Tensor:
    return -param.grad if group["maximize"] else param.grad


def _scalars(param: torch.Tensor, *values: Any) -> Tuple[Any, ...]:
    """``values`` (0-dim tensors or numbers) in the precision torch's eager kernels use with
    ``param`` (its opmath type: float64 for float64, else float32): the arithmetic on the
    hyper-parameters stays in float64, the per-element work in the parameter's precision
    (float64 there cost 5% of a compiled SGD step on the CPU)."""
    dtype = torch.float64 if param.dtype == torch.float64 else torch.float32
    return tuple(v.to(dtype) if isinstance(v, torch.Tensor) else v for v in values)


@torch.no_grad()
def sgd_update(optimizer: torch.optim.SGD) -> None:
    """torch's SGD step: ``grad + weight_decay * param``, the momentum buffer (where one
    exists) ``momentum * buf + (1 - dampening) * grad``, Nesterov's look-ahead, ``-lr``."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            if param.grad is None:
                continue
            lr, momentum, weight_decay = _scalars(param, group["lr"], group["momentum"], group["weight_decay"])
            grad = _grad(param, group) + weight_decay * param
            buf = optimizer.state[param].get("momentum_buffer")
            if buf is not None:
                buf.mul_(momentum).add_(grad, alpha=1 - group["dampening"])
                grad = grad + momentum * buf if group["nesterov"] else buf
            param.sub_(lr * grad)


@torch.no_grad()
def adam_update(optimizer: torch.optim.Adam) -> None:
    """torch's Adam/AdamW step (``decoupled_weight_decay``: AdamW's ``param * (1 - lr * wd)``,
    else ``grad + wd * param``), with bias correction and AMSGrad."""
    for group in optimizer.param_groups:
        lr, (beta1, beta2), weight_decay = group["lr"], group["betas"], group["weight_decay"]
        for param in group["params"]:
            if param.grad is None:
                continue
            state = optimizer.state[param]
            grad = _grad(param, group)
            step = state["step"]
            step += 1
            # The scalars in float64, as torch's eager step computes them in Python.
            step_size = lr / (1 - beta1 ** step)
            bias_correction2_sqrt = (1 - beta2 ** step).sqrt()
            decay, wd, weight1, beta2_, weight2, step_size, bias_correction2_sqrt = _scalars(
                param, 1 - lr * weight_decay, weight_decay, 1 - beta1, beta2, 1 - beta2, step_size,
                bias_correction2_sqrt)
            if group["decoupled_weight_decay"]:
                param.mul_(decay)
            else:
                grad = grad + wd * param
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            exp_avg.lerp_(grad, weight1)
            exp_avg_sq.mul_(beta2_).add_(weight2 * grad * grad)
            if group["amsgrad"]:
                torch.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
                exp_avg_sq = state["max_exp_avg_sq"]
            denom = exp_avg_sq.sqrt() / bias_correction2_sqrt + group["eps"]
            param.sub_(step_size * exp_avg / denom)


def init_adam_state(optimizer: torch.optim.Adam) -> None:
    """torch's lazy Adam state, made at once for every parameter that has none: the moments at
    zero, the step count a 0-dim CPU tensor at 0 (as torch keeps it when neither fused nor
    capturable). A parameter without a gradient keeps it unchanged, as torch's state made at
    its first gradient would be. SGD's buffers: ``compiled_step.start_momentum_buffers``."""
    scalar_dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state[param]
            if state:
                continue
            state["step"] = torch.tensor(0.0, dtype=scalar_dtype)
            for key in ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if group["amsgrad"] else ()):
                state[key] = torch.zeros_like(param, memory_format=torch.preserve_format)


def tensor_update(optimizer: torch.optim.Optimizer) -> Optional[Callable[[torch.optim.Optimizer], None]]:
    """The update above for ``optimizer``'s class, or None (torch's own step is compiled)."""
    cls = torch_class(optimizer)
    if cls is None:
        return None
    return sgd_update if cls is torch.optim.SGD else adam_update
