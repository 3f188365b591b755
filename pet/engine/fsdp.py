"""SOLVER.DISTRIBUTED.STRATEGY fsdp: the model sharded over the processes with FSDP2.

Each block (SOLVER.DISTRIBUTED.FSDP_BLOCKS, or the model's ``fsdp_blocks()``) and then the root
are wrapped with ``fully_shard``, innermost first: every parameter becomes a DTensor holding
this process's rows of it, gathered for the block's forward and backward and freed after. The
names and (global) shapes of the parameters stay the model's, so the optimizer built after
sharding groups them as it would the whole model. SOLVER.AMP becomes the MixedPrecisionPolicy:
parameters in the AMP dtype for compute, gradients reduced in float32, outputs in float32.
"""
import fnmatch
from typing import List

import torch
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from yacs.config import CfgNode

from pet.lib.config.errors import ConfigError
from pet.lib.utils.optim_wrapper import AUTOCAST_DTYPES
from pet.lib.utils.optimizer import check_on_shards, optimizer_spec
from pet.models import build_model


def fsdp_blocks(model: nn.Module, patterns: List[str], model_type: str) -> List[nn.Module]:
    """The submodules of ``model`` sharded as blocks, in ``named_modules`` order: those whose
    names match one of ``patterns`` (fnmatch), else those of the model's ``fsdp_blocks()``.
    ConfigError when a pattern matches nothing, or the model names no blocks."""
    key = "SOLVER.DISTRIBUTED.FSDP_BLOCKS"
    if patterns:
        names = [name for name, _ in model.named_modules() if name]
        chosen = set()
        for pattern in patterns:
            matched = fnmatch.filter(names, pattern)
            if not matched:
                shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
                raise ConfigError(f"{key}: {pattern!r} matches no submodule of MODEL.TYPE {model_type} "
                                  f"(its modules: {shown})")
            chosen.update(matched)
        return [module for name, module in model.named_modules() if name in chosen]
    method = getattr(model, "fsdp_blocks", None)
    blocks = list(method()) if callable(method) else []
    if not blocks:
        raise ConfigError(f"SOLVER.DISTRIBUTED.STRATEGY: fsdp shards a model block by block, and MODEL.TYPE "
                          f"{model_type} names no blocks; set {key} to patterns of its module names "
                          f"(e.g. ['layers.*']) or give the model an fsdp_blocks() method")
    return blocks


def meta_model(cfg: CfgNode) -> nn.Module:
    """The run's model built on the meta device: its structure, no memory, no random draws."""
    with torch.device("meta"):
        return build_model(cfg)


def check_fsdp_job(cfg: CfgNode) -> None:
    """ConfigError when fsdp cannot run ``cfg``'s model or optimizer (no blocks, a pattern
    that matches nothing, an optimizer that cannot step shards): checked before the processes
    meet, on a model built on the meta device (no memory), so every process stops alike."""
    fsdp_blocks(meta_model(cfg), list(cfg.SOLVER.DISTRIBUTED.FSDP_BLOCKS), cfg.MODEL.TYPE)
    check_on_shards(optimizer_spec(cfg.SOLVER.OPTIMIZER))


def mixed_precision(solver: CfgNode, root: bool):
    """SOLVER.AMP as FSDP2's MixedPrecisionPolicy (float32 throughout without AMP); the
    ``root``'s outputs (the logits the loss reads) in float32, a block's in the AMP dtype for
    the next block."""
    from torch.distributed.fsdp import MixedPrecisionPolicy  # here: see pet.lib.utils.shards

    if not solver.AMP.ENABLED:
        return MixedPrecisionPolicy()
    return MixedPrecisionPolicy(param_dtype=AUTOCAST_DTYPES[solver.AMP.DTYPE], reduce_dtype=torch.float32,
                                output_dtype=torch.float32 if root else None)


def sharded_copy(cfg: CfgNode, device: torch.device, world_size: int) -> nn.Module:
    """Another instance of the run's model, sharded as ``shard_model`` shards it, its storage
    allocated on ``device`` but not initialized (built on the meta device: no random draws, no
    whole copy in memory): the holder of values loaded from the model (the EMA)."""
    model = meta_model(cfg)
    shard_model(model, cfg, device, world_size)
    return model.to_empty(device=device)


def shard_model(model: nn.Module, cfg: CfgNode, device: torch.device, world_size: int) -> nn.Module:
    """``model`` with its blocks and root wrapped by ``fully_shard`` over ``world_size``
    processes on ``device`` (in place; returned for convenience). Build the optimizer after."""
    from torch.distributed.fsdp import fully_shard  # here: see pet.lib.utils.shards

    blocks = fsdp_blocks(model, list(cfg.SOLVER.DISTRIBUTED.FSDP_BLOCKS), cfg.MODEL.TYPE)
    mesh = init_device_mesh(device.type, (world_size,))
    for block in reversed(blocks):  # inner blocks before the blocks that hold them
        fully_shard(block, mesh=mesh, mp_policy=mixed_precision(cfg.SOLVER, root=False))
    # The root's own parameters are used again right away by the backward: kept gathered.
    fully_shard(model, mesh=mesh, mp_policy=mixed_precision(cfg.SOLVER, root=True),
                reshard_after_forward=False)
    return model
