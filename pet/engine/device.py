"""The device of a run, from MODEL.DEVICE and the process's place in a torchrun job."""
import torch

from pet.engine.distributed import ProcessInfo
from pet.lib.config.errors import ConfigError


def resolve_device(name: str, info: ProcessInfo = ProcessInfo()) -> torch.device:
    """The ``torch.device`` of MODEL.DEVICE ("auto", "cpu", "cuda", "cuda:N"): "auto" is CUDA
    when available; "auto" and "cuda" take the GPU of the process's LOCAL_RANK.

    Raises ConfigError (exit 2 in the tools) for a device this machine does not have.
    """
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ConfigError(f"MODEL.DEVICE: {name!r} needs CUDA, which this machine does not have "
                          f"(torch {torch.__version__}); allowed here: auto, cpu")
    index = int(name.split(":")[1]) if ":" in name else info.local_rank
    if index >= count:
        raise ConfigError(f"MODEL.DEVICE: {name!r} needs GPU {index}, this machine has {count} "
                          f"(cuda:0 .. cuda:{count - 1})")
    return torch.device("cuda", index)
