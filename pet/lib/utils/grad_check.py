"""The step guard's passes over the gradients: whether every element is finite (every step, on
the device, read nowhere here), and their total norm (when measured)."""
from typing import Dict, List, Optional, Tuple

import torch

from pet.lib.utils import clip_ops
from pet.lib.utils.grad_clip import grads_by_device
from pet.lib.utils.shards import is_sharded, local_shard, max_over_shards_, norms_over_shards, optimizer_shard_group

# [((device, dtype), the params of that device and dtype)]
ParamGroups = List[Tuple[Tuple[torch.device, torch.dtype], List[torch.nn.Parameter]]]
# Flags handed out per step before the flag buffer is zeroed and reused (more take a new one).
FLAGS_PER_BUFFER = 256


class FlagSlots:
    """0-dim float32 flags on one device, one per step, zeroed together when read back: a step
    takes a flag without allocating or launching anything (views of a buffer made once)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._buffers: List[torch.Tensor] = []
        self._slots: List[torch.Tensor] = []
        self._taken = 0

    def take(self) -> torch.Tensor:
        """A flag at 0, that no other step holds until ``reset()``."""
        if self._taken == len(self._slots):
            buffer = torch.zeros(FLAGS_PER_BUFFER, device=self.device)
            self._buffers.append(buffer)
            self._slots.extend(buffer.unbind())
        self._taken += 1
        return self._slots[self._taken - 1]

    def reset(self) -> None:
        """Zero the flags taken so far (one fill per buffer used) and hand them out again."""
        used = -(-self._taken // FLAGS_PER_BUFFER)
        for buffer in self._buffers[:used]:
            buffer.zero_()
        self._taken = 0


class GradientCheck:
    """The finiteness check and the total norm of ``optimizer``'s gradients, as device tensors.

    The finiteness check is one pass per device and dtype by GradScaler's own check (its
    unscale by exactly 1 leaves every gradient as it was), which raises a flag tensor and reads
    nothing: torch's fused kernels take that flag as ``found_inf`` and skip the update on the
    device. The params are grouped by device and dtype once (again after add_param_group).
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self._group_count: Optional[int] = None
        self._param_groups: ParamGroups = []
        self._sparse = False  # whether a sparse gradient was seen (nn.Embedding(sparse=True))
        # Per device: the scale of 1 the check multiplies by.
        self._ones: Dict[torch.device, torch.Tensor] = {}
        # The process group of sharded (FSDP2) parameters; None: not sharded.
        self._shard_group = optimizer_shard_group(optimizer)
        # Whether a parameter is a DTensor (sharded, on a mesh of any size), set with the groups.
        self._sharded = False

    def raise_if_nonfinite(self, flag: torch.Tensor, losses: List[torch.Tensor] = ()) -> torch.Tensor:
        """Raise ``flag`` (a 0-dim float32 tensor at 0) to 1 when an element of a gradient, or
        of ``losses`` (detached, on the flag's device), is inf or NaN; return it. Reads nothing.
        A loss of the gradients' device and dtype joins their pass (one kernel, not two)."""
        by_kind: Dict[Tuple[torch.device, torch.dtype], List[torch.Tensor]] = {}
        for loss in losses:
            by_kind.setdefault((loss.device, loss.dtype), []).append(loss)
        for (device, dtype), params in self.params_by_device_and_dtype():
            tensors = [grad for p in params if (grad := p.grad) is not None]
            if self._sharded:  # DTensor gradients: their local shards
                tensors = [local_shard(grad) for grad in tensors]
            tensors += by_kind.pop((device, dtype), [])
            if tensors:
                self._check(tensors, flag, device)
        for (device, _), rest in by_kind.items():
            self._check(rest, flag, device)
        if self._shard_group is not None:  # sharded gradients: a step is skipped everywhere or nowhere
            max_over_shards_(flag, self._shard_group)
        return flag

    def _check(self, tensors: List[torch.Tensor], flag: torch.Tensor, device: torch.device) -> None:
        one = self._ones.get(device)
        if one is None:
            one = self._ones[device] = torch.ones((), device=device)
        if device != flag.device:  # params on several devices: each device's own flag, added
            found = torch.zeros((), device=device)
            self._check(tensors, found, device)
            flag.add_(found.to(flag.device)).clamp_(max=1.0)
            return
        if self._sparse:
            tensors = [gradient_values(t) for t in tensors]
        try:
            torch._amp_foreach_non_finite_check_and_unscale_(tensors, flag, one)
        except NotImplementedError:  # a sparse gradient: its values from now on
            if self._sparse:
                raise
            self._sparse = True
            self._check(tensors, flag, device)

    def total_norm(self) -> Optional[torch.Tensor]:
        """The total 2-norm of every gradient (a 0-dim tensor on the first device; sharded
        gradients: over every process's shards), or None when there are no gradients."""
        per_device = grads_by_device(self.optimizer)
        if not per_device:
            return None
        norms = [clip_ops.for_device(device).total_norm(
                     [gradient_values(g, coalesce=True) for g in grads], 2.0)
                 for device, grads in per_device.items()]
        norm = clip_ops.combine_norms(norms, 2.0, next(iter(per_device)))
        return norm if self._shard_group is None else norms_over_shards(norm, 2.0, self._shard_group)

    def first_device(self) -> torch.device:
        """The device of the optimizer's first param (where the step's flag lives)."""
        return self.params_by_device_and_dtype()[0][0][0]

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
            self._shard_group = optimizer_shard_group(self.optimizer)
            self._sharded = any(is_sharded(p) for params in grouped.values() for p in params)
        return self._param_groups


def gradient_values(grad: torch.Tensor, coalesce: bool = False) -> torch.Tensor:
    """The elements of ``grad``: a sparse gradient's values (coalesced: duplicate indices
    summed, as its norm needs), a dense gradient itself."""
    if not grad.is_sparse:
        return grad
    return (grad.coalesce() if coalesce else grad)._values()


def host_floats(scalars: List[torch.Tensor]) -> List[float]:
    """0-dim tensors as Python floats, in one read (one device sync off the CPU)."""
    if not scalars:
        return []
    device = scalars[0].device
    if all(scalar.dtype is torch.float32 and scalar.device == device for scalar in scalars):
        return torch.stack(scalars).tolist()  # the usual case: no conversion, a third of the calls
    return torch.stack([scalar.detach().float().to(device) for scalar in scalars]).tolist()
