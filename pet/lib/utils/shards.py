"""Gradients of parameters sharded over processes (FSDP2's DTensor parameters).

Each process holds a shard of every parameter and of its gradient. The passes over the
gradients (the finiteness check, the norms, the clips) run on each process's own shards as
plain tensors; what must be the same on every process (the step's non-finite flag, a norm) is
then one all-reduce of a few numbers over the shards' process group. Nothing is read on the
host and no gradient is gathered.

torch.distributed.tensor (DTensor) and FSDP2 are imported only by a run that shards: their
import takes half a second of every start of the tools, and before it no tensor can be a
DTensor, nor a module an FSDP2 module.
"""
import math
import sys
from typing import Iterable, List, Optional

import torch
import torch.distributed as dist


def imported_class(module: str, name: str) -> Optional[type]:
    """The class ``module.name`` if ``module`` was imported, else None (then nothing is an
    instance of it)."""
    loaded = sys.modules.get(module)
    return None if loaded is None else getattr(loaded, name, None)


def is_sharded(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is a DTensor (a sharded parameter or gradient)."""
    dtensor = imported_class("torch.distributed.tensor", "DTensor")
    return dtensor is not None and isinstance(tensor, dtensor)


def local_shard(tensor: torch.Tensor) -> torch.Tensor:
    """This process's shard of ``tensor`` (a DTensor's local tensor, sharing its storage), or
    ``tensor`` itself when it is not sharded."""
    return tensor._local_tensor if is_sharded(tensor) else tensor


def shard_group(params: Iterable[torch.Tensor]) -> Optional[dist.ProcessGroup]:
    """The process group ``params`` are sharded over, or None when they are plain tensors (a
    model is sharded whole by its root's fully_shard: the first parameter tells)."""
    for param in params:
        if is_sharded(param) and param.device_mesh.size() > 1:
            return param.device_mesh.get_group()
        return None
    return None


def optimizer_params(optimizer: torch.optim.Optimizer) -> List[torch.Tensor]:
    """The optimizer's parameters in its state dict's index order."""
    return [p for group in optimizer.param_groups for p in group["params"]]


def optimizer_shard_group(optimizer: torch.optim.Optimizer) -> Optional[dist.ProcessGroup]:
    """The process group the optimizer's parameters are sharded over (None: not sharded)."""
    return shard_group(optimizer_params(optimizer))


def aligned_local_grads(grads: List[torch.Tensor]) -> List[torch.Tensor]:
    """The local shards of ``grads``, in order, an empty shard (a process with no rows of a
    small parameter) replaced by a one-element zero: every process holds one tensor per
    gradient, so per-gradient norms line up in the all-reduce, and a zero adds nothing to a
    norm (a max over nothing would have no value)."""
    shards = [local_shard(g) for g in grads]
    return [s if s.numel() else s.new_zeros(1) for s in shards]


def max_over_shards_(flag: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    """``flag`` raised to its maximum over the processes of ``group`` (in place)."""
    dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=group)
    return flag


def norms_over_shards(local_norms: torch.Tensor, norm_type: float,
                      group: dist.ProcessGroup) -> torch.Tensor:
    """The p-norms of whole tensors from each process's p-norms of its shards of them (any
    shape: element-wise): a max for the max-norm, else the p-th root of the summed p-th powers."""
    if math.isinf(norm_type):
        reduced = local_norms.float().clone()
        dist.all_reduce(reduced, op=dist.ReduceOp.MAX, group=group)
        return reduced
    powers = local_norms.double().pow(norm_type)
    dist.all_reduce(powers, op=dist.ReduceOp.SUM, group=group)
    return powers.pow(1.0 / norm_type).float()


class ShardedGradScaler(torch.amp.GradScaler):
    """``torch.amp.GradScaler`` for sharded gradients: each process checks (and unscales) its
    own shards as plain tensors, then the found-inf flag is raised to its maximum over the
    shards' process group, so every process skips a step, and lowers its scale, alike. Both of
    the scaler's paths go through here: ``unscale_`` (the other optimizers) and the check of a
    fused optimizer, which gets the scale and the flag instead."""

    def __init__(self, device: str, group: dist.ProcessGroup) -> None:
        super().__init__(device)
        self.group = group

    def _unscale_grads_(self, optimizer: torch.optim.Optimizer, inv_scale: torch.Tensor,
                        found_inf: torch.Tensor, allow_fp16: bool):
        by_dtype = {}
        for group in optimizer.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = local_shard(param.grad)
                if not allow_fp16 and grad.dtype == torch.float16:
                    raise ValueError("Attempting to unscale FP16 gradients.")
                by_dtype.setdefault(grad.dtype, []).append(grad)
        with torch.no_grad():
            for grads in by_dtype.values():
                torch._amp_foreach_non_finite_check_and_unscale_(grads, found_inf, inv_scale)
            max_over_shards_(found_inf, self.group)
        return {found_inf.device: found_inf}
