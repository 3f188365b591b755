"""torch.compile for the trained model (MODEL.COMPILE): the checks before training, and the
compiled module the training steps call.

The compiled module wraps the model (inside DistributedDataParallel under torchrun, as torch
recommends, so its graphs split at the gradient buckets) and shares its parameters; checkpoints,
evaluation and the EMA use the model itself, so nothing saved carries torch.compile's
``_orig_mod.`` prefixes and a run resumes compiled or eager alike. Under fsdp each block is
compiled in place instead (``compile_blocks``).
"""
import copy
import logging
from typing import Any, List

import torch
from torch import nn
from torch.utils.data import Dataset, default_collate
from yacs.config import CfgNode

from pet.data import call_model, to_device
from pet.lib.config.errors import ConfigError, first_line

logger = logging.getLogger(__name__)


def check_compiler(device: torch.device) -> None:
    """ConfigError naming what is missing when torch.compile cannot generate code for
    ``device``: a C++ compiler on the CPU (inductor's, from CXX or g++), triton on CUDA."""
    if device.type == "cuda":
        from torch.utils._triton import has_triton

        if not has_triton():
            raise ConfigError("MODEL.COMPILE.ENABLED: torch.compile on CUDA needs triton, which is not "
                              "installed; install it (pip install triton) or set MODEL.COMPILE.ENABLED False")
        return
    from torch._inductor import config as inductor_config, cpp_builder

    try:
        cpp_builder.get_cpp_compiler()
    except Exception:  # noqa: BLE001  (inductor's InvalidCxxCompiler, or whatever the search raised)
        searched = [c for c in inductor_config.cpp.cxx if c] if isinstance(inductor_config.cpp.cxx, (list, tuple)) \
            else [inductor_config.cpp.cxx]
        raise ConfigError(f"MODEL.COMPILE.ENABLED: torch.compile on the CPU needs a C++ compiler and "
                          f"{', '.join(searched)} does not run; install one (e.g. g++) or point CXX at it, "
                          f"or set MODEL.COMPILE.ENABLED False") from None
    # A compiler that runs may still fail to build inductor's code (no Python.h, a broken
    # toolchain): a function of one line is built now rather than the model after the start.
    try:
        torch.compile(_probe)(torch.ones(2))
    except Exception as e:  # noqa: BLE001  (any failure to build code is one line)
        raise ConfigError(f"MODEL.COMPILE.ENABLED: torch.compile cannot build code on this machine "
                          f"({_error_line(e)}); set MODEL.COMPILE.ENABLED False") from None
    finally:
        torch._dynamo.reset()


def _probe(x: torch.Tensor) -> torch.Tensor:
    return x * 2 + 1


def _error_line(error: Exception) -> str:
    """The compiler's own error line when the message holds one (e.g. "fatal error: Python.h:
    No such file or directory"), else the message's first line."""
    for line in str(error).splitlines():
        if "error:" in line:
            return line.strip()
    return f"{type(error).__name__}: {first_line(error)}"


def sample_inputs(train: Dataset, device: torch.device) -> Any:
    """The inputs of a batch of the first two training items, on ``device`` (read under a
    forked random state: the run's own is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        inputs, _ = default_collate([train[0], train[min(1, len(train) - 1)]])
    return to_device(inputs, device)


def check_graph(model: nn.Module, inputs: Any, compile_cfg: CfgNode, model_type: str) -> None:
    """Trace ``model`` (a copy: its BatchNorm statistics stay) on ``inputs`` with dynamo: with
    MODEL.COMPILE.FULLGRAPH a graph break is a ConfigError naming where; without, the breaks are
    logged once."""
    traced = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):
        explained = torch._dynamo.explain(lambda x: call_model(traced, x))(inputs)
    torch._dynamo.reset()  # the trace's cache entries belong to the copy
    if not explained.graph_break_count:
        return
    reasons = [_where(reason) for reason in explained.break_reasons]
    if compile_cfg.FULLGRAPH:
        raise ConfigError(f"MODEL.COMPILE.FULLGRAPH: MODEL.TYPE {model_type} cannot be traced as one graph "
                          f"({explained.graph_break_count} graph break(s); first: {reasons[0]}); set "
                          f"MODEL.COMPILE.FULLGRAPH False to compile it in {explained.graph_count} graphs")
    logger.warning("torch.compile: MODEL.TYPE %s compiles in %d graphs; graph break(s): %s", model_type,
                   explained.graph_count, "; ".join(reasons))


def _where(reason) -> str:
    """A graph break's reason and the user code it happened in."""
    stack = getattr(reason, "user_stack", None) or []
    where = f" at {stack[-1].filename}:{stack[-1].lineno}" if stack else ""
    return f"{first_line(reason.reason)}{where}"


def compile_model(model: nn.Module, compile_cfg: CfgNode) -> nn.Module:
    """``torch.compile(model)`` with MODEL.COMPILE's mode, fullgraph and dynamic."""
    return torch.compile(model, mode=compile_cfg.MODE, fullgraph=compile_cfg.FULLGRAPH,
                         dynamic=compile_cfg.DYNAMIC)


def compile_blocks(blocks: List[nn.Module], compile_cfg: CfgNode) -> None:
    """Each of ``blocks`` compiled in place (``Module.compile``) with MODEL.COMPILE's mode,
    fullgraph and dynamic: FSDP2's blocks, after ``fully_shard`` (torchtitan's per-block
    compile), so each block's gathers and reduce-scatters stay FSDP2's hooks around its graph.
    Blocks of one class share their graphs (dynamo takes their parameters as inputs)."""
    for block in blocks:
        block.compile(mode=compile_cfg.MODE, fullgraph=compile_cfg.FULLGRAPH, dynamic=compile_cfg.DYNAMIC)
