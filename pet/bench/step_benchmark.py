"""Timing optimizer steps side by side: the measurement half of tools/benchmark_solver.py.

Every candidate steps the same parameter tensors with the same state buffers (moments,
momentum), in a rotating order, after the same gradients are restored, so drift of the
machine, cache effects and where in memory the tensors lie hit all of them alike; each figure
is a median over repeats after a warm-up. (With a state of its own, each optimizer's buffers
land elsewhere in memory, and identical steps then differ by up to 10% on these machines.)
"""
import os
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch
from torch import nn

from pet.lib.utils.param_groups import explain_params, grouping_spec

# Tensors an update reads and writes per parameter: AdamW/Adam read param, grad, exp_avg and
# exp_avg_sq and write back all but the grad; SGD reads param and grad and writes the param;
# RMSprop also reads and writes square_avg. Momentum adds a buffer read and written.
UPDATE_ACCESSES = {"ADAMW": 7, "ADAM": 7, "SGD": 3, "RMSPROP": 5}
MOMENTUM_ACCESSES = {"SGD": 2, "RMSPROP": 2}
# The least extra traffic each clip needs: "value" reads and writes every gradient once;
# "norm" reads them for the per-tensor norms, then scales them (read and write);
# "full_model" reads them once for the total norm (the scaling can ride in the step's kernel).
CLIP_ACCESSES = {None: 0, "value": 2, "norm": 3, "full_model": 1}


def step_bytes(num_elements: int, element_size: int, optimizer_type: str, momentum: float,
               clip_type: Optional[str]) -> int:
    """The least memory traffic (bytes) of one step with clipping: what a step has to move."""
    accesses = UPDATE_ACCESSES[optimizer_type] + CLIP_ACCESSES[clip_type]
    if momentum > 0:
        accesses += MOMENTUM_ACCESSES.get(optimizer_type, 0)
    return num_elements * element_size * accesses


@dataclass
class Candidate:
    """One row: its optimizer, the step to time (the optimizer's own by default) and its clip."""

    optimizer: torch.optim.Optimizer
    step: Optional[Callable[[], None]] = None
    clip_type: Optional[str] = None

    def __post_init__(self) -> None:
        if self.step is None:
            self.step = self.optimizer.step


def share_state(reference: torch.optim.Optimizer,
                optimizers: List[torch.optim.Optimizer]) -> None:
    """Point every optimizer's per-parameter buffers at ``reference``'s (each keeps its own
    step count, whose type depends on the kernel). Every optimizer must have stepped once."""
    for optimizer in optimizers:
        for param, state in optimizer.state.items():
            for key, buffer in reference.state[param].items():
                if key != "step" and key in state:
                    state[key] = buffer


@dataclass
class Timing:
    """The per-repeat times of one candidate, in seconds."""

    name: str
    seconds: List[float]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.seconds) * 1e3


def time_side_by_side(candidates: Dict[str, Callable[[], None]], prepare: Callable[[], None],
                      warmup: int, repeats: int) -> Dict[str, Timing]:
    """Time every candidate ``repeats`` times after ``warmup`` untimed calls each.

    ``prepare`` runs, untimed, before every call (here: restore the gradients, which clipping
    changes in place). Each round runs all candidates, starting one further along each time.
    """
    names = list(candidates)
    for _ in range(warmup):
        for name in names:
            prepare()
            candidates[name]()
    timings = {name: Timing(name, []) for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            prepare()
            start = time.perf_counter()
            candidates[name]()
            timings[name].seconds.append(time.perf_counter() - start)
    return timings


def copy_bandwidth(num_bytes: int, repeats: int, device: torch.device) -> float:
    """The machine's copy bandwidth in bytes/s: ``dst.copy_(src)`` of ``num_bytes`` on
    ``device``, counted as read + write (the STREAM convention: a cache's write-allocate reads
    of ``dst`` are not counted, which in-place updates such as an optimizer's do not pay),
    median of ``repeats`` after one warm-up."""
    src = torch.ones(num_bytes // 4, device=device)
    dst = torch.zeros_like(src)
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    timing = time_side_by_side({"copy": lambda: (dst.copy_(src), sync())}, sync, 1, repeats)
    return 2 * src.numel() * 4 / (timing["copy"].median_ms / 1e3)


def per_tensor_groups(model: nn.Module, optimizer_cfg) -> List[Dict]:
    """The layout of the older solvers: one param group per tensor, same lr and decay rules."""
    return [dict(params=[item.param], lr=item.lr, weight_decay=item.weight_decay)
            for item in explain_params(model, grouping_spec(optimizer_cfg))]


def fill_gradients(model: nn.Module, seed: int = 0) -> List[torch.Tensor]:
    """Give every parameter a standard-normal gradient; return copies to restore them from.

    With unit-variance elements every clip bound of order 1 bites, so the clipping paths
    (not their early exits) are what is timed.
    """
    gen = torch.Generator().manual_seed(seed)
    saved = []
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device)
        saved.append(p.grad.clone())
    return saved


def restore_gradients(model: nn.Module, saved: List[torch.Tensor]) -> None:
    """Copy the saved gradients back in place (clipping and fused kernels overwrite them)."""
    torch._foreach_copy_([p.grad for p in model.parameters()], saved)


def _busy_seconds() -> float:
    """CPU seconds all processes have spent busy since boot (Linux /proc/stat)."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:9]]  # guest time is inside user time
    idle = ticks[3] + ticks[4]  # idle and iowait; steal counts as busy: the host took it
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")


class BackgroundLoad:
    """How many cores other processes kept busy during a ``with`` block, on average.

    On a shared machine a benchmark can only be trusted when this stays near 0: with two
    cores, one busy neighbour stalls every two-thread kernel at its barrier. ``cores`` is None
    where /proc/stat does not exist.
    """

    def __init__(self) -> None:
        self.cores = None

    def __enter__(self) -> "BackgroundLoad":
        self._start = self._snapshot()
        return self

    def __exit__(self, *exc) -> None:
        end = self._snapshot()
        if self._start is not None and end is not None:
            busy, own, wall = (b - a for a, b in zip(self._start, end))
            self.cores = max(0.0, busy - own) / max(wall, 1e-9)

    @staticmethod
    def _snapshot():
        if not os.path.exists("/proc/stat"):
            return None
        times = os.times()
        # Children this process waited for (the 2-process benchmark's workers) are its own work.
        own = times.user + times.system + times.children_user + times.children_system
        return _busy_seconds(), own, time.perf_counter()
