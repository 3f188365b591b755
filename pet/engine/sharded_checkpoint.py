"""Sharded checkpoints (SOLVER.DISTRIBUTED.STRATEGY fsdp): a directory ``<name>.dcp`` written
by every process at once with torch.distributed.checkpoint (DCP).

Layout: DCP's files (each process's shards and the ``.metadata`` index) hold the tensors of
the model (``model.<name>``; the EMA's: ``ema.<name>``) and of the optimizer's state (``optimizer.state.<param index>.
<key>``); ``state.pth`` (written by rank 0) holds everything else of a checkpoint as the
one-file format does: ``iteration``, ``rng``, the config, the scheduler, the step seam, the
metrics, the optimizer's param groups. The directory is written as ``.<name>.dcp.tmp`` and
renamed once complete, so a crash at any moment leaves no directory ``--resume`` could pick.

Read back, a sharded checkpoint looks like a one-file one whose model and optimizer tensors
are placeholders on the meta device (their names, shapes and dtypes, from DCP's index): the
layout checks run unchanged, then ``load_tensors`` fills them for the run's own layout, a
sharded model (DTensors) or a whole one, on any number of processes. A one-file checkpoint
loaded into a sharded model is cut into this process's shards (``shard_like``).
"""
import os
import shutil
import warnings
from typing import Any, Dict, Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn

from pet.engine.checkpoint_io import TMP_SUFFIX, fsync_dir
from pet.lib.utils.shards import imported_class, is_sharded, optimizer_params
SHARDED_SUFFIX = ".dcp"
STATE_FILE = "state.pth"
METADATA_FILE = ".metadata"


def is_sharded_checkpoint(path: str) -> bool:
    """Whether ``path`` names a sharded checkpoint (by its name: ``<name>.dcp``)."""
    return path.rstrip(os.sep).endswith(SHARDED_SUFFIX)


def tmp_dir(path: str) -> str:
    """Where the directory ``path`` is written before it is renamed into place."""
    directory, name = os.path.split(path)
    return os.path.join(directory, f".{name}{TMP_SUFFIX}")


def weights_module(checkpointable: Any) -> Optional[nn.Module]:
    """The module whose weights a checkpointable's state dict is: the model itself, or the
    EMA's copy of it (``module``); None for any other checkpointable."""
    module = checkpointable if isinstance(checkpointable, nn.Module) else getattr(checkpointable, "module", None)
    return module if isinstance(module, nn.Module) else None


def holds_weights(checkpointable: Any) -> bool:
    """Whether a checkpointable's state dict is a model's (its tensors by name): such entries
    go to DCP whole."""
    return weights_module(checkpointable) is not None


def split_state(state: Dict[str, Any], checkpointables: Dict[str, Any]) -> Tuple[Dict[str, torch.Tensor], Dict[str, Any]]:
    """(DCP's flat tensors, the rest) of a checkpoint's ``state``: the model's tensors and the
    optimizers' per-parameter tensors go to DCP, each process writing its own shards."""
    tensors: Dict[str, torch.Tensor] = {}
    rest: Dict[str, Any] = {}
    for name, value in state.items():
        kind = checkpointables.get(name)
        if holds_weights(kind):
            tensors.update({f"{name}.{key}": tensor for key, tensor in value.items()})
            rest[name] = {}
        elif isinstance(kind, torch.optim.Optimizer):
            per_param = {}
            for index, param_state in value["state"].items():
                per_param[index] = {}
                for key, item in param_state.items():
                    if isinstance(item, torch.Tensor):
                        tensors[f"{name}.state.{index}.{key}"] = item
                    else:
                        per_param[index][key] = item
            rest[name] = {"state": per_param, "param_groups": value["param_groups"]}
        else:
            rest[name] = value
    return tensors, rest


def read_metadata(path: str):
    """DCP's index of ``path``: {tensor name: its metadata (size, dtype)}."""
    import torch.distributed.checkpoint as dcp  # here: see pet.lib.utils.shards

    return dcp.FileSystemReader(path).read_metadata().state_dict_metadata


def read_sharded_checkpoint(path: str, metadata: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """A sharded checkpoint as a one-file checkpoint dict whose model and optimizer tensors are
    meta-device placeholders (``sharded`` names the directory); ``metadata``: DCP's index when
    the caller read it already. Raises ValueError/OSError when a part is missing or unreadable
    (the caller words it)."""
    if not os.path.isfile(os.path.join(path, METADATA_FILE)):
        raise ValueError(f"no {METADATA_FILE} (not a complete sharded checkpoint)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        checkpoint = torch.load(os.path.join(path, STATE_FILE), map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{STATE_FILE} is not a Pet checkpoint")
    for key, meta in (read_metadata(path) if metadata is None else metadata).items():
        if hasattr(meta, "size"):  # a tensor
            _place(checkpoint, key, torch.empty(tuple(meta.size), dtype=meta.properties.dtype, device="meta"))
    checkpoint["sharded"] = path
    return checkpoint


def _place(checkpoint: Dict[str, Any], key: str, tensor: torch.Tensor) -> None:
    """Put the tensor DCP knows as ``key`` where a one-file checkpoint holds it (split_state's
    inverse): ``model.<name>`` in the model's entry, ``optimizer.state.<i>.<key>`` in the
    optimizer's per-parameter state."""
    name, _, rest = key.partition(".")
    entry = checkpoint.setdefault(name, {})
    if rest.startswith("state.") and "param_groups" in entry:
        _, index, state_key = rest.split(".", 2)
        entry["state"].setdefault(int(index), {})[state_key] = tensor
    else:
        entry[rest] = tensor


def _target_like(param: torch.Tensor, size: Tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An empty tensor to load a saved tensor of ``size`` and ``dtype`` into: sharded like
    ``param`` when it has the parameter's shape (a moment), else whole (a step count)."""
    if is_sharded(param) and tuple(param.shape) == tuple(size):
        from torch.distributed.tensor import DTensor

        local = torch.empty_like(param._local_tensor, dtype=dtype)
        return DTensor.from_local(local, param.device_mesh, param.placements, run_check=False,
                                  shape=param.shape, stride=param.stride())
    return torch.empty(size, dtype=dtype)


def load_tensors(saved: Dict[str, Any], checkpointables: Dict[str, Any], path: str) -> None:
    """Fill the placeholders of ``saved`` (read_sharded_checkpoint's entries to load) with the
    tensors of ``path``, each in this run's layout: the model's own tensors are loaded in place
    (this process's shards of a sharded model, whole tensors otherwise), the optimizer's state
    into tensors shaped like its parameters. Every process of the job calls it."""
    targets: Dict[str, torch.Tensor] = {}
    for name, entry in saved.items():
        kind = checkpointables.get(name)
        if holds_weights(kind):
            current = kind.state_dict()
            for key in entry:
                targets[f"{name}.{key}"] = entry[key] = current[key]
        elif isinstance(kind, torch.optim.Optimizer):
            params = optimizer_params(kind)
            for index, param_state in entry["state"].items():
                for key, item in param_state.items():
                    if isinstance(item, torch.Tensor):
                        param_state[key] = targets[f"{name}.state.{index}.{key}"] = _target_like(
                            params[index], item.shape, item.dtype)
    import torch.distributed.checkpoint as dcp

    distributed = dist.is_available() and dist.is_initialized()
    with warnings.catch_warnings():  # one process reading a sharded checkpoint: DCP warns
        warnings.simplefilter("ignore", UserWarning)
        dcp.load(targets, storage_reader=dcp.FileSystemReader(path), no_dist=not distributed)


def read_whole(path: str) -> Dict[str, Any]:
    """The sharded checkpoint ``path`` as a one-file checkpoint: every tensor whole on the CPU,
    read in this process alone (no process group). tools/convert_checkpoint.py writes its
    model weights as plain weights."""
    metadata = read_metadata(path)
    checkpoint = read_sharded_checkpoint(path, metadata)
    targets: Dict[str, torch.Tensor] = {}
    for key, meta in metadata.items():
        if hasattr(meta, "size"):
            targets[key] = torch.empty(tuple(meta.size), dtype=meta.properties.dtype)
    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():  # DCP warns that it reads in one process: the intent here
        warnings.simplefilter("ignore", UserWarning)
        dcp.load(targets, storage_reader=dcp.FileSystemReader(path), no_dist=True)
    for key, tensor in targets.items():
        _place(checkpoint, key, tensor)
    del checkpoint["sharded"]
    return checkpoint


def shard_like(saved: Dict[str, Any], checkpointables: Dict[str, Any]) -> None:
    """Cut the whole tensors of a one-file checkpoint's entries into this process's shards
    wherever the run's model is sharded (in place; a no-op for a whole model)."""
    for name, entry in saved.items():
        kind = checkpointables.get(name)
        if holds_weights(kind):
            current = kind.state_dict()
            for key, tensor in entry.items():
                if is_sharded(current.get(key)) and isinstance(tensor, torch.Tensor):
                    entry[key] = _shard(tensor, current[key])
        elif isinstance(kind, torch.optim.Optimizer):
            params = optimizer_params(kind)
            for index, param_state in entry["state"].items():
                param = params[int(index)] if int(index) < len(params) else None
                for key, item in param_state.items():
                    if (is_sharded(param) and isinstance(item, torch.Tensor)
                            and tuple(item.shape) == tuple(param.shape)):
                        param_state[key] = _shard(item, param)


def _shard(tensor: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """This process's shard of the whole ``tensor``, placed as the DTensor ``like`` (every
    process holds the whole tensor, so nothing is communicated)."""
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(tensor.to(like.device), like.device_mesh, like.placements, src_data_rank=None)


def reshard(model: nn.Module) -> None:
    """Free every gathered parameter of a sharded model (FSDP2 keeps a module's whole
    parameters after a forward without backward when it does not reshard after forward)."""
    fsdp_module = imported_class("torch.distributed.fsdp", "FSDPModule")
    if fsdp_module is None:
        return
    for module in model.modules():
        if isinstance(module, fsdp_module):
            module.reshard()


def share_rank_0_buffers(checkpointables: Dict[str, Any]) -> None:
    """Set every process's buffers (BatchNorm's running statistics) of a sharded model and of
    the EMA's copy to rank 0's. FSDP2 neither shards nor syncs buffers: each forward updates
    them from its own process's batch, and DCP saves one process's copy of a replicated tensor,
    not necessarily rank 0's, so a resumed run evaluated (on rank 0) with another process's
    statistics. Rank 0's are those a ddp run keeps and evaluates with. Every process calls it."""
    for checkpointable in checkpointables.values():
        module = weights_module(checkpointable)
        for buffer in module.buffers() if module is not None else ():
            dist.broadcast(buffer, src=0)


def full_state_dict(checkpointable: Any) -> Dict[str, torch.Tensor]:
    """The whole weights of a sharded model (or of the EMA's sharded copy) on rank 0's CPU, as
    plain tensors, gathered one at a time (torch's ``get_model_state_dict`` with CPU offload:
    the other processes get nothing and never hold a whole copy). Every process calls it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    module = weights_module(checkpointable)
    reshard(module)
    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def remove_tree(path: str) -> None:
    """Delete a checkpoint: a file, or a sharded checkpoint's directory (``*.dcp``, or its
    temporary form); any other directory is not ours to delete (OSError)."""
    if os.path.isdir(path) and not os.path.islink(path) and SHARDED_SUFFIX in os.path.basename(path):
        shutil.rmtree(path)
    else:
        os.remove(path)


def publish(tmp: str, path: str) -> None:
    """Rename the complete directory ``tmp`` to ``path`` (replacing an older ``path``, e.g. a
    rewritten model_final.dcp) and make the rename durable."""
    if os.path.lexists(path):
        old = f"{tmp}.old"
        if os.path.lexists(old):
            remove_tree(old)
        os.replace(path, old)
        os.replace(tmp, path)
        remove_tree(old)
    else:
        os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))
