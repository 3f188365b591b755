"""The training loop and the standard hooks of a run."""
import functools
import logging
import os
import time
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode

from pet.data import EvalLoader, TrainLoader, call_model, to_device
from pet.engine.evaluation import evaluate
from pet.engine.checkpointer import Checkpointer
from pet.engine.events import MetricsStorage
from pet.engine.hooks import (
    EvalHook,
    HookBase,
    IterationTimer,
    LRScheduler,
    MetricsWriter,
    PeriodicCheckpointer,
    BestCheckpointer,
    is_eval_step,
    is_logged_iteration,
    period_in_iters,
)
from pet.engine.ema import EMAHook, ModelEMA
from pet.engine.process_metrics import AverageOverProcesses
from pet.engine.hook_config import build_custom_hooks, describe_hooks, order_hooks
from pet.engine.hook_dispatch import HookDispatch
from pet.engine.writers import build_writers
from pet.engine.distributed import ProcessInfo, mean_over_processes
from pet.engine.logger import ProgressBar
from pet.lib.utils.optim_wrapper import OptimWrapper, OptimWrapperDict

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"


class Trainer:
    """Runs iterations ``start_iter .. max_iter - 1``: one batch, forward, then backward and
    optimizer step through the step seam (``OptimWrapper``) each, with the hooks around them.

    ``after_train`` hooks (final evaluation and checkpoint) run only when the loop finishes:
    an exception leaves the last periodic checkpoint as the state to resume from.
    """

    def __init__(self, model: nn.Module, optim_wrapper: OptimWrapper, data_loader: TrainLoader,
                 hooks: List[HookBase], start_iter: int, max_iter: int,
                 loss_fn: Callable = F.cross_entropy, process: ProcessInfo = ProcessInfo(),
                 device: torch.device = torch.device("cpu"),
                 storage: Optional[MetricsStorage] = None, log_period: int = 1,
                 eval_period: int = 0) -> None:
        self.model = model
        self.process = process
        self.device = device
        self.optim_wrapper = optim_wrapper
        self.data_loader = data_loader
        self.hooks = hooks
        self.start_iter = start_iter
        self.max_iter = max_iter
        self.loss_fn = loss_fn
        # The iterations whose metrics are written (LOG_PERIOD, TEST's evaluations, the last)
        # are those that read the step seam back (see is_read_iteration).
        self.log_period = log_period
        self.eval_period = eval_period
        # Which hook methods each iteration calls, made again when the hook list changes.
        self._dispatch: Optional[HookDispatch] = None
        # A storage of its own, or the run's (a checkpointable: its history survives resume).
        self.storage = storage if storage is not None else MetricsStorage(start_iter)
        self.storage.iter = start_iter
        # The loader's batches from the next iteration on, and that iteration.
        self._batches = None
        self._next_iteration = None

    def train(self) -> MetricsStorage:
        """Run the loop; return the storage (its ``latest()`` holds the last step's metrics).
        The loader's workers end with the loop, however it ends."""
        try:
            self.before_train()
            for iteration in range(self.start_iter, self.max_iter):
                self.run_iteration(iteration)
        finally:
            self.data_loader.close()
        return self.after_train()

    def before_train(self) -> None:
        logger.info("Starting training at iteration %d of %d", self.start_iter, self.max_iter)
        # The loader's workers start reading while the hooks get ready.
        self._batches = self.data_loader.iterate(self.start_iter, self.max_iter)
        self._next_iteration = self.start_iter
        self.model.train()
        for hook in self.hooks:
            hook.before_train(self.storage)

    def run_iteration(self, iteration: int) -> None:
        """The step of ``iteration`` with the hooks around it (those that define
        ``before_step`` and ``after_step``: the base class's do nothing), each at the
        iterations it declares (``HookBase.step_periods``; by default every one)."""
        hooks = tuple(self.hooks)  # a list a caller may still change
        dispatch = self._dispatch
        if dispatch is None or dispatch.hooks != hooks or dispatch.max_iter != self.max_iter:
            dispatch = self._dispatch = HookDispatch(hooks, self.max_iter)
        before, after = dispatch.calls(iteration)
        self.storage.begin_iteration(iteration)
        for before_step in before:
            before_step(self.storage)
        self.run_step(iteration)
        for after_step in after:
            after_step(self.storage)

    def after_train(self) -> MetricsStorage:
        # The hooks' after_train reads the number of iterations done from storage.iter.
        self.storage.iter = max(self.start_iter, self.max_iter)
        for hook in self.hooks:
            hook.after_train(self.storage)
        return self.storage

    def run_step(self, iteration: int) -> None:
        """Forward and update on this process's micro-batches of the batch of ``iteration``
        (one optimizer step); on a read iteration, raises FloatingPointError when too many
        steps in a row were not finite (skipped on the device; see
        ``OptimWrapper.update_params``)."""
        wrapper = self.optim_wrapper
        read_back = self.is_read_iteration(iteration)
        if isinstance(wrapper, OptimWrapperDict):
            self._run_train_step(iteration, read_back)
            return
        for inputs, labels, weight in self._micro_batches(iteration):
            with wrapper.optim_context(self.model):
                loss = self.loss_fn(call_model(self.model, inputs), labels)
            if weight != 1.0:  # a part of an uneven last batch (DATA.DROP_LAST False)
                loss = loss * weight
            step_loss = wrapper.update_params(loss, iteration, measure_grad_norm=read_back)
        # The loss stays on the device until a hook shows it (the storage reads it then).
        self.storage.put_scalar("loss", step_loss, per_process=self.process.distributed)
        if read_back:
            for name, value in wrapper.read_back().items():
                self.storage.put_scalar(name, value, smoothing_hint=False)

    def _micro_batches(self, iteration: int):
        """This process's micro-batches of ``iteration`` on the run's device (the loader reads
        from ``iteration`` on when it is not the next one)."""
        if self._batches is None or self._next_iteration != iteration:
            self._batches = self.data_loader.iterate(iteration, self.max_iter)
        self._next_iteration = iteration + 1
        start = time.perf_counter()
        micro_batches = next(self._batches)
        # detectron2's data_time: the wait for the loader (about 0 while the workers keep up).
        self.storage.put_scalar("data_time", time.perf_counter() - start)
        for inputs, labels, weight in micro_batches:
            yield to_device(inputs, self.device), to_device(labels, self.device), weight

    def _run_train_step(self, iteration: int, read_back: bool) -> None:
        """MMEngine's protocol for several optimizers: the model's ``train_step(batch,
        optim_wrappers)`` updates its parameters through the wrappers it chooses and returns
        its losses by name; each is logged (the mean over the micro-batches, on the device
        until shown), and ``loss`` is their sum unless the model returns one."""
        wrappers = self.optim_wrapper
        k = wrappers.accumulation_steps
        for wrapper in wrappers.values():  # the model's update_params calls do not say
            wrapper.measure_grad_norm = read_back
            wrapper.iteration = iteration
        totals: Dict[str, torch.Tensor] = {}
        for inputs, labels, weight in self._micro_batches(iteration):
            losses = self.model.train_step((inputs, labels), wrappers)
            for name, value in losses.items():
                value = value.detach() * (weight / k)
                totals[name] = totals[name] + value if name in totals else value
        if "loss" not in totals:
            totals["loss"] = torch.stack(list(totals.values())).sum()
        for name, value in totals.items():
            self.storage.put_scalar(name, value, per_process=self.process.distributed)
        if read_back:
            for name, value in wrappers.read_back().items():
                self.storage.put_scalar(name, value, smoothing_hint=False)

    def is_read_iteration(self, iteration: int) -> bool:
        """Whether the step ``iteration`` reads the step seam's device-held values back (its
        gradient norm measured too): the iterations whose metrics are written (every
        ``log_period``, each evaluation, the last). The other steps read nothing, so the host
        keeps queuing work while the device computes; a checkpoint reads back on its own."""
        evaluated = is_eval_step(iteration, self.eval_period, self.max_iter)
        return is_logged_iteration(iteration, self.log_period, self.max_iter, evaluated)


def build_metrics_storage(process: ProcessInfo, device: torch.device) -> MetricsStorage:
    """The run's metrics storage; under torch.distributed it averages the per-process values
    over the processes (on ``device``: nccl reduces CUDA tensors only) when synchronized."""
    mean = functools.partial(mean_over_processes, device=device) if process.distributed else None
    return MetricsStorage(mean_over_processes=mean)


def eval_period(cfg: CfgNode, iter_per_epoch: int) -> int:
    """Iterations between evaluations (TEST.EVAL_EPOCHS, else TEST.EVAL_ITERS; 0: only at the
    end)."""
    return period_in_iters(cfg.TEST.EVAL_ITERS, cfg.TEST.EVAL_EPOCHS, iter_per_epoch)


def snapshot_period(cfg: CfgNode, iter_per_epoch: int) -> int:
    """Iterations between checkpoints (SOLVER.SNAPSHOT_EPOCHS, else SNAPSHOT_ITERS; 0: only
    the final one)."""
    return period_in_iters(cfg.SOLVER.SNAPSHOT_ITERS, cfg.SOLVER.SNAPSHOT_EPOCHS, iter_per_epoch)


def build_eval_hook(cfg: CfgNode, model: nn.Module, test_loader: EvalLoader, max_iter: int,
                    iter_per_epoch: int, ema: Optional[ModelEMA] = None) -> EvalHook:
    """The evaluation hook of a training run (built before the checkpoint is loaded: it holds
    the best accuracy so far, which the checkpoint restores). With ``ema`` the averaged weights
    are evaluated too, reported as ``ema_accuracy`` and ``ema_test_loss``."""
    def eval_fn():
        results = evaluate(model, test_loader, len(test_loader))
        if ema is not None:
            ema_results = evaluate(ema.module, test_loader, len(test_loader))
            results.update({f"ema_{name}": value for name, value in ema_results.items()})
        return results
    return EvalHook(eval_fn, eval_period(cfg, iter_per_epoch), max_iter, iter_per_epoch)


def build_ema(cfg: CfgNode, model: nn.Module, module: Optional[nn.Module] = None) -> Optional[ModelEMA]:
    """The EMA of ``model``'s weights when MODEL.EMA.ENABLED, else None; ``module``: the copy
    that holds them (default: a deep copy of ``model``)."""
    if not cfg.MODEL.EMA.ENABLED:
        return None
    return ModelEMA(model, cfg.MODEL.EMA.DECAY, warmup=cfg.MODEL.EMA.WARMUP, module=module)


def build_train_hooks(cfg: CfgNode, optimizers: Dict[str, torch.optim.Optimizer], schedulers: Dict,
                      checkpointer: Checkpointer, eval_hook: EvalHook, iter_per_epoch: int,
                      start_iter: int, progress_bar: Optional[ProgressBar] = None,
                      main_process: bool = True, model: Optional[nn.Module] = None,
                      ema: Optional[ModelEMA] = None, distributed: bool = False) -> List[HookBase]:
    """The hooks of a training run (``optimizers`` and ``schedulers`` by name, ``{"": ...}`` for
    one optimizer), in the order their ``after_step`` must run: timer, lr of each optimizer
    (record, then step its scheduler), ``eval_hook``, with ``distributed`` the per-process
    metrics averaged on logged iterations, metrics (rank 0 only: it writes for the job), then
    the checkpoints (of the checkpointer's checkpointables, with the config; every process
    checkpoints, as each hands in its RNG states): the metrics line of an iteration is written
    before its checkpoint, so none is lost to a kill in between. Then the EMA update (with
    ``ema``, of ``model``) and CUSTOM_HOOKS; all sorted by priority (EMAHook ABOVE_NORMAL runs
    before the evaluation)."""
    scheduler = next(iter(schedulers.values()))  # every one runs SOLVER.SCHEDULER's length
    max_iter = scheduler.max_iter
    # The iterations with an accuracy: eval_hook's, unless a user's hook may record one too.
    accuracy_period = None if cfg.CUSTOM_HOOKS else eval_hook.period
    timer = IterationTimer(max_iter, max(s.warmup_iters for s in schedulers.values()), ignore_warmup_time=True)
    hooks = [
        timer,
        *[LRScheduler(optimizers[name], schedulers[name], prefix=f"{name}." if name else "")
          for name in schedulers],
        eval_hook,
        *([AverageOverProcesses(cfg.LOG_PERIOD, max_iter, accuracy_period)] if distributed else []),
        PeriodicCheckpointer(
            checkpointer,
            snapshot_period(cfg, iter_per_epoch),
            max_iter,
            extra={"config": cfg},
        ),
    ]
    if main_process:
        hooks.append(MetricsWriter(
            os.path.join(cfg.OUTPUT_DIR, METRICS_FILE),
            cfg.LOG_PERIOD,
            max_iter,
            timer,
            start_iter=start_iter,
            progress_bar=progress_bar,
            writers=build_writers(cfg.WRITERS, cfg.OUTPUT_DIR, start_iter),
            iter_per_epoch=iter_per_epoch,
            images_per_iter=cfg.DATA.BATCH_SIZE,
            eval_period=accuracy_period,
        ))
    if ema is not None:
        hooks.append(EMAHook(model, ema, cfg.MODEL.EMA.EVERY))
    hooks.append(BestCheckpointer(checkpointer, eval_hook))
    hooks = order_hooks(hooks + build_custom_hooks(cfg.CUSTOM_HOOKS))
    logger.info("Hooks: %s", describe_hooks(hooks))
    return hooks
