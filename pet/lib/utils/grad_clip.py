"""Gradient clipping inside ``optimizer.step()``, with multi-tensor operations.

Clipping in ``step()`` keeps every training loop correct, including ``GradScaler.step``: for a
non-fused optimizer the scaler unscales the gradients before ``step()``; a fused optimizer gets
the scale as ``optimizer.grad_scale`` instead and divides inside its kernel, so here the bounds
are scaled by it (and ``full_model`` clipping is folded into that scale: no extra pass).
"""
from collections import defaultdict
from typing import Dict, List, Optional

import torch

EPS = 1e-6  # as torch.nn.utils.clip_grad_norm_


def grads_by_device(optimizer: torch.optim.Optimizer) -> Dict[torch.device, List[torch.Tensor]]:
    """The existing gradients of the optimizer's params, per device (foreach ops need one)."""
    grads = defaultdict(list)
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is not None:
                grads[p.grad.device].append(p.grad)
    return grads


def clip_by_value_(grads: List[torch.Tensor], clip_value: float) -> None:
    """Clamp every element to [-clip_value, clip_value] in place."""
    torch._foreach_clamp_min_(grads, -clip_value)
    torch._foreach_clamp_max_(grads, clip_value)


def clip_each_norm_(grads: List[torch.Tensor], max_norm: float, norm_type: float) -> None:
    """Scale each gradient separately so its p-norm is at most ``max_norm``, in place."""
    coefs = torch._foreach_norm(grads, norm_type)
    torch._foreach_add_(coefs, EPS)
    torch._foreach_reciprocal_(coefs)
    torch._foreach_mul_(coefs, max_norm)
    torch._foreach_clamp_max_(coefs, 1.0)
    torch._foreach_mul_(grads, coefs)


def total_norm(grads_per_device: Dict[torch.device, List[torch.Tensor]], norm_type: float,
               device: torch.device) -> torch.Tensor:
    """The p-norm of all gradients together, as a 0-dim float32 tensor on ``device``."""
    per_device = []
    for grads in grads_per_device.values():
        norms = torch._foreach_norm(grads, norm_type)
        per_device.append(torch.linalg.vector_norm(torch.stack(norms).float(), norm_type).to(device))
    return torch.linalg.vector_norm(torch.stack(per_device), norm_type)


def clip_coefficient(norm: torch.Tensor, max_norm: float) -> torch.Tensor:
    """min(1, max_norm / norm): the factor that brings a gradient of norm ``norm`` to the bound."""
    return torch.clamp(max_norm / (norm + EPS), max=1.0)


class GradientClipping:
    """Clips gradients at the start of ``step()``; mixed in before a ``torch.optim`` class.

    ``clip_type`` is "value", "norm" or "full_model"; ``clip_value`` the bound; ``norm_type``
    the p of the p-norm.
    """

    def __init__(self, params, *args, clip_type: str, clip_value: float, norm_type: float,
                 **kwargs) -> None:
        self.clip_type = clip_type
        self.clip_value = float(clip_value)
        self.norm_type = float(norm_type)
        super().__init__(params, *args, **kwargs)

    def __getstate__(self):
        state = super().__getstate__()
        state.update(clip_type=self.clip_type, clip_value=self.clip_value, norm_type=self.norm_type)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        if any(group.get("fused") for group in self.param_groups):
            self._step_supports_amp_scaling = True

    @torch.no_grad()
    def clip_gradients_(self) -> None:
        """Clip the current gradients as configured (before the kernel divides by grad_scale)."""
        grads_per_device = grads_by_device(self)
        if not grads_per_device:
            return
        grad_scale: Optional[torch.Tensor] = getattr(self, "grad_scale", None)
        if self.clip_type == "full_model":
            device = next(iter(grads_per_device))
            norm = total_norm(grads_per_device, self.norm_type, device)
            if grad_scale is None:
                coef = clip_coefficient(norm, self.clip_value)
                if getattr(self, "_step_supports_amp_scaling", False):
                    # Fused kernel: it divides every gradient by grad_scale, so the clip is free.
                    self.grad_scale = 1.0 / coef
                    return
            else:
                coef = clip_coefficient(norm / grad_scale.to(device), self.clip_value)
                self.grad_scale = grad_scale / coef.to(grad_scale.device)
                return
            for device, grads in grads_per_device.items():
                torch._foreach_mul_(grads, coef.to(device))
            return
        # The kernel will divide by grad_scale: bound the scaled gradients by the scaled bound.
        bound = self.clip_value * (1.0 if grad_scale is None else float(grad_scale))
        for grads in grads_per_device.values():
            if self.clip_type == "value":
                clip_by_value_(grads, bound)
            else:
                clip_each_norm_(grads, bound, self.norm_type)

    def step(self, closure=None):
        loss = None
        if closure is not None:
            # The closure computes the gradients: they must exist before they are clipped.
            with torch.enable_grad():
                loss = closure()
        outer_scale = getattr(self, "grad_scale", None)
        had_scale = hasattr(self, "grad_scale")
        self.clip_gradients_()
        try:
            super().step()
        finally:
            # GradScaler owns grad_scale: hand its own value back (or none if it set none).
            if had_scale:
                self.grad_scale = outer_scale
            elif hasattr(self, "grad_scale"):
                del self.grad_scale
        return loss
