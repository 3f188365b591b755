"""The passes over the gradients that clipping makes, in the fastest form for each device.

On accelerators: multi-tensor (foreach) kernels and no host sync (``MultiTensorOps``).

On the CPU (``CpuOps``), torch's foreach ops are a C++ loop over per-tensor ops: they save the
Python dispatch of small tensors, and nothing on large ones, where working tensor by tensor
wins instead: a clip finishes with a tensor while it is still in cache (unscale then clamp;
norm then scale), a BLAS dot product reads at memory speed where foreach_norm is
compute-bound, and reading a scalar on the host is free. So small tensors (biases, norms) go
through the foreach ops in one call, large ones one at a time. The large ones run in reverse
parameter order: the optimizer step that follows starts with the first parameters, whose
gradients are then the ones still in cache (about 2% off the clipped step of a ResNet-18).

Each ``clip_*_`` takes ``grad_scale``: when not None the gradients are still multiplied by it
(a fused optimizer under GradScaler), and they come out unscaled and clipped.
"""
import math
from typing import Callable, List, Optional, Tuple

import torch

EPS = 1e-6  # as torch.nn.utils.clip_grad_norm_
# Below this many elements an op's cost is its dispatch, not its memory traffic (it is also
# ATen's grain size: smaller tensors run on one thread).
SMALL_TENSOR = 1 << 15
_DOT_DTYPES = (torch.float32, torch.float64)


def clip_coefficient(norm: torch.Tensor, max_norm: float) -> torch.Tensor:
    """min(1, max_norm / norm): the factor that brings a gradient of norm ``norm`` to the bound."""
    return torch.clamp(max_norm / (norm + EPS), max=1.0)


def is_one(coef: torch.Tensor) -> bool:
    """Whether ``coef`` is known to be exactly 1 without a device sync (CPU tensors only)."""
    return coef.device.type == "cpu" and float(coef) == 1.0


def combine_norms(norms: List[torch.Tensor], norm_type: float,
                  device: torch.device) -> torch.Tensor:
    """The p-norm of several parts' norms (the norm of all the parts together), on ``device``."""
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


class MultiTensorOps:
    """Accelerators (and the CPU's small tensors): foreach kernels, no host sync."""

    @staticmethod
    def total_norm(grads: List[torch.Tensor], norm_type: float) -> torch.Tensor:
        """The p-norm of all ``grads`` together: one read of each, a 0-dim float32 tensor."""
        norms = torch._foreach_norm(grads, norm_type)
        return torch.linalg.vector_norm(torch.stack(norms).float(), norm_type)

    @staticmethod
    def clip_norm_(grads: List[torch.Tensor], max_norm: float, norm_type: float,
                   grad_scale: Optional[torch.Tensor],
                   whole_norms: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> None:
        """Scale each gradient so its own p-norm is at most ``max_norm`` (and unscale it in
        the same multiply): one read and one read-write pass. ``whole_norms``: from the norms
        of shards (the ``grads``) to those of the whole gradients (FSDP2)."""
        norms = torch.stack(torch._foreach_norm(grads, norm_type))
        if whole_norms is not None:
            norms = whole_norms(norms)
        if grad_scale is None:
            coefs = clip_coefficient(norms, max_norm)
        else:
            unscale = grad_scale.to(norms.device).reciprocal()
            coefs = clip_coefficient(norms * unscale, max_norm) * unscale
        torch._foreach_mul_(grads, list(coefs.unbind()))

    @staticmethod
    def clip_value_(grads: List[torch.Tensor], clip_value: float,
                    grad_scale: Optional[torch.Tensor]) -> None:
        """Clamp every element to [-clip_value, clip_value]; torch has no two-sided foreach
        clamp, so two passes (three when unscaling: scaling the bounds would need a sync)."""
        if grad_scale is not None:
            torch._foreach_mul_(grads, grad_scale.to(grads[0].device).reciprocal())
        torch._foreach_clamp_min_(grads, -clip_value)
        torch._foreach_clamp_max_(grads, clip_value)


def split_by_size(grads: List[torch.Tensor]) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
    """(small tensors in order, large tensors in reverse order): see the module docstring."""
    small = [g for g in grads if g.numel() < SMALL_TENSOR]
    large = [g for g in reversed(grads) if g.numel() >= SMALL_TENSOR]
    return small, large


class CpuOps:
    """CPU: small tensors through MultiTensorOps, large ones one at a time, host scalars."""

    @staticmethod
    def total_norm(grads: List[torch.Tensor], norm_type: float) -> torch.Tensor:
        """The p-norm of all ``grads`` together: one read of each, a 0-dim float32 tensor."""
        small, large = split_by_size(grads)
        if not large:
            return MultiTensorOps.total_norm(small, norm_type)
        norms = [host_norm(g, norm_type) for g in large]
        if small:
            norms.append(float(MultiTensorOps.total_norm(small, norm_type)))
        return torch.linalg.vector_norm(torch.tensor(norms, dtype=torch.float32), norm_type)

    @staticmethod
    def clip_norm_(grads: List[torch.Tensor], max_norm: float, norm_type: float,
                   grad_scale: Optional[torch.Tensor]) -> None:
        """Scale each gradient so its own p-norm is at most ``max_norm``: a large one is read,
        then scaled (and unscaled) in one multiply while it is in cache."""
        small, large = split_by_size(grads)
        if small:
            MultiTensorOps.clip_norm_(small, max_norm, norm_type, grad_scale)
        unscale = 1.0 if grad_scale is None else 1.0 / float(grad_scale)
        for grad in large:
            coef = max_norm / (host_norm(grad, norm_type) * unscale + EPS)
            if coef >= 1.0:  # NaN stays NaN and poisons the gradient, as torch's clip does
                coef = 1.0
            if coef * unscale != 1.0:
                grad.mul_(coef * unscale)

    @staticmethod
    def clip_value_(grads: List[torch.Tensor], clip_value: float,
                    grad_scale: Optional[torch.Tensor]) -> None:
        """Clamp every element to [-clip_value, clip_value]: one pass over each large tensor
        (both bounds at once; the unscale, if any, runs on it while it is in cache)."""
        small, large = split_by_size(grads)
        if small:
            MultiTensorOps.clip_value_(small, clip_value, grad_scale)
        unscale = 1.0 if grad_scale is None else 1.0 / float(grad_scale)
        for grad in large:
            if unscale != 1.0:
                grad.mul_(unscale)
            grad.clamp_(-clip_value, clip_value)


def for_device(device: torch.device):
    """The clip ops for gradients on ``device``."""
    return CpuOps if device.type == "cpu" else MultiTensorOps
