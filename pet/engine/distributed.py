"""Processes of a ``torchrun`` job: who this process is, the process group, and the few
collectives the loop needs. A plain ``python`` run is a job of one process, with no group."""
import datetime
import os
import re
from dataclasses import dataclass
from typing import Any, List

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class ProcessInfo:
    """This process's place in the job (torchrun's RANK, WORLD_SIZE and LOCAL_RANK)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    # Processes of the job on this machine (torchrun's LOCAL_WORLD_SIZE): they share its CPUs.
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run's files and prints (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def process_info() -> ProcessInfo:
    """Read torchrun's environment (a plain run: rank 0 of 1)."""
    return ProcessInfo(rank=int(os.environ.get("RANK", 0)),
                       world_size=int(os.environ.get("WORLD_SIZE", 1)),
                       local_rank=int(os.environ.get("LOCAL_RANK", 0)),
                       local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", 1)))


def init_process_group(info: ProcessInfo, device: torch.device, timeout_s: float = 600) -> None:
    """Join the job's process group: nccl on CUDA, gloo on the CPU (nothing for one process)."""
    if not info.distributed or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    options = {}
    if device.type == "cuda":
        # NCCL's object collectives (the RNG gather of every checkpoint) use the current device.
        torch.cuda.set_device(device)
        options["device_id"] = device
    dist.init_process_group(backend, rank=info.rank, world_size=info.world_size,
                            timeout=datetime.timedelta(seconds=timeout_s), **options)


def barrier() -> None:
    """Wait for every process of the group (a no-op without one)."""
    if dist.is_initialized():
        dist.barrier()


def destroy_process_group() -> None:
    """Leave the process group (a no-op without one)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def all_gather_objects(obj: Any) -> List[Any]:
    """Every process's ``obj``, in rank order (``[obj]`` without a process group)."""
    if not dist.is_initialized():
        return [obj]
    gathered: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def mean_over_processes(values: List[float], device: torch.device) -> List[float]:
    """The element-wise mean of ``values`` over every process: one all-reduce of one tensor on
    ``device`` (nccl reduces CUDA tensors only); ``values`` itself without a process group."""
    if not dist.is_initialized() or not values:
        return list(values)
    summed = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(summed)
    return (summed / dist.get_world_size()).tolist()


# What gloo and NCCL say when another process of the job went away mid-collective.
_PEER_LOSS = re.compile(r"connection (reset|closed) by peer|broken pipe|socket timeout|remote worker|"
                        r"communicator was aborted|connection refused", re.IGNORECASE)


def lost_a_peer(error: BaseException) -> bool:
    """Whether ``error`` is a collective that failed because another process of the job ended
    (its own line says why): such a process stops quietly rather than with a traceback."""
    return dist.is_available() and dist.is_initialized() and bool(_PEER_LOSS.search(str(error)))
