"""The device of a run, from MODEL.DEVICE and the process's place in a torchrun job, and how
exactly it computes (DETERMINISTIC, TF32)."""
import os

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


def configure_numerics(deterministic: bool, tf32: bool, device: torch.device) -> None:
    """Set torch's global numerics for a run on ``device`` (call before the first CUDA op).

    ``tf32``: TensorFloat-32 for float32 matmuls and cuDNN convolutions, else full float32
    (torch's own default lets cuDNN convolutions use TF32). ``deterministic`` on CUDA:
    cuDNN's deterministic algorithms without benchmark autotuning, deterministic torch ops
    (a warning where one has none) and the cuBLAS workspace that makes cuBLAS deterministic;
    False lets cuDNN autotune. The CPU is left as it is: it is deterministic at a fixed thread
    count, and torch's deterministic mode would only slow some of its ops.
    """
    precision = "tf32" if tf32 else "ieee"
    torch.backends.cuda.matmul.fp32_precision = precision
    torch.backends.cudnn.conv.fp32_precision = precision
    if device.type != "cuda":
        return
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    if deterministic:
        # cuBLAS picks its reduction order from a workspace: a fixed one is deterministic
        # (read when cuBLAS starts, so before the first matmul).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
