"""The training loop's overhead: train_net's path (Optimizer, LearningRateScheduler, Trainer and
its hooks) against a bare PyTorch loop over the same model, data and iterations.

Both start from the same seed, model init and batches; the bare loop is what a user writes by
hand: forward, loss, zero_grad, backward, step, with torch's optimizer on one param group and no
scheduler, evaluation, checkpoints or metrics. Whatever the solver loop does beyond that
(grouping, kernel choice, the lr schedule, the loss check, evaluation, checkpoints, the metrics
file) counts as its overhead.

Each run reports its wall time and its CPU time. The default job runs on one thread
(NUM_THREADS=1), so on an idle machine the two agree; on a shared one, CPU time is the figure
that other processes do not inflate (it leaves out only waits, such as a checkpoint's fsync).
"""
import tempfile
import time
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List

import torch
import torch.nn.functional as F
from yacs.config import CfgNode

from pet.data import build_datasets, build_train_loader
from pet.engine import Trainer, build_train_hooks
from pet.lib.config.validate_job import validate_cfg
from pet.lib.utils.checkpointer import Checkpointer
from pet.lib.utils.logger import ProgressBar
from pet.lib.utils.lr_scheduler import LearningRateScheduler
from pet.lib.utils.lr_schedules import build_schedule
from pet.lib.utils.optimizer import OPTIMIZERS, Optimizer
from pet.lib.utils.seed import seed_everything
from pet.models import build_model


@contextmanager
def stopwatch() -> Iterator[Dict[str, float]]:
    """Fills the yielded dict with the block's "wall" and "cpu" (this process) seconds."""
    seconds = {}
    wall, cpu = time.perf_counter(), time.process_time()
    yield seconds
    seconds.update(wall=time.perf_counter() - wall, cpu=time.process_time() - cpu)


def job_iterations(cfg: CfgNode) -> int:
    """How many iterations ``cfg``'s job trains (raises ConfigError on a bad config)."""
    return build_schedule(cfg.SOLVER.SCHEDULER, validate_cfg(cfg)).max_iter


def solver_loop(cfg: CfgNode) -> Dict[str, float]:
    """Wall and CPU seconds of ``Trainer.train()`` on ``cfg``'s job, built as tools/train_net.py builds it
    (OUTPUT_DIR replaced by a temporary directory; no progress bar, as off a terminal)."""
    iter_per_epoch = validate_cfg(cfg)
    seed_everything(cfg.SEED, cfg.NUM_THREADS)
    train_split, test_split = build_datasets(cfg)
    model = build_model(cfg)
    with tempfile.TemporaryDirectory() as output_dir, open("/dev/null", "w") as null:
        cfg = cfg.clone()
        cfg.OUTPUT_DIR = output_dir
        checkpointer = Checkpointer(output_dir)
        optimizer = Optimizer(model, cfg.SOLVER.OPTIMIZER).build()
        scheduler = LearningRateScheduler(optimizer, cfg.SOLVER, iter_per_epoch=iter_per_epoch)
        loader = build_train_loader(cfg, train_split)
        hooks = build_train_hooks(cfg, model, optimizer, scheduler, checkpointer, test_split,
                                  loader, 0, ProgressBar(stream=null))
        with stopwatch() as seconds:
            Trainer(model, optimizer, loader, hooks, 0, scheduler.max_iter).train()
        return seconds


def bare_loop(cfg: CfgNode, **implementation) -> Dict[str, float]:
    """Wall and CPU seconds of a hand-written loop over the same iterations; ``implementation`` goes to
    torch's optimizer (nothing: torch's default kernel; ``fused=True``: the solver's kernel)."""
    max_iter = job_iterations(cfg)
    seed_everything(cfg.SEED, cfg.NUM_THREADS)
    train_split, _ = build_datasets(cfg)
    model = build_model(cfg)
    opt_cfg = cfg.SOLVER.OPTIMIZER
    info = OPTIMIZERS[opt_cfg.TYPE.upper()]
    optimizer = info.cls(model.parameters(), lr=opt_cfg.BASE_LR, weight_decay=opt_cfg.WEIGHT_DECAY,
                         **info.options(opt_cfg), **implementation)
    loader = build_train_loader(cfg, train_split)
    model.train()
    with stopwatch() as seconds:
        for iteration in range(max_iter):
            levels, labels = loader.batch(iteration)
            loss = F.cross_entropy(model(levels), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return seconds


def loop_candidates(cfg: CfgNode) -> Dict[str, Callable[[], Dict[str, float]]]:
    """name -> a run of the whole job returning its seconds; the first is the solver's."""
    candidates = {"solver + hooks (train_net)": lambda: solver_loop(cfg),
                  "bare loop, torch default": lambda: bare_loop(cfg)}
    if OPTIMIZERS[cfg.SOLVER.OPTIMIZER.TYPE.upper()].has_fused:
        candidates["bare loop, fused"] = lambda: bare_loop(cfg, fused=True)
    return candidates


def time_loops(cfg: CfgNode, repeats: int) -> Dict[str, Dict[str, List[float]]]:
    """{name: {"wall": seconds, "cpu": seconds}} of each candidate's whole run, ``repeats``
    times each, interleaved; torch's thread count (the job's NUM_THREADS sets it) is restored
    afterwards."""
    threads = torch.get_num_threads()
    candidates = loop_candidates(cfg)
    seconds = {name: {"wall": [], "cpu": []} for name in candidates}
    try:
        for _ in range(repeats):
            for name, run in candidates.items():
                for clock, value in run().items():
                    seconds[name][clock].append(value)
    finally:
        torch.set_num_threads(threads)
    return seconds
