"""Gradient clipping inside ``optimizer.step()``, at the least memory traffic each clip needs.

Clipping in ``step()`` keeps every training loop correct, including ``GradScaler.step``: for a
non-fused optimizer the scaler unscales the gradients before ``step()``; a fused optimizer gets
the scale as ``optimizer.grad_scale`` instead (its kernel divides by it), so here the clip
accounts for it:

- "full_model" needs one read of every gradient (the total norm); the clip coefficient then
  rides in the fused kernel's ``grad_scale`` (no pass of its own), or is one multiply pass for
  the other kernels.
- "norm" and "value" unscale in the same pass that clips, and hand the kernel no scale.

How the passes run depends on the device (``clip_ops``): large tensors one at a time with host
scalars on the CPU, multi-tensor (foreach) without host syncs elsewhere.
"""
from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch

from pet.lib.utils import clip_ops
from pet.lib.utils.registry import Registry
from pet.lib.utils.shards import aligned_local_grads, is_sharded, norms_over_shards, optimizer_shard_group

GradsPerDevice = Dict[torch.device, List[torch.Tensor]]


def grads_by_device(optimizer: torch.optim.Optimizer) -> GradsPerDevice:
    """The non-empty gradients of the optimizer's params, per device (foreach ops need one).

    An empty gradient has nothing to clip and adds nothing to a norm (torch refuses the
    max-norm of one: a max over nothing has no value). Sharded gradients (FSDP2) are this
    process's shards, one per gradient in every process (``aligned_local_grads``).
    """
    grads = [p.grad for group in optimizer.param_groups for p in group["params"]
             if p.grad is not None and p.grad.numel() > 0]
    if not grads:
        return {}
    if is_sharded(grads[0]):
        grads = aligned_local_grads(grads)
    device = grads[0].device
    if all(grad.device == device for grad in grads):  # the usual case, without a dict per step
        return {device: grads}
    per_device = defaultdict(list)
    for grad in grads:
        per_device[grad.device].append(grad)
    return dict(per_device)


def call_step_unhooked(bound_step):
    """Call a torch optimizer class's ``step`` (bound to its optimizer) without the hook runner.

    torch wraps an optimizer class's ``step`` in its hook runner (marked ``hooked``) when the
    class is first instantiated, so a step called from inside another optimizer's step (a
    clipped subclass, Muon's two parts) would run every step hook a second time.
    """
    if getattr(bound_step, "hooked", False):
        return bound_step.__wrapped__(bound_step.__self__)
    return bound_step()


@dataclass(frozen=True)
class ClipSpec:
    """How ``step()`` clips: a CLIP_TYPES name, the bound, and the p of the p-norm."""

    clip_type: str
    clip_value: float
    norm_type: float = 2.0


# name -> clip(optimizer, grads per device, grad_scale or None); a clip that unscales the
# gradients itself sets optimizer.grad_scale to None, one that folds its factor into the fused
# kernel's scale sets optimizer.grad_scale to the new scale.
CLIP_TYPES = Registry("clip type")


@CLIP_TYPES.register(name="value")
def clip_by_value_(optimizer: "GradientClipping", grads_per_device: GradsPerDevice,
                   grad_scale: Optional[torch.Tensor]) -> None:
    """Every gradient element clamped to [-clip_value, clip_value] (unscaled in the pass)."""
    for grads in grads_per_device.values():
        clip_ops.for_device(grads[0].device).clip_value_(grads, optimizer.clip_value, grad_scale)
    if grad_scale is not None:
        optimizer.grad_scale = None  # unscaled above; the scaler's found_inf still skips the step


@CLIP_TYPES.register(name="norm")
def clip_by_norm_(optimizer: "GradientClipping", grads_per_device: GradsPerDevice,
                  grad_scale: Optional[torch.Tensor]) -> None:
    """Each parameter's gradient clipped to norm clip_value on its own (unscaled in the pass);
    a sharded gradient by the norm of the whole parameter's gradient (one all-reduce)."""
    group = optimizer_shard_group(optimizer)
    for grads in grads_per_device.values():
        if group is None:
            clip_ops.for_device(grads[0].device).clip_norm_(
                grads, optimizer.clip_value, optimizer.norm_type, grad_scale)
            continue
        clip_ops.MultiTensorOps.clip_norm_(
            grads, optimizer.clip_value, optimizer.norm_type, grad_scale,
            whole_norms=lambda norms: norms_over_shards(norms, optimizer.norm_type, group))
    if grad_scale is not None:
        optimizer.grad_scale = None


@CLIP_TYPES.register(name="full_model")
def clip_full_model_(optimizer: "GradientClipping", grads_per_device: GradsPerDevice,
                     grad_scale: Optional[torch.Tensor]) -> None:
    """All gradients clipped jointly to total norm clip_value: one read of every gradient;
    a fused kernel gets the coefficient in its gradient scale (no pass of its own). Sharded
    gradients: the norm over every process's shards (one all-reduce of a scalar)."""
    norms = [clip_ops.for_device(device).total_norm(grads, optimizer.norm_type)
             for device, grads in grads_per_device.items()]
    device = next(iter(grads_per_device))
    norm = clip_ops.combine_norms(norms, optimizer.norm_type, device)
    group = optimizer_shard_group(optimizer)
    if group is not None:
        norm = norms_over_shards(norm, optimizer.norm_type, group)
    if grad_scale is not None:
        norm = norm / grad_scale.to(device)
    coef = clip_ops.clip_coefficient(norm, optimizer.clip_value)
    if clip_ops.is_one(coef):
        return  # within the bound: torch would multiply by exactly 1.0
    if getattr(optimizer, "_step_supports_amp_scaling", False):
        # Fused kernel: it divides every gradient by grad_scale, so the clip costs no pass.
        scale = 1.0 if grad_scale is None else grad_scale
        optimizer.grad_scale = scale / coef.to(device)
        return
    for device, grads in grads_per_device.items():
        torch._foreach_mul_(grads, coef.to(device))


class GradientClipping:
    """Clips gradients at the start of ``step()``; mixed in before a ``torch.optim`` class.

    ``clip_type`` is a CLIP_TYPES name ("value", "norm", "full_model"); ``clip_value`` the
    bound; ``norm_type`` the p of the p-norm.
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
        """Clip the current gradients as configured; may set ``self.grad_scale`` for the kernel.

        ``grad_scale`` (set by GradScaler on fused optimizers) means the gradients are still
        multiplied by it: the clip bounds the true gradients, ``grad / grad_scale``.
        """
        grads_per_device = grads_by_device(self)
        if grads_per_device:
            CLIP_TYPES.get(self.clip_type)(self, grads_per_device, getattr(self, "grad_scale", None))

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
            self._torch_step()
        finally:
            # GradScaler owns grad_scale: hand its own value back (or none if it set none).
            if had_scale:
                self.grad_scale = outer_scale
            elif hasattr(self, "grad_scale"):
                del self.grad_scale
        return loss

    def _torch_step(self):
        """Run the torch class's step without its hooks: they already ran around this one."""
        return call_step_unhooked(super().step)
