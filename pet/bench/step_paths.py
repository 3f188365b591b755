"""The step paths of train_net (mixed precision, accumulation, several processes) against bare
hand-written loops doing the same job, in lock-step (see pet.bench.loop_benchmark).

Each case is the job of ``--cfg`` cut short, with the case's SOLVER keys, run through
``SolverLoop`` (train_net's path: Optimizer, LearningRateScheduler, the step seam, Trainer and
its hooks) and through a bare loop written from torch's documentation for that path:

- bfloat16: ``torch.autocast`` around the forward pass, then backward and step;
- float16: autocast, ``GradScaler.scale(loss).backward()``, ``scaler.unscale_``,
  ``clip_grad_norm_``, ``scaler.step`` and ``scaler.update`` (torch's AMP recipe);
- accumulation: k micro-batches, each loss divided by k, one step;
- 2 processes: DistributedDataParallel over gloo, each process its share of the batch as k
  micro-batches, ``no_sync`` on all but the last.

Every bare loop uses the optimizer kernel the solver picks (fused where torch has one), so what
differs is the loop. In the 2-process case both sides count their all-reduces: the gradient
buckets through a DDP comm hook (the same hook on both sides), and every other call of
``torch.distributed.all_reduce`` (the solver's: the losses averaged on logged iterations, the
stop flag agreed every few iterations).
"""
import contextlib
import json
import os
import socket
import statistics
import tempfile
from typing import Dict, List, Optional

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.nn.parallel import DistributedDataParallel
from yacs.config import CfgNode

from pet.data import build_train_loader
from pet.bench.loop_benchmark import SOLVER_LOOP, BareLoop, SolverLoop, run_in_lock_step
from pet.engine.distributed import ProcessInfo, destroy_process_group, init_process_group
from pet.engine.logger import close_logging
from pet.lib.config.loader import merge_from_list
from pet.lib.utils.optim_wrapper import AUTOCAST_DTYPES
from pet.lib.utils.optimizer import OPTIMIZERS

BARE_LOOP = "bare loop"
WORLD_SIZE = 2
# The limits on train_net's loop over the bare one.
MAX_OVERHEAD = 0.03
MAX_DISTRIBUTED_OVERHEAD = 0.05


class BareAutocastLoop(BareLoop):
    """(a) bfloat16: the forward pass under ``torch.autocast``, then backward and step."""

    def __init__(self, cfg: CfgNode, **implementation) -> None:
        super().__init__(cfg, **implementation)
        self.dtype = AUTOCAST_DTYPES[cfg.SOLVER.AMP.DTYPE]

    def train_step(self, iteration: int) -> None:
        levels, labels, _ = self.micro_batches(iteration)[0]
        with torch.autocast("cpu", dtype=self.dtype):
            loss = F.cross_entropy(self.model(levels), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


class BareScaledClippedLoop(BareAutocastLoop):
    """(b) float16 with loss scaling and clipping, as torch's AMP recipe writes it: unscale,
    ``clip_grad_norm_``, ``scaler.step``, ``scaler.update``."""

    def __init__(self, cfg: CfgNode, **implementation) -> None:
        super().__init__(cfg, **implementation)
        self.scaler = torch.amp.GradScaler("cpu")
        clip = cfg.SOLVER.OPTIMIZER.CLIP_GRADIENTS
        self.max_norm, self.norm_type = clip.CLIP_VALUE, clip.NORM_TYPE
        self.params = list(self.model.parameters())

    def train_step(self, iteration: int) -> None:
        levels, labels, _ = self.micro_batches(iteration)[0]
        with torch.autocast("cpu", dtype=self.dtype):
            loss = F.cross_entropy(self.model(levels), labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.params, self.max_norm, self.norm_type)
        self.scaler.step(self.optimizer)
        self.scaler.update()


class BareAccumulationLoop(BareLoop):
    """(c) and (d): this process's k micro-batches of the step's batch (the loader's shares, so
    both sides read the same images), each loss divided by k, one step. With ``process`` of
    several processes, the model is wrapped in DDP and ``no_sync`` skips the all-reduce on all
    but the last micro-batch."""

    def __init__(self, cfg: CfgNode, process: ProcessInfo = ProcessInfo(), **implementation) -> None:
        super().__init__(cfg, **implementation)
        self.k = cfg.SOLVER.ACCUMULATION_STEPS
        self.process = process
        self.net = DistributedDataParallel(self.model) if process.distributed else self.model
        self.loader = build_train_loader(cfg, self.loader.items.dataset, process.rank, process.world_size)

    def train_step(self, iteration: int) -> None:
        micro_batches = self.micro_batches(iteration)
        self.optimizer.zero_grad(set_to_none=True)
        for index, (levels, labels, _) in enumerate(micro_batches):
            last = index == self.k - 1
            with contextlib.nullcontext() if last or not self.process.distributed else self.net.no_sync():
                loss = F.cross_entropy(self.net(levels), labels) / self.k
                loss.backward()
        self.optimizer.step()


class AllReduceCounter:
    """Counts all-reduces while active: ``buckets``, the gradient buckets that went through
    ``hook`` (register it on each DDP model), and ``others``, every other call of
    ``torch.distributed.all_reduce``."""

    def __init__(self) -> None:
        self.buckets = 0
        self.others = 0
        self._in_hook = False
        self._all_reduce = dist.all_reduce

    def hook(self, state, bucket):
        """A DDP comm hook: torch's default all-reduce of the bucket, counted."""
        self.buckets += 1
        self._in_hook = True
        try:
            return default_hooks.allreduce_hook(None, bucket)
        finally:
            self._in_hook = False

    def _counted_all_reduce(self, *args, **kwargs):
        if not self._in_hook:
            self.others += 1
        return self._all_reduce(*args, **kwargs)

    def __enter__(self) -> "AllReduceCounter":
        dist.all_reduce = self._counted_all_reduce
        return self

    def __exit__(self, *exc) -> None:
        dist.all_reduce = self._all_reduce


class CountedLoop:
    """A loop whose ``step()`` tallies the all-reduces that ``counter`` saw during it."""

    def __init__(self, loop, counter: AllReduceCounter) -> None:
        self.loop, self.counter = loop, counter
        self.buckets = self.others = 0

    def step(self) -> None:
        buckets, others = self.counter.buckets, self.counter.others
        self.loop.step()
        self.buckets += self.counter.buckets - buckets
        self.others += self.counter.others - others


def matching_kernel(cfg: CfgNode) -> Dict:
    """The bare optimizer's keywords for the kernel the solver picks on the CPU: fused where
    torch has it."""
    return dict(fused=True) if OPTIMIZERS.get(cfg.SOLVER.OPTIMIZER.TYPE).fused else {}


def short_job(iterations: int) -> List[str]:
    """Overrides cutting the job to ``iterations``, with a warm-up, an lr step, an evaluation
    half-way and the final evaluation and checkpoint (a checkpoint more would weigh far more
    in a short job than in the job of --cfg, where they come hundreds of iterations apart)."""
    return ["SOLVER.SCHEDULER.TOTAL_EPOCHS", "None", "SOLVER.SCHEDULER.TOTAL_ITERS", str(iterations),
            "SOLVER.SCHEDULER.STEPS", f"({iterations * 3 // 4},)",
            "SOLVER.SCHEDULER.WARM_UP_EPOCHS", "None",
            "SOLVER.SCHEDULER.WARM_UP_ITERS", str(max(1, iterations // 10)),
            "SOLVER.SNAPSHOT_EPOCHS", "None", "SOLVER.SNAPSHOT_ITERS", str(iterations),
            "TEST.EVAL_EPOCHS", "None", "TEST.EVAL_ITERS", str(max(1, iterations // 2))]


# name -> (the case's SOLVER keys, its bare loop); (d) is the 2-process case below.
CASES = {
    "bfloat16 autocast": (["SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.DTYPE", "bfloat16"],
                          BareAutocastLoop),
    "float16 + GradScaler + full_model clip": (
        ["SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.DTYPE", "float16",
         "SOLVER.OPTIMIZER.CLIP_GRADIENTS.ENABLED", "True",
         "SOLVER.OPTIMIZER.CLIP_GRADIENTS.CLIP_TYPE", "full_model"], BareScaledClippedLoop),
    "k = 4 accumulation": (["SOLVER.ACCUMULATION_STEPS", "4"], BareAccumulationLoop),
}
DISTRIBUTED_CASE = f"{WORLD_SIZE} processes (gloo), k = 2"
DISTRIBUTED_KEYS = ["SOLVER.ACCUMULATION_STEPS", "2", "NUM_THREADS", "1"]
# Each case's job lasts about JOB_SECONDS of training, its iterations sized from the bare loop's
# step time on this machine (``calibrated_iterations``), so the job's fixed costs (the final
# checkpoint with its fsync, the best-checkpoint writes, the evaluations) weigh alike in every
# case and on every machine: with a fixed 120 iterations, a machine whose bfloat16 step takes
# 4 ms instead of 55 ran a 0.5 s job, in which those writes alone were +8% of the solver's
# time. Two processes on two cores swing a 200-iteration job by +-4%: that case keeps 600.
JOB_SECONDS = 7.0
MIN_ITERATIONS, MAX_ITERATIONS = 120, 4000
DISTRIBUTED_ITERATIONS = 600


def calibrated_iterations(cfg: CfgNode, keys: List[str], bare_cls, seconds: float = JOB_SECONDS) -> int:
    """Iterations of a case's job that take about ``seconds`` in its bare loop here (timed
    over 20 steps after 5 of warm-up)."""
    loop = bare_cls(case_cfg(cfg, keys, 100), **matching_kernel(cfg))
    for _ in range(5):
        loop.step()
    loop.seconds = 0.0
    for _ in range(20):
        loop.step()
    per_step = loop.seconds / 20
    return int(min(MAX_ITERATIONS, max(MIN_ITERATIONS, round(seconds / per_step, -1))))


def case_cfg(cfg: CfgNode, keys: List[str], iterations: int) -> CfgNode:
    """``cfg`` cut to ``iterations`` with a case's keys."""
    job = cfg.clone()
    merge_from_list(job, short_job(iterations) + keys)
    return job


def build_loops(cfg: CfgNode, bare_cls, output_dir: str, console,
                process: ProcessInfo = ProcessInfo()) -> Dict:
    """{SOLVER_LOOP: train_net's loop, BARE_LOOP: ``bare_cls``'s}, each built from ``cfg``."""
    solver = SolverLoop(cfg, output_dir, console, process)
    extra = dict(process=process) if process.distributed else {}
    return {SOLVER_LOOP: solver, BARE_LOOP: bare_cls(cfg, **extra, **matching_kernel(cfg))}


def time_case(cfg: CfgNode, bare_cls) -> Dict[str, float]:
    """Seconds of the job of ``cfg`` through train_net's loop and ``bare_cls``'s, in
    lock-step; torch's thread count is restored afterwards."""
    threads = torch.get_num_threads()
    loops = {}
    with tempfile.TemporaryDirectory() as output_dir, open(os.devnull, "w") as null:
        try:
            loops = build_loops(cfg, bare_cls, output_dir, null)
            run_in_lock_step(list(loops.values()), loops[SOLVER_LOOP].trainer.max_iter)
        finally:
            for loop in loops.values():
                loop.close()
            close_logging()
            torch.set_num_threads(threads)
    return {name: loop.seconds for name, loop in loops.items()}


def _distributed_worker(rank: int, cfg: CfgNode, port: int, repeats: int, result_path: str) -> None:
    """One process of the 2-process case: ``repeats`` jobs, each through both loops in
    lock-step, their all-reduces counted; rank 0 writes the figures to ``result_path``."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    process = ProcessInfo(rank=rank, world_size=WORLD_SIZE, local_rank=rank)
    init_process_group(process, torch.device("cpu"), timeout_s=120)
    runs = []
    try:
        for _ in range(repeats):
            with tempfile.TemporaryDirectory() as output_dir, open(os.devnull, "w") as null, \
                    AllReduceCounter() as counter:
                loops = {}
                try:
                    loops = build_loops(cfg, BareAccumulationLoop, output_dir, null, process)
                    loops[SOLVER_LOOP].trainer.model.register_comm_hook(None, counter.hook)
                    loops[BARE_LOOP].net.register_comm_hook(None, counter.hook)
                    counted = {name: CountedLoop(loop, counter) for name, loop in loops.items()}
                    steps = loops[SOLVER_LOOP].trainer.max_iter
                    run_in_lock_step(list(counted.values()), steps)
                finally:
                    for loop in loops.values():
                        loop.close()
                    close_logging()
            runs.append({name: dict(seconds=c.loop.seconds, gradient_all_reduces=c.buckets / steps,
                                    other_all_reduces=c.others / steps)
                         for name, c in counted.items()})
    finally:
        destroy_process_group()
    if rank == 0:
        with open(result_path, "w") as f:
            json.dump(runs, f)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_distributed_case(cfg: CfgNode, repeats: int) -> List[Dict]:
    """``repeats`` runs of the 2-process case (processes spawned here), as rank 0 saw them:
    [{loop name: {"seconds", "gradient_all_reduces" and "other_all_reduces" per step}}]."""
    with tempfile.TemporaryDirectory() as tmp:
        result_path = os.path.join(tmp, "runs.json")
        mp.spawn(_distributed_worker, args=(cfg, free_port(), repeats, result_path),
                 nprocs=WORLD_SIZE)
        with open(result_path) as f:
            return json.load(f)


def _summary(runs: List[Dict], iterations: int, limit: float) -> Dict:
    medians = {name: statistics.median(run[name] for run in runs) for name in runs[0]}
    overhead = medians[SOLVER_LOOP] / medians[BARE_LOOP] - 1.0
    return dict(iterations=iterations, repeats=len(runs), runs=runs, median_s=medians,
                ms_per_iteration={name: s / iterations * 1e3 for name, s in medians.items()},
                overhead=overhead, limit=limit)


def step_paths_section(cfg: CfgNode, repeats: int, iterations: Optional[int] = None,
                       distributed_iterations: Optional[int] = None) -> Dict:
    """Every case: {case name: {"median_s", "ms_per_iteration" per loop, "overhead" of
    train_net's loop over the bare one, "limit", "runs", ...; the 2-process case also
    "all_reduces_per_step" per loop}}, each over ``repeats`` jobs of about JOB_SECONDS (or of
    ``iterations``, and ``distributed_iterations`` for 2 processes: a smoke test)."""
    section = {}
    for name, (keys, bare_cls) in CASES.items():
        length = iterations or calibrated_iterations(cfg, keys, bare_cls)
        job = case_cfg(cfg, keys, length)
        section[name] = _summary([time_case(job, bare_cls) for _ in range(repeats)],
                                 length, MAX_OVERHEAD)
        section[name]["keys"] = keys
    length = distributed_iterations or DISTRIBUTED_ITERATIONS
    job = case_cfg(cfg, DISTRIBUTED_KEYS, length)
    runs = time_distributed_case(job, repeats)
    summary = _summary([{n: r["seconds"] for n, r in run.items()} for run in runs],
                       length, MAX_DISTRIBUTED_OVERHEAD)
    summary["runs"] = runs
    summary["keys"] = DISTRIBUTED_KEYS
    summary["all_reduces_per_step"] = {
        name: dict(gradient=runs[0][name]["gradient_all_reduces"],
                   other=runs[0][name]["other_all_reduces"]) for name in runs[0]}
    section[DISTRIBUTED_CASE] = summary
    return section


def step_path_targets(section: Optional[Dict]) -> List[Dict]:
    """The issue's targets for the step paths, in the form of ``report.targets``."""
    return [dict(model="step paths", what=f"{name}: train_net loop overhead over {BARE_LOOP}",
                 value=case["overhead"], limit=f"<= {case['limit']}",
                 met=case["overhead"] <= case["limit"])
            for name, case in (section or {}).items() if name != "background_cores"]


def format_step_paths(section: Dict) -> List[str]:
    """The text lines of the step-paths section."""
    lines = ["", "step paths, train_net's loop against a bare hand-written loop of the same job "
                 "(lock-step, median of jobs):"]
    for name, case in section.items():
        if name == "background_cores":
            continue
        ms = case["ms_per_iteration"]
        lines.append(f"  {name:40} {case['iterations']:4d} it  solver {ms[SOLVER_LOOP]:7.2f} ms/it  "
                     f"bare {ms[BARE_LOOP]:7.2f} ms/it  ratio {1 + case['overhead']:.3f}  "
                     f"({case['overhead']:+.1%}, limit {case['limit']:.0%})")
        for loop, counts in case.get("all_reduces_per_step", {}).items():
            lines.append(f"    all-reduces per optimizer step, {loop}: {counts['gradient']:g} "
                         f"gradient bucket(s), {counts['other']:g} other (losses averaged on logged iterations, the stop flag)")
    return lines
