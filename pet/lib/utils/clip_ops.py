"""The passes over the gradients that clipping makes, in the fastest form for each device.

On the CPU, torch's foreach ops are a C++ loop over per-tensor ops, so a multi-tensor op saves
little, while doing the work tensor by tensor lets a clip finish with a tensor while it is
still in cache (unscale then clamp; norm then scale), and reading a scalar on the host is free.
The CPU passes also run in reverse parameter order: the optimizer step that follows starts with
the first parameters, whose gradients are then the ones still in cache (about 2% off the
clipped step of a ResNet-18).
On accelerators the opposite holds: one multi-tensor kernel per op (foreach) and no host sync.

Each ``clip_*_`` takes ``grad_scale``: when not None the gradients are still multiplied by it
(a fused optimizer under GradScaler), and they come out unscaled and clipped.
"""
import math
from typing import List, Optional

import torch

EPS = 1e-6  # as torch.nn.utils.clip_grad_norm_
_DOT_DTYPES = (torch.float32, torch.float64)


def clip_coefficient(norm: torch.Tensor, max_norm: float) -> torch.Tensor:
    """min(1, max_norm / norm): the factor that brings a gradient of norm ``norm`` to the bound."""
    return torch.clamp(max_norm / (norm + EPS), max=1.0)


def is_one(coef: torch.Tensor) -> bool:
    """Whether ``coef`` is known to be exactly 1 without a device sync (CPU tensors only)."""
    return coef.device.type == "cpu" and float(coef) == 1.0


def combine_norms(norms: List[torch.Tensor], norm_type: float, device: torch.device) -> torch.Tensor:
    """The p-norm of several devices' total norms, on ``device``."""
    if len(norms) == 1:
        return norms[0]
    return torch.linalg.vector_norm(torch.stack([n.to(device) for n in norms]), norm_type)


def host_norm(grad: torch.Tensor, norm_type: float) -> float:
    """The p-norm of one CPU tensor as a Python float, by its fastest torch op.

    A BLAS dot product reads the tensor at memory speed, where ``linalg.vector_norm`` is
    compute-bound on the CPU; the max-norm by ``aminmax`` avoids foreach_norm's slow inf path.
    """
    if grad.numel() == 0:
        return 0.0
    if norm_type == 2.0 and grad.dtype in _DOT_DTYPES and grad.is_contiguous():
        flat = grad.view(-1)
        return math.sqrt(float(torch.dot(flat, flat)))
    if math.isinf(norm_type):
        low, high = torch.aminmax(grad)
        return float(torch.maximum(high, -low))  # NaN propagates, as in torch's norms
    return float(torch.linalg.vector_norm(grad, norm_type))


class PerTensorOps:
    """CPU: one tensor at a time, scalars on the host."""

    @staticmethod
    def total_norm(grads: List[torch.Tensor], norm_type: float) -> torch.Tensor:
        """The p-norm of all ``grads`` together: one read of each, a 0-dim float32 tensor."""
        norms = torch.tensor([host_norm(g, norm_type) for g in reversed(grads)],
                             dtype=torch.float32)
        return torch.linalg.vector_norm(norms, norm_type)

    @staticmethod
    def clip_norm_(grads: List[torch.Tensor], max_norm: float, norm_type: float,
                   grad_scale: Optional[torch.Tensor]) -> None:
        """Scale each gradient so its own p-norm is at most ``max_norm``: read, then scale
        (and unscale) in one multiply while the tensor is in cache."""
        unscale = 1.0 if grad_scale is None else 1.0 / float(grad_scale)
        for grad in reversed(grads):
            coef = max_norm / (host_norm(grad, norm_type) * unscale + EPS)
            if coef >= 1.0:  # NaN stays NaN and poisons the gradient, as torch's clip does
                coef = 1.0
            if coef * unscale != 1.0:
                grad.mul_(coef * unscale)

    @staticmethod
    def clip_value_(grads: List[torch.Tensor], clip_value: float,
                    grad_scale: Optional[torch.Tensor]) -> None:
        """Clamp every element to [-clip_value, clip_value]: one pass (both bounds at once)."""
        unscale = 1.0 if grad_scale is None else 1.0 / float(grad_scale)
        for grad in reversed(grads):
            if unscale != 1.0:
                grad.mul_(unscale)
            grad.clamp_(-clip_value, clip_value)


class MultiTensorOps:
    """CUDA and other accelerators: foreach kernels, no host sync."""

    @staticmethod
    def total_norm(grads: List[torch.Tensor], norm_type: float) -> torch.Tensor:
        """The p-norm of all ``grads`` together: one read of each, a 0-dim float32 tensor."""
        norms = torch._foreach_norm(grads, norm_type)
        return torch.linalg.vector_norm(torch.stack(norms).float(), norm_type)

    @staticmethod
    def clip_norm_(grads: List[torch.Tensor], max_norm: float, norm_type: float,
                   grad_scale: Optional[torch.Tensor]) -> None:
        """Scale each gradient so its own p-norm is at most ``max_norm`` (and unscale it in
        the same multiply): one read and one read-write pass."""
        coefs = torch._foreach_norm(grads, norm_type)
        unscale = None if grad_scale is None else grad_scale.to(grads[0].device).reciprocal()
        if unscale is not None:
            torch._foreach_mul_(coefs, unscale)
        torch._foreach_add_(coefs, EPS)
        torch._foreach_reciprocal_(coefs)
        torch._foreach_mul_(coefs, max_norm)
        torch._foreach_clamp_max_(coefs, 1.0)
        if unscale is not None:
            torch._foreach_mul_(coefs, unscale)
        torch._foreach_mul_(grads, coefs)

    @staticmethod
    def clip_value_(grads: List[torch.Tensor], clip_value: float,
                    grad_scale: Optional[torch.Tensor]) -> None:
        """Clamp every element to [-clip_value, clip_value]; torch has no two-sided foreach
        clamp, so two passes (three when unscaling: scaling the bounds would need a sync)."""
        if grad_scale is not None:
            torch._foreach_mul_(grads, grad_scale.to(grads[0].device).reciprocal())
        torch._foreach_clamp_min_(grads, -clip_value)
        torch._foreach_clamp_max_(grads, clip_value)


def for_device(device: torch.device):
    """The clip ops for gradients on ``device``."""
    return PerTensorOps if device.type == "cpu" else MultiTensorOps
