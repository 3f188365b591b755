"""The training loop's overhead: train_net's path (Optimizer, LearningRateScheduler, Trainer and
its hooks) against bare PyTorch loops over the same model, data and iterations.

A bare loop is what a user writes by hand: forward, loss, zero_grad, backward, step, with torch's
optimizer on one param group and no scheduler, evaluation, checkpoints or metrics. Whatever the
solver loop does beyond that (grouping, the lr schedule, the loss check, evaluation,
checkpoints, the metrics file) counts as its overhead.

The loops run in lock-step: after each step of the real Trainer, a measurement-only hook runs
one iteration of each bare loop and times it apart. Run one after the other, whole jobs of a few
seconds differ by 10% from run to run on these machines with nothing else running; in
lock-step every loop sees the same moments of the machine, so a 1% difference shows.
"""
import tempfile
import time
from typing import Dict, List

import torch
import torch.nn.functional as F
from yacs.config import CfgNode

from pet.data import build_datasets, build_train_loader
from pet.engine import Trainer, build_train_hooks
from pet.lib.config.validate_job import validate_cfg
from pet.lib.utils.checkpointer import Checkpointer
from pet.lib.utils.hooks import HookBase
from pet.lib.utils.logger import ProgressBar
from pet.lib.utils.lr_scheduler import LearningRateScheduler
from pet.lib.utils.lr_schedules import build_schedule
from pet.lib.utils.optimizer import OPTIMIZERS, Optimizer
from pet.lib.utils.seed import seed_everything
from pet.models import build_model

SOLVER_LOOP = "solver + hooks (train_net)"


def job_iterations(cfg: CfgNode) -> int:
    """How many iterations ``cfg``'s job trains (raises ConfigError on a bad config)."""
    return build_schedule(cfg.SOLVER.SCHEDULER, validate_cfg(cfg)).max_iter


class BareLoop:
    """A hand-written loop over ``cfg``'s job, advanced one timed iteration at a time;
    ``implementation`` goes to torch's optimizer (nothing: torch's default kernel)."""

    def __init__(self, cfg: CfgNode, **implementation) -> None:
        seed_everything(cfg.SEED, cfg.NUM_THREADS)
        train_split, _ = build_datasets(cfg)
        self.model = build_model(cfg)
        self.model.train()
        opt = cfg.SOLVER.OPTIMIZER
        info = OPTIMIZERS[opt.TYPE.upper()]
        self.optimizer = info.cls(self.model.parameters(), lr=opt.BASE_LR,
                                  weight_decay=opt.WEIGHT_DECAY, **info.options(opt),
                                  **implementation)
        self.loader = build_train_loader(cfg, train_split)
        self.iteration = 0
        self.seconds = 0.0

    def step(self) -> None:
        start = time.perf_counter()
        levels, labels = self.loader.batch(self.iteration)
        loss = F.cross_entropy(self.model(levels), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.iteration += 1
        self.seconds += time.perf_counter() - start


class LockStep(HookBase):
    """Measurement only, last in the hook list: one iteration of every bare loop per step.

    The bare loops swap order every step: a loop runs about 1% slower right after a loop of
    another model than after one of the same kind, so each gets both neighbours alike.
    """

    def __init__(self, loops: List[BareLoop]) -> None:
        self.loops = loops

    def after_step(self, storage) -> None:
        for loop in self.loops if storage.iter % 2 else reversed(self.loops):
            loop.step()


def bare_loops(cfg: CfgNode) -> Dict[str, BareLoop]:
    """The bare loops to compare with: torch's default kernel, and fused where it exists."""
    loops = {"bare loop, torch default": BareLoop(cfg)}
    if OPTIMIZERS[cfg.SOLVER.OPTIMIZER.TYPE.upper()].has_fused:
        loops["bare loop, fused"] = BareLoop(cfg, fused=True)
    return loops


def time_job(cfg: CfgNode) -> Dict[str, float]:
    """Seconds of ``cfg``'s whole job: the solver loop (``Trainer.train()`` built as
    tools/train_net.py builds it, OUTPUT_DIR in a temporary directory, no progress bar as off
    a terminal) first, then each bare loop, all run in lock-step. torch's thread count, which
    the job's NUM_THREADS sets, is restored afterwards."""
    threads = torch.get_num_threads()
    iter_per_epoch = validate_cfg(cfg)
    try:
        loops = bare_loops(cfg)
        seed_everything(cfg.SEED, cfg.NUM_THREADS)
        train_split, test_split = build_datasets(cfg)
        model = build_model(cfg)
        with tempfile.TemporaryDirectory() as output_dir, open("/dev/null", "w") as null:
            cfg = cfg.clone()
            cfg.OUTPUT_DIR = output_dir
            optimizer = Optimizer(model, cfg.SOLVER.OPTIMIZER).build()
            scheduler = LearningRateScheduler(optimizer, cfg.SOLVER, iter_per_epoch=iter_per_epoch)
            loader = build_train_loader(cfg, train_split)
            hooks = build_train_hooks(cfg, model, optimizer, scheduler, Checkpointer(output_dir),
                                      test_split, loader, 0, ProgressBar(stream=null))
            trainer = Trainer(model, optimizer, loader, hooks + [LockStep(list(loops.values()))],
                              0, scheduler.max_iter)
            start = time.perf_counter()
            trainer.train()
            total = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    bare = {name: loop.seconds for name, loop in loops.items()}
    return {SOLVER_LOOP: total - sum(bare.values()), **bare}
