"""Building a training run from a config: what tools/train_net.py trains, and what the benchmark
times (so what is timed is what users run).

The path of a run: config -> model -> Optimizer -> LearningRateScheduler -> step seam
(OptimWrapper) -> checkpoint loaded -> hooks -> Trainer. ``build_training_run`` does everything
up to the loaded checkpoint (it writes nothing); the caller then prepares OUTPUT_DIR and calls
``build_trainer``, which adds the hooks, DDP and the RNG states of the checkpoint.
"""
import copy
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Union

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset
from yacs.config import CfgNode

from pet.data import EvalLoader, build_datasets, build_eval_loader, build_train_loader
from pet.engine.checkpointer import Checkpointer
from pet.engine.compile import check_compiler, check_graph, compile_blocks, compile_model, sample_inputs
from pet.engine.distributed import ProcessInfo
from pet.engine.ema import ModelEMA
from pet.engine.fsdp import fsdp_blocks, shard_model, sharded_copy
from pet.engine.events import MetricsStorage
from pet.engine.hooks import EvalHook
from pet.engine.logger import ProgressBar
from pet.engine.output_dir import check_free_space
from pet.engine.preemption import StopOnSignal, StopRequest
from pet.engine.seed import seed_everything
from pet.engine.trainer import (
    Trainer,
    build_ema,
    build_eval_hook,
    build_metrics_storage,
    build_train_hooks,
    eval_period,
    snapshot_period,
)
from pet.lib.utils.compiled_step import check_scheduled_keys, set_hyperparameter_form
from pet.lib.utils.lr_scheduler import LearningRateScheduler
from pet.lib.config.errors import ConfigError
from pet.lib.utils.multi_optimizer import named_optimizers
from pet.lib.utils.optim_wrapper import OptimWrapper, OptimWrapperDict, build_optim_wrapper
from pet.models import build_model


@dataclass
class TrainingRun:
    """The parts of a run, built and (on resume) loaded; ``start_iter`` is where it goes on."""

    cfg: CfgNode
    process: ProcessInfo
    device: torch.device
    iter_per_epoch: int
    train_split: Dataset
    test_split: Dataset
    test_loader: EvalLoader
    model: nn.Module
    # By name: {"": the one} for SOLVER.OPTIMIZER, {submodule: ...} for SOLVER.OPTIMIZERS.
    optimizers: Dict[str, torch.optim.Optimizer]
    optim_wrapper: Union[OptimWrapper, OptimWrapperDict]
    checkpointer: Checkpointer
    schedulers: Dict[str, LearningRateScheduler]
    ema: Optional[ModelEMA]
    eval_hook: EvalHook
    storage: MetricsStorage
    start_iter: int

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The first (with one optimizer, the) optimizer."""
        return next(iter(self.optimizers.values()))

    @property
    def scheduler(self) -> LearningRateScheduler:
        """The first (with one optimizer, the) scheduler: every one runs the run's length."""
        return next(iter(self.schedulers.values()))


def checkpoint_size_estimate(model: nn.Module) -> int:
    """Bytes a checkpoint of ``model`` may take: weights and up to two moments per weight,
    with room for the RNG states and the config."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return 3 * weights + (1 << 20)


def build_solver(cfg: CfgNode, model: nn.Module, device: torch.device):
    """(optimizers by name, their solvers, the step seam) of ``cfg`` over ``model``: one
    optimizer ({"": it}) for SOLVER.OPTIMIZER, one per top-level submodule for
    SOLVER.OPTIMIZERS. Raises ConfigError for what does not fit the model."""
    if cfg.SOLVER.OPTIMIZERS and not callable(getattr(model, "train_step", None)):
        raise ConfigError(f"SOLVER.OPTIMIZERS: {type(model).__name__} (MODEL.TYPE {cfg.MODEL.TYPE}) "
                          f"has no train_step(batch, optim_wrappers); a model trained with several "
                          f"optimizers steps them itself (MMEngine's protocol)")
    optimizers, solvers = named_optimizers(model, cfg.SOLVER)
    wrappers = {name: build_optim_wrapper(optimizer, solvers[name], device.type, name)
                for name, optimizer in optimizers.items()}
    optim_wrapper = OptimWrapperDict(**wrappers) if cfg.SOLVER.OPTIMIZERS else wrappers[""]
    return optimizers, solvers, optim_wrapper


def build_schedulers(optimizers: Dict[str, torch.optim.Optimizer], solvers: Dict[str, CfgNode],
                     start_iter: int, iter_per_epoch: int) -> Dict[str, LearningRateScheduler]:
    """One LearningRateScheduler per optimizer, at ``start_iter``. Raises ConfigError for a
    schedule that does not fit its optimizer (a key it lacks, a scheduled number a compiled
    step would recompile for)."""
    schedulers = {}
    for name, optimizer in optimizers.items():
        schedulers[name] = LearningRateScheduler(optimizer, solvers[name], start_iter=start_iter,
                                                 iter_per_epoch=iter_per_epoch, name=name)
        if solvers[name].OPTIMIZER.COMPILE:
            check_scheduled_keys(optimizer, schedulers[name].cycles_momentum,
                                 [s.param for s in schedulers[name].param_schedules or ()])
    return schedulers


def build_training_run(cfg: CfgNode, process: ProcessInfo, device: torch.device,
                       iter_per_epoch: int, resume: bool = False) -> TrainingRun:
    """Seed, build the data, model, optimizer, step seam, checkpointer, scheduler, EMA,
    evaluation and metrics of ``cfg`` (validated; ``iter_per_epoch`` from its validation) on
    ``device``, and load the checkpoint (``resume``: OUTPUT_DIR's last one, else
    MODEL.WEIGHTS). Writes nothing; raises ConfigError for what does not fit."""
    seed_everything(cfg.SEED, cfg.NUM_THREADS)
    train_split, test_split = build_datasets(cfg.DATA)
    test_loader = build_eval_loader(cfg, test_split, device, process.local_world_size)
    model = build_model(cfg).to(device)
    if cfg.MODEL.COMPILE.ENABLED:
        check_compile(cfg, model, train_split, device)
    if cfg.SOLVER.DISTRIBUTED.STRATEGY == "fsdp":  # before the optimizer: it holds the shards
        shard_model(model, cfg, device, process.world_size)
    optimizers, solvers, optim_wrapper = build_solver(cfg, model, device)
    check_free_space(cfg.OUTPUT_DIR, checkpoint_size_estimate(model))
    checkpointer = Checkpointer(cfg.OUTPUT_DIR, resume=resume, weights=cfg.MODEL.WEIGHTS,
                                process=process, keep_checkpoints=cfg.SOLVER.KEEP_CHECKPOINTS,
                                async_save=cfg.SOLVER.ASYNC_CHECKPOINT, model=model,
                                optim_wrapper=optim_wrapper)
    # The checkpoint's iteration is the whole progress of each schedule.
    schedulers = build_schedulers(optimizers, solvers, checkpointer.start_iter, iter_per_epoch)
    for name, optimizer in optimizers.items():
        suffix = f".{name}" if name else ""  # optimizer and scheduler, or optimizer.<name>, ...
        checkpointer.add_checkpointable(f"optimizer{suffix}", optimizer)
        checkpointer.add_checkpointable(f"scheduler{suffix}", schedulers[name])
    fsdp = cfg.SOLVER.DISTRIBUTED.STRATEGY == "fsdp"
    ema = build_ema(cfg, model, sharded_copy(cfg, device, process.world_size) if fsdp else None)
    if ema is not None:
        checkpointer.add_checkpointable("ema", ema)
    max_iter = next(iter(schedulers.values())).max_iter
    eval_hook = build_eval_hook(cfg, model, test_loader, max_iter, iter_per_epoch, ema)
    checkpointer.add_checkpointable("eval_hook", eval_hook)
    storage = build_metrics_storage(process, device)  # its history survives resume
    checkpointer.add_checkpointable("metrics", storage)
    start_iter = checkpointer.load()
    for name, optimizer in optimizers.items():  # a checkpoint of a compiled or an eager step
        set_hyperparameter_form(optimizer, compiled=solvers[name].OPTIMIZER.COMPILE)
    if ema is not None and not checkpointer.resuming:  # the average starts at MODEL.WEIGHTS
        ema.load_state_dict(model.state_dict())
    return TrainingRun(cfg, process, device, iter_per_epoch, train_split, test_split, test_loader, model,
                       optimizers, optim_wrapper, checkpointer, schedulers, ema, eval_hook, storage,
                       start_iter)


def check_compile(cfg: CfgNode, model: nn.Module, train: Dataset, device: torch.device) -> None:
    """ConfigError when MODEL.COMPILE cannot work for this run (no compiler for ``device``, a
    graph break under FULLGRAPH, FULLGRAPH with several optimizers)."""
    check_compiler(device)
    if not cfg.SOLVER.OPTIMIZERS:
        check_graph(model, sample_inputs(train, device), cfg.MODEL.COMPILE, cfg.MODEL.TYPE)
        return
    # The model's train_step calls its submodules with inputs only it makes: no trace before
    # training, so FULLGRAPH cannot be checked; without it torch logs each break where it happens.
    if cfg.MODEL.COMPILE.FULLGRAPH:
        raise ConfigError("MODEL.COMPILE.FULLGRAPH: cannot be checked before training with SOLVER.OPTIMIZERS "
                          "(the model's train_step calls its submodules with inputs only it makes); set it "
                          "False (each graph break is then logged with where it happened)")
    torch._logging.set_logs(graph_breaks=True)


def separate_modules(model: nn.Module, names: List[str], wrap: Callable[[nn.Module], nn.Module]) -> nn.Module:
    """A view of ``model`` whose submodules ``names`` are each ``wrap``ped: their own
    DistributedDataParallel (MMEngine's separate DDP, for several optimizers: each backward
    all-reduces the gradients of the submodules it reached) and/or torch.compile. Its
    ``train_step`` calls them. The view shares every parameter with ``model``, which stays
    unwrapped for checkpoints, evaluation and the EMA."""
    view = copy.copy(model)
    view._modules = dict(model._modules)  # its own table of submodules, the same submodules
    for name in names:
        view._modules[name] = wrap(model._modules[name])
    return view


def build_trainer(run: TrainingRun, progress_bar: ProgressBar, stop_request: StopRequest) -> Trainer:
    """The loop of ``run``: its loader, hooks (``StopOnSignal`` on ``stop_request`` last), the
    model wrapped in DistributedDataParallel under torch.distributed with ddp, and the RNG states of the
    checkpoint restored (last, so nothing drawn while building changes them). Call it once
    OUTPUT_DIR is prepared: the metrics writers open their files."""
    cfg, process, device = run.cfg, run.process, run.device
    data_loader = build_train_loader(cfg, run.train_split, process.rank, process.world_size, device,
                                     process.local_world_size)
    hooks = build_train_hooks(cfg, run.optimizers, run.schedulers, run.checkpointer, run.eval_hook,
                              run.iter_per_epoch, run.start_iter, progress_bar,
                              main_process=process.is_main, model=run.model, ema=run.ema,
                              distributed=process.distributed)
    ddp = process.distributed and cfg.SOLVER.DISTRIBUTED.STRATEGY == "ddp"
    device_ids = [device.index] if device.type == "cuda" else None

    def wrap(module: nn.Module) -> nn.Module:  # compiled around DDP (torch's advice)
        module = DistributedDataParallel(module, device_ids=device_ids) if ddp else module
        return compile_model(module, cfg.MODEL.COMPILE) if cfg.MODEL.COMPILE.ENABLED else module

    trained_model = run.model  # sharded in place under fsdp; checkpoints keep run.model
    if cfg.SOLVER.DISTRIBUTED.STRATEGY == "fsdp":  # each block compiled in place, the root eager
        if cfg.MODEL.COMPILE.ENABLED:
            compile_blocks(fsdp_blocks(run.model, list(cfg.SOLVER.DISTRIBUTED.FSDP_BLOCKS), cfg.MODEL.TYPE),
                           cfg.MODEL.COMPILE)
    elif isinstance(run.optim_wrapper, OptimWrapperDict):  # each optimizer's submodule wrapped
        if ddp or cfg.MODEL.COMPILE.ENABLED:
            trained_model = separate_modules(run.model, list(run.optimizers), wrap)
    else:
        trained_model = wrap(run.model)
    hooks.append(StopOnSignal(stop_request, run.checkpointer, snapshot_period(cfg, run.iter_per_epoch),
                              run.scheduler.max_iter, device, extra={"config": cfg}))
    run.checkpointer.load_rng(cfg.SEED)
    return Trainer(trained_model, run.optim_wrapper, data_loader, hooks, run.start_iter,
                   run.scheduler.max_iter, process=process, device=device, storage=run.storage,
                   log_period=cfg.LOG_PERIOD, eval_period=eval_period(cfg, run.iter_per_epoch))
