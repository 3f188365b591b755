"""The step guard's reads of the gradients: whether every element is finite (every step), and
their total norm (when measured)."""
import math
from typing import Dict, List, Optional, Tuple

import torch

from pet.lib.utils import clip_ops
from pet.lib.utils.grad_clip import grads_by_device

# [((device, dtype), the params of that device and dtype)]
ParamGroups = List[Tuple[Tuple[torch.device, torch.dtype], List[torch.nn.Parameter]]]


class GradientCheck:
    """Reads the gradients of ``optimizer``'s params, together with the step's loss, in one
    host sync.

    The finiteness check is one pass per device and dtype by GradScaler's own check (its
    unscale by exactly 1 leaves every gradient as it was): on the CPU several times cheaper
    than a norm for small tensors, where a norm's reductions cost more than their reads. A
    finite step allocates nothing: the params are grouped by device and dtype once (again
    after add_param_group), and each device's flag is a tensor kept across steps (the check
    only ever raises it; a raised one is cleared once read).
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self._group_count: Optional[int] = None
        self._param_groups: ParamGroups = []
        self._on_cpu = False  # whether every param is on the CPU
        self._sparse = False  # whether a sparse gradient was seen (nn.Embedding(sparse=True))
        # Per device: (the flag, the scale of 1 the check multiplies by).
        self._flags: Dict[torch.device, Tuple[torch.Tensor, torch.Tensor]] = {}

    def finite(self, losses: List[torch.Tensor]) -> Tuple[float, bool]:
        """(the sum of ``losses``, 0-dim tensors, as a float; whether every gradient element is
        finite)."""
        flags = self._nonfinite_flags()
        values = self._read([*losses, *flags])
        raised = any(values[len(losses):])
        if raised:
            for flag in flags:
                flag.zero_()
        return sum(values[:len(losses)]), not raised

    def norm(self, losses: List[torch.Tensor]) -> Tuple[float, float, bool]:
        """(the sum of ``losses`` as a float, the gradients' total 2-norm, whether every
        gradient element is finite)."""
        norm = self.total_norm()
        if norm is None:
            return sum(self._read(losses)), 0.0, True
        *loss_values, norm_value = self._read([*losses, norm])
        # The norm of finite gradients can still overflow (squares beyond the float range).
        finite = math.isfinite(norm_value) or self.finite([])[1]
        return sum(loss_values), norm_value, finite

    def _read(self, scalars: List[torch.Tensor]) -> List[float]:
        if self._on_cpu and scalars[0].is_cpu:  # reading CPU scalars one by one syncs nothing
            return [scalar.item() for scalar in scalars]
        return host_floats(scalars)

    def total_norm(self) -> Optional[torch.Tensor]:
        """The total 2-norm of every gradient (a 0-dim tensor on the first device), or None
        when there are no gradients."""
        per_device = grads_by_device(self.optimizer)
        if not per_device:
            return None
        norms = [clip_ops.for_device(device).total_norm(
                     [gradient_values(g, coalesce=True) for g in grads], 2.0)
                 for device, grads in per_device.items()]
        return clip_ops.combine_norms(norms, 2.0, next(iter(per_device)))

    def _nonfinite_flags(self) -> List[torch.Tensor]:
        """Per device holding gradients, a 0-dim float32 tensor raised to 1 when a gradient
        element there is inf or NaN."""
        flags: Dict[torch.device, torch.Tensor] = {}
        for (device, _), params in self.params_by_device_and_dtype():
            grads = [p.grad for p in params if p.grad is not None]
            if not grads:
                continue
            if device not in self._flags:
                found = torch.zeros((), device=device)
                self._flags[device] = found, torch.ones_like(found)
            found, one = self._flags[device]
            if self._sparse:
                grads = [gradient_values(g) for g in grads]
            try:
                torch._amp_foreach_non_finite_check_and_unscale_(grads, found, one)
            except NotImplementedError:  # a sparse gradient: its values from now on
                if self._sparse:
                    raise
                self._sparse = True
                return self._nonfinite_flags()
            flags[device] = found
        return list(flags.values())

    def params_by_device_and_dtype(self) -> ParamGroups:
        """The optimizer's params grouped by device and dtype, as a multi-tensor kernel takes
        them (once, and again after add_param_group)."""
        groups = self.optimizer.param_groups
        if len(groups) != self._group_count:  # built, or a group added (add_param_group)
            grouped: Dict[Tuple[torch.device, torch.dtype], List[torch.nn.Parameter]] = {}
            for group in groups:
                for param in group["params"]:
                    grouped.setdefault((param.device, param.dtype), []).append(param)
            self._param_groups, self._group_count = list(grouped.items()), len(groups)
            self._on_cpu = all(device.type == "cpu" for device, _ in grouped)
        return self._param_groups


def gradient_values(grad: torch.Tensor, coalesce: bool = False) -> torch.Tensor:
    """The elements of ``grad``: a sparse gradient's values (coalesced: duplicate indices
    summed, as its norm needs), a dense gradient itself."""
    if not grad.is_sparse:
        return grad
    return (grad.coalesce() if coalesce else grad)._values()


def host_floats(scalars: List[torch.Tensor]) -> List[float]:
    """0-dim tensors as Python floats, in one device sync (on the CPU reading one is free)."""
    if all(scalar.device.type == "cpu" for scalar in scalars):
        return [scalar.item() for scalar in scalars]
    device = scalars[0].device
    return torch.stack([scalar.float().to(device) for scalar in scalars]).tolist()
