"""The training loop's overhead: train_net's path (Optimizer, LearningRateScheduler, OptimWrapper,
Trainer and its hooks) against bare PyTorch loops doing the same job on the same model and data.

A bare loop is what a user writes by hand in plain PyTorch for the same job: forward, loss,
zero_grad, backward, step, with torch's optimizer on one param group, torch's ``LambdaLR``
giving the job's lr every iteration, and the job's evaluations (the same ``evaluate`` at the
same iterations: their result is the job's output). It has no param groups, checkpoints,
metrics file, log, timer or loss check: whatever the solver loop does beyond it (grouping, its
scheduler, the hooks, the loss check, checkpoints, metrics.json and log.txt) counts as its
overhead. Each bare loop also reports the seconds its evaluations took, so the overhead over
a loop that only trains can be read off too.

The loops run in lock-step, one iteration of each in turn, starting one further along every
iteration: run one after the other, whole jobs of a few seconds differ by 10% from run to run
on these machines with nothing else running, and a loop runs about 1% slower or faster
depending on which loop ran just before it; in rotation every loop sees the same moments of the
machine and the same neighbours, so a 1% difference shows.
"""
import os
import tempfile
import time
from typing import Dict

import torch
import torch.nn.functional as F
from yacs.config import CfgNode

from pet.data import build_datasets, build_eval_loader, build_train_loader
from pet.engine.device import configure_numerics
from pet.engine.distributed import ProcessInfo
from pet.engine.evaluation import evaluate
from pet.engine.hooks import is_eval_step
from pet.engine.job import validate_job
from pet.engine.logger import ProgressBar, close_logging, setup_logging
from pet.engine.output_dir import prepare_output_dir
from pet.engine.preemption import StopRequest
from pet.engine.seed import seed_everything
from pet.engine.trainer import eval_period
from pet.engine.training_run import build_trainer, build_training_run
from pet.lib.utils.lr_scheduler import Schedule, build_schedule
from pet.lib.utils.optimizer import OPTIMIZERS, optimizer_spec
from pet.models import build_model

SOLVER_LOOP = "solver + hooks (train_net)"


def job_schedule(cfg: CfgNode) -> Schedule:
    """The lr schedule of ``cfg``'s job (raises ConfigError on a bad config)."""
    return build_schedule(cfg.SOLVER.SCHEDULER, validate_job(cfg))


def job_iterations(cfg: CfgNode) -> int:
    """How many iterations ``cfg``'s job trains (raises ConfigError on a bad config)."""
    return job_schedule(cfg).max_iter


class BareLoop:
    """A hand-written loop over ``cfg``'s job, advanced one timed iteration at a time: torch's
    optimizer on one group (``implementation`` goes to it; nothing: torch's default kernel)
    and torch's ``LambdaLR`` stepping the job's lr factor every iteration."""

    def __init__(self, cfg: CfgNode, **implementation) -> None:
        seed_everything(cfg.SEED, cfg.NUM_THREADS)
        train_split, test_split = build_datasets(cfg.DATA)
        self.test_loader = build_eval_loader(cfg, test_split)
        self.model = build_model(cfg)
        self.model.train()
        opt = cfg.SOLVER.OPTIMIZER
        spec = optimizer_spec(opt)
        self.optimizer = OPTIMIZERS.get(spec.name).cls(
            self.model.parameters(), lr=opt.BASE_LR, weight_decay=opt.WEIGHT_DECAY,
            **spec.options, **implementation)
        schedule = job_schedule(cfg)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule.factor)
        self.loader = build_train_loader(cfg, train_split)
        self._batches = None
        self.eval_period = eval_period(cfg, len(self.loader))
        self.max_iter = schedule.max_iter
        self.iteration = 0
        self.seconds = 0.0
        self.eval_seconds = 0.0

    def train_step(self, iteration: int) -> None:
        """Forward, backward and optimizer step on the batch of ``iteration`` (the part a
        variant of the loop writes differently: autocast, loss scaling, accumulation, DDP)."""
        levels, labels, _ = self.micro_batches(iteration)[0]
        loss = F.cross_entropy(self.model(levels), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def micro_batches(self, iteration: int):
        """The loader's micro-batches of ``iteration`` (the loop asks for them in order)."""
        if self._batches is None:
            self._batches = self.loader.iterate(iteration, self.max_iter)
        return next(self._batches)

    def close(self) -> None:
        """Stop the loaders' workers."""
        self.loader.close()
        self.test_loader.close()

    def step(self) -> None:
        start = time.perf_counter()
        self.train_step(self.iteration)
        self.scheduler.step()
        if is_eval_step(self.iteration, self.eval_period, self.max_iter):
            eval_start = time.perf_counter()
            evaluate(self.model, self.test_loader, len(self.test_loader))
            self.eval_seconds += time.perf_counter() - eval_start
        self.iteration += 1
        self.seconds += time.perf_counter() - start


class SolverLoop:
    """train_net's path over ``cfg``'s job, advanced one timed iteration at a time: the run
    built by train_net's own builder (``build_training_run`` and ``build_trainer``), with its
    logging (log.txt and metrics.json in ``output_dir``; the console and progress bar go to
    ``console``, as off a terminal). Its first and last iterations also time the trainer's
    ``before_train`` and ``after_train`` (the final checkpoint). With ``process`` of a job of
    several processes (the process group joined), the model is wrapped in
    DistributedDataParallel and only rank 0 writes, as in train_net. ``device``: MODEL.DEVICE's
    device (train_net resolves it the same way)."""

    def __init__(self, cfg: CfgNode, output_dir: str, console,
                 process: ProcessInfo = ProcessInfo(), device: torch.device = torch.device("cpu")) -> None:
        iter_per_epoch = validate_job(cfg, world_size=process.world_size)
        cfg = cfg.clone()
        cfg.OUTPUT_DIR = output_dir
        cfg.freeze()
        progress_bar = ProgressBar(stream=console)
        setup_logging(progress_bar, console)
        configure_numerics(cfg.DETERMINISTIC, cfg.TF32, device)
        run = build_training_run(cfg, process, device, iter_per_epoch)
        if process.is_main:
            prepare_output_dir(cfg, resume=False)
        # No signal handler is installed: train_net's stop hook only costs its agreement on a
        # stop request (an all-reduce every few iterations under torch.distributed).
        self.trainer = build_trainer(run, progress_bar, StopRequest())
        self.test_loader = run.test_loader
        self.iteration = 0
        self.seconds = 0.0

    def close(self) -> None:
        """Stop the loaders' workers."""
        self.trainer.data_loader.close()
        self.test_loader.close()

    def step(self) -> None:
        start = time.perf_counter()
        if self.iteration == 0:
            self.trainer.before_train()
        self.trainer.run_iteration(self.iteration)
        self.iteration += 1
        if self.iteration == self.trainer.max_iter:
            self.trainer.after_train()
        self.seconds += time.perf_counter() - start


def bare_loops(cfg: CfgNode) -> Dict[str, BareLoop]:
    """The bare loops to compare with: torch's default kernel, and fused where it exists."""
    loops = {"bare loop, torch default": BareLoop(cfg)}
    if OPTIMIZERS.get(cfg.SOLVER.OPTIMIZER.TYPE).fused:
        loops["bare loop, fused"] = BareLoop(cfg, fused=True)
    return loops


def run_in_lock_step(loops, iterations: int) -> None:
    """Advance every loop (anything with ``step()``) ``iterations`` times, one iteration of
    each in turn, starting one further along the list every iteration. The order depends only
    on the iteration, so processes of one job issue their collectives alike."""
    for iteration in range(iterations):
        shift = iteration % len(loops)
        for loop in loops[shift:] + loops[:shift]:
            loop.step()


def time_job(cfg: CfgNode) -> Dict[str, Dict[str, float]]:
    """Seconds of ``cfg``'s whole job through each loop, all run in lock-step:
    {loop name: {"seconds": ..., "eval_seconds": ... (bare loops: their evaluations' part)}}.
    torch's thread count, which the job's NUM_THREADS sets, is restored afterwards."""
    threads = torch.get_num_threads()
    loops = {}
    with tempfile.TemporaryDirectory() as output_dir, open(os.devnull, "w") as null:
        try:
            solver_loop = SolverLoop(cfg, output_dir, null)
            loops = {SOLVER_LOOP: solver_loop, **bare_loops(cfg)}
            run_in_lock_step(list(loops.values()), solver_loop.trainer.max_iter)
        finally:
            for loop in loops.values():
                loop.close()
            close_logging()  # the log file lives in output_dir
            torch.set_num_threads(threads)
    return {name: dict(seconds=loop.seconds, eval_seconds=getattr(loop, "eval_seconds", 0.0))
            for name, loop in loops.items()}


def time_compiled_job(cfg: CfgNode) -> Dict[str, Dict[str, float]]:
    """``cfg``'s whole job through train_net's loop eager and with MODEL.COMPILE, in lock-step:
    {"eager" | "compiled": {"first_seconds": the first iteration (the compiled one compiles
    then), "seconds": every other}}."""
    threads = torch.get_num_threads()
    compiled_cfg = cfg.clone()
    compiled_cfg.MODEL.COMPILE.ENABLED = True
    loops = {}
    with tempfile.TemporaryDirectory() as eager_dir, tempfile.TemporaryDirectory() as compiled_dir, \
            open(os.devnull, "w") as null:
        try:
            loops = {"eager": SolverLoop(cfg, eager_dir, null), "compiled": SolverLoop(compiled_cfg, compiled_dir, null)}
            for loop in loops.values():
                loop.step()
            first = {name: loop.seconds for name, loop in loops.items()}
            run_in_lock_step(list(loops.values()), loops["eager"].trainer.max_iter - 1)
        finally:
            for loop in loops.values():
                loop.close()
            close_logging()
            torch.set_num_threads(threads)
    return {name: dict(first_seconds=first[name], seconds=loop.seconds - first[name]) for name, loop in loops.items()}
