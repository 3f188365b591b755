"""Training hooks: small objects the trainer calls around the loop and around every step.

Each hook receives the ``MetricsStorage`` (``storage.iter`` is the iteration being run, from 0;
in ``after_train``, the number of iterations done) and holds whatever else it needs (optimizer,
scheduler, checkpointer) from its constructor. The trainer calls them in list order, so the
order of ``after_step`` matters: the lr is recorded and the scheduler stepped first, then
evaluation, then the metrics line, then checkpoints (which must see the new accuracy; written
after the metrics line, as MMEngine orders its logger and checkpoint hooks, so a run killed in
between resumes from the previous checkpoint and rewrites that line: no line is ever lost).
"""
import logging
import math
import os
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from pet.engine.checkpointer import FINAL_NAME, Checkpointer, atomic_write, periodic_name, write_on_main
from pet.engine.distributed import all_gather_objects
from pet.engine.sharded_checkpoint import full_state_dict
from pet.engine.events import MetricsStorage
from pet.engine.logger import ProgressBar, fit_status, format_rate, format_seconds, output_write_error
from pet.engine.writers import JSONWriter, MetricsFileWriter, truncate_metrics  # noqa: F401
from pet.lib.config.runtime import PRIORITIES
from pet.lib.utils.registry import Registry

logger = logging.getLogger(__name__)


# Hook classes by name (``@HOOKS.register()``): the built-in ones below, and a user's own
# (imported through CUSTOM_IMPORTS) for runs that list hooks by name.
HOOKS = Registry("hook")
# The file of the best weights so far (BestCheckpointer), in OUTPUT_DIR.
BEST_NAME = "model_best"


class HookBase:
    """A hook does nothing unless it overrides one of these. ``priority`` (MMEngine's, see
    pet.lib.config.runtime.PRIORITIES) orders the hooks of a run: smaller runs earlier."""

    priority = PRIORITIES["NORMAL"]

    def step_periods(self) -> Optional[Tuple[int, ...]]:
        """The iterations whose ``before_step`` and ``after_step`` may act: those that complete
        a multiple of one of these periods (0: none), and the last one; the trainer calls them
        there only (asked once per hook list). None, unless a hook says: every iteration."""
        return None

    def before_train(self, storage: MetricsStorage) -> None:
        pass

    def after_train(self, storage: MetricsStorage) -> None:
        pass

    def before_step(self, storage: MetricsStorage) -> None:
        pass

    def after_step(self, storage: MetricsStorage) -> None:
        pass


def is_period_end(iteration: int, period: int) -> bool:
    """Whether the step ``iteration`` (from 0) completes a multiple of ``period`` iterations."""
    return period > 0 and (iteration + 1) % period == 0


def is_eval_step(iteration: int, period: int, max_iter: int) -> bool:
    """Whether the model is evaluated after the step ``iteration``: every ``period`` iterations
    and after the last one."""
    return is_period_end(iteration, period) or iteration + 1 == max_iter


def is_logged_iteration(iteration: int, period: int, max_iter: int, evaluated: bool) -> bool:
    """Whether the metrics of the step ``iteration`` are written: every ``period`` iterations,
    after an evaluation (``evaluated``) and after the last step."""
    return is_period_end(iteration, period) or evaluated or iteration + 1 == max_iter


def period_in_iters(iters: int, epochs: Optional[float], iter_per_epoch: int) -> int:
    """A period given in iterations, or in epochs when ``epochs`` is set (0: never)."""
    if epochs is not None:
        return max(1, int(round(epochs * iter_per_epoch)))
    return iters


@HOOKS.register()
class IterationTimer(HookBase):
    """Times every step and estimates the time left.

    The time of the warm-up iterations and of the first step of this process (one-time costs)
    is left out of the average when ``ignore_warmup_time``, so the ETA reflects the steady speed.
    Put it first in the hook list: its ``after_step`` then measures the step alone.
    """

    priority = PRIORITIES["VERY_HIGH"]

    def __init__(self, max_iter: int, warmup_iters: int, ignore_warmup_time: bool = True) -> None:
        self.max_iter = max_iter
        self.warmup_iters = warmup_iters if ignore_warmup_time else 0
        self._start = 0.0
        self._first_iter = None
        self._steady_time = 0.0
        self._steady_count = 0
        self._all_time = 0.0
        self._all_count = 0

    def before_step(self, storage: MetricsStorage) -> None:
        if self._first_iter is None:
            self._first_iter = storage.iter
        self._start = time.perf_counter()

    def after_step(self, storage: MetricsStorage) -> None:
        seconds = time.perf_counter() - self._start
        storage.put_scalar("time", seconds)
        self._all_time += seconds
        self._all_count += 1
        if storage.iter >= self.warmup_iters and storage.iter > self._first_iter:
            self._steady_time += seconds
            self._steady_count += 1

    def seconds_per_iter(self) -> float:
        """Average step time, over steady iterations once there are any."""
        if self._steady_count:
            return self._steady_time / self._steady_count
        return self._all_time / max(self._all_count, 1)

    def eta_seconds(self, iteration: int) -> float:
        """Seconds left after the step ``iteration``."""
        return self.seconds_per_iter() * (self.max_iter - iteration - 1)


@HOOKS.register()
class LRScheduler(HookBase):
    """Records the lr of the largest param group (the one with most parameters), and the
    hyper-parameters the scheduler schedules beside it, then steps the scheduler: one
    scheduler step per optimizer step."""

    priority = PRIORITIES["HIGH"]

    def __init__(self, optimizer: torch.optim.Optimizer, scheduler, prefix: str = "") -> None:
        self.optimizer = optimizer
        self.scheduler = scheduler
        # Before each metric's name: "<name>." for one optimizer of several (SOLVER.OPTIMIZERS).
        self.prefix = prefix
        sizes = [sum(p.numel() for p in group["params"]) for group in optimizer.param_groups]
        self._best_param_group_id = max(range(len(sizes)), key=sizes.__getitem__)

    def after_step(self, storage: MetricsStorage) -> None:
        prefix = self.prefix
        lr = self.optimizer.param_groups[self._best_param_group_id]["lr"]
        storage.put_scalar(f"{prefix}lr", lr, smoothing_hint=False)
        lrs = [group["lr"] for group in self.optimizer.param_groups]
        if len(set(lrs)) > 1:  # one curve per distinct lr: groups that only differ in decay share one
            for index, group_lr in enumerate(lrs):
                if group_lr not in lrs[:index]:
                    storage.put_scalar(f"{prefix}lr_group{index}", group_lr, smoothing_hint=False)
        # The hyper-parameters scheduled beside the lr (SOLVER.SCHEDULER.PARAMS), in that group.
        for schedule in getattr(self.scheduler, "param_schedules", ()):
            value = self.optimizer.param_groups[self._best_param_group_id][schedule.param]
            storage.put_scalar(f"{prefix}{schedule.param}", value, smoothing_hint=False)
        self.scheduler.step()


@HOOKS.register()
class EvalHook(HookBase):
    """Evaluates every ``period`` iterations and at the end, and owns the accuracies: the last
    one (``accuracy``, ``epoch``) and the best so far (``best_accuracy``, ``best_epoch``; epochs
    counted from 1), saved and restored with the checkpoints.

    ``eval_fn()`` returns a dict with at least "accuracy" (in %); every value is recorded.
    """

    def __init__(self, eval_fn: Callable[[], Dict[str, float]], period: int, max_iter: int,
                 iter_per_epoch: int) -> None:
        self.eval_fn = eval_fn
        self.period = period
        self.max_iter = max_iter
        self.iter_per_epoch = iter_per_epoch
        self.accuracy, self.epoch = 0.0, 1
        self.best_accuracy, self.best_epoch = 0.0, 1
        self._last_eval_iter = None

    def state_dict(self) -> Dict[str, float]:
        """The last and the best accuracy with their epochs (plain numbers)."""
        return {"accuracy": self.accuracy, "epoch": self.epoch,
                "best_accuracy": self.best_accuracy, "best_epoch": self.best_epoch}

    def load_state_dict(self, state_dict: Dict[str, float]) -> None:
        """Restore ``state_dict()``'s values (KeyError naming a missing one)."""
        self.accuracy, self.epoch = float(state_dict["accuracy"]), int(state_dict["epoch"])
        self.best_accuracy = float(state_dict["best_accuracy"])
        self.best_epoch = int(state_dict["best_epoch"])

    def _evaluate(self, storage: MetricsStorage, iterations_done: int) -> None:
        results = self.eval_fn()
        epoch = max(1, math.ceil(iterations_done / self.iter_per_epoch))
        self.accuracy, self.epoch = results["accuracy"], epoch
        if results["accuracy"] > self.best_accuracy:
            self.best_accuracy, self.best_epoch = results["accuracy"], epoch
        for name, value in results.items():
            storage.put_scalar(name, value, smoothing_hint=False)
        storage.put_scalar("best_accuracy", self.best_accuracy, smoothing_hint=False)
        self._last_eval_iter = iterations_done
        logger.info(
            "Evaluation after iteration %d (epoch %d): accuracy %.2f%%, test loss %.4f "
            "(best %.2f%% at epoch %d)",
            iterations_done, epoch, results["accuracy"], results.get("test_loss", float("nan")),
            self.best_accuracy, self.best_epoch,
        )

    def step_periods(self) -> Tuple[int, ...]:
        return (self.period,)

    def after_step(self, storage: MetricsStorage) -> None:
        if is_eval_step(storage.iter, self.period, self.max_iter):
            self._evaluate(storage, storage.iter + 1)

    def after_train(self, storage: MetricsStorage) -> None:
        # A run resumed from its final checkpoint takes no step: still report its accuracy.
        if self._last_eval_iter is None:
            self._evaluate(storage, storage.iter)


@HOOKS.register()
class PeriodicCheckpointer(HookBase):
    """Saves the whole training state (the checkpointer's checkpointables) every ``period``
    iterations (0: never) and at the end as ``model_final``; ``extra`` holds plain entries
    saved with every checkpoint (train_net: the config)."""

    priority = PRIORITIES["VERY_LOW"]

    def __init__(self, checkpointer: Checkpointer, period: int, max_iter: int,
                 extra: Optional[Dict] = None) -> None:
        self.checkpointer = checkpointer
        self.period = period
        self.max_iter = max_iter
        self.extra = extra or {}

    def step_periods(self) -> Optional[Tuple[int, ...]]:
        # A sharded checkpoint written in the background is published by the first poll after it.
        return None if getattr(self.checkpointer, "sharded", True) else (self.period,)

    def after_step(self, storage: MetricsStorage) -> None:
        done = storage.iter + 1
        self.checkpointer.poll()  # a background checkpoint appears once written
        if is_period_end(storage.iter, self.period) and done < self.max_iter:
            self.checkpointer.save(periodic_name(done), done, background=True, **self.extra)

    def after_train(self, storage: MetricsStorage) -> None:
        self.checkpointer.save(FINAL_NAME, storage.iter, **self.extra)


@HOOKS.register()
class BestCheckpointer(HookBase):
    """Writes ``model_best.pth`` (atomically; ``last_checkpoint`` is left alone) each time
    ``eval_hook``'s best accuracy improves: the weights ("model", and "ema" with MODEL.EMA),
    ``iteration``, ``accuracy`` and ``epoch``; ``--eval-only MODEL.WEIGHTS .../model_best.pth``
    evaluates it. A resumed run starts from the restored best, so it only writes on a new one."""

    priority = PRIORITIES["VERY_LOW"]

    def __init__(self, checkpointer: Checkpointer, eval_hook: "EvalHook") -> None:
        self.checkpointer = checkpointer
        self.eval_hook = eval_hook
        self._best = None

    def before_train(self, storage: MetricsStorage) -> None:
        self._best = self.eval_hook.best_accuracy  # restored from the checkpoint by now

    def step_periods(self) -> Optional[Tuple[int, ...]]:
        # Only an evaluation improves the best; before before_train, every step (the first sets it).
        return None if self._best is None else (self.eval_hook.period,)

    def after_step(self, storage: MetricsStorage) -> None:
        if self._best is None:
            self._best = self.eval_hook.best_accuracy
        if not storage.has("accuracy"):
            return  # only an evaluation improves the best
        # Every process evaluates at the same iterations and takes part, so a failed write on
        # rank 0 ends them all; rank 0's accuracy decides (BatchNorm's buffers, last set by each
        # process's own forward, can make the processes' accuracies differ slightly).
        if not all_gather_objects(self.eval_hook.best_accuracy > self._best)[0]:
            return
        self._best = self.eval_hook.best_accuracy
        # Plain whole weights: a sharded model's are gathered to rank 0 (every process takes part).
        weights = {name: full_state_dict(self.checkpointer.checkpointables[name]) if self.checkpointer.sharded
                   else self.checkpointer.checkpointables[name].state_dict()
                   for name in ("model", "ema") if name in self.checkpointer.checkpointables}
        write_on_main(self.checkpointer.process, lambda: self.save(storage.iter + 1, weights))

    def save(self, iteration: int, weights: Dict[str, Any]) -> None:
        """Write the best weights so far (the caller is rank 0)."""
        state = dict(weights)
        state.update(iteration=int(iteration), accuracy=float(self.eval_hook.best_accuracy),
                     epoch=int(self.eval_hook.best_epoch))
        path = os.path.join(self.checkpointer.save_dir, f"{BEST_NAME}.pth")
        atomic_write(path, lambda f: torch.save(state, f))
        logger.debug("Saved %s (accuracy %.2f%%, iteration %d)", path, state["accuracy"], iteration)


def shown_lr(metrics: Dict[str, float]) -> float:
    """The lr a console line shows: ``lr``, or with several optimizers the first one's."""
    if "lr" in metrics:
        return metrics["lr"]
    return next((value for name, value in metrics.items() if name.endswith(".lr")), math.nan)


@HOOKS.register()
class MetricsWriter(HookBase):
    """Hands one record per logged iteration (every ``period`` iterations, at every evaluation
    and at the last step) to the ``writers`` (default: metrics.json at ``path``; the fields are
    documented in pet.engine.writers), writes the same as a human line to the log file, and
    draws the progress bar on a terminal; off a terminal the console gets the human line every
    few seconds instead (``ProgressBar.line_due``: the first, then at most one every
    PLAIN_LINE_INTERVAL seconds, and the last).

    ``iter_per_epoch`` gives the records their epoch and ``images_per_iter`` (the batch size)
    their throughput. On resume each writer drops what was written at or after ``start_iter``
    (by the interrupted run after its last checkpoint), so each iteration appears once.
    ``eval_period``: the run's EvalHook's period, when only it records an accuracy (the trainer
    then calls this hook on logged iterations only); None: any step may.
    """

    priority = PRIORITIES["BELOW_NORMAL"]

    def __init__(self, path: str, period: int, max_iter: int, timer: IterationTimer,
                 start_iter: int = 0, progress_bar: Optional[ProgressBar] = None,
                 writers: Optional[List[MetricsFileWriter]] = None, iter_per_epoch: int = 0,
                 images_per_iter: int = 0, eval_period: Optional[int] = None) -> None:
        self.period = period
        self.eval_period = eval_period
        self.max_iter = max_iter
        self.timer = timer
        self.progress_bar = progress_bar or ProgressBar()
        self.writers = writers if writers is not None else [JSONWriter(path, start_iter)]
        self.iter_per_epoch = iter_per_epoch or max_iter
        self.images_per_iter = images_per_iter

    def epoch(self, iterations_done: int) -> int:
        """The epoch (from 1) of the step that completes ``iterations_done`` iterations."""
        return max(1, math.ceil(iterations_done / self.iter_per_epoch))

    def record(self, storage: MetricsStorage, latest: Dict[str, float], eta: float) -> Dict[str, float]:
        """The metrics of the current iteration, as the writers get them."""
        it = storage.iter
        record = {"iteration": it, "iterations_done": it + 1, "epoch": self.epoch(it + 1), **latest}
        if "loss" in latest:
            record["loss_smoothed"] = storage.median("loss", max(self.period, 20))
        if self.images_per_iter:
            record["images_per_s"] = round(self.images_per_iter / max(self.timer.seconds_per_iter(), 1e-9), 1)
        record["eta_seconds"] = round(eta, 1)
        return record

    def step_periods(self) -> Optional[Tuple[int, ...]]:
        if self.progress_bar.enabled or self.eval_period is None:  # the bar draws at any step
            return None
        return (self.period, self.eval_period)

    def after_step(self, storage: MetricsStorage) -> None:
        it = storage.iter
        evaluated = storage.has("accuracy")
        write = is_logged_iteration(it, self.period, self.max_iter, evaluated)
        if not (write or self.progress_bar.enabled):
            return  # most steps, when the trainer calls it at every one: nothing to do
        eta = self.timer.eta_seconds(it)
        if write:
            record = self.record(storage, storage.latest(), eta)
            for writer in self.writers:
                try:
                    writer.write(record)
                except OSError as e:  # a full disk, a read-only directory: one line naming the file
                    raise output_write_error(writer.path, e) from None
            # One line per logged iteration, to log.txt (DEBUG); off a terminal, at INFO every
            # few seconds (the bar's line_due), so the console also shows some: still one record.
            to_console = self.progress_bar.line_due(final=it + 1 == self.max_iter)
            logger.log(logging.INFO if to_console else logging.DEBUG, "%s", self._line(record, storage))
        if self.progress_bar.enabled:  # the status text is built only when the bar draws
            # Built (and the loss read from the device) only when the bar draws.
            self.progress_bar.update(lambda: self._status(storage, storage.latest(), eta),
                                     force=it + 1 == self.max_iter)

    def _line(self, record: Dict[str, float], storage: MetricsStorage) -> str:
        """The human line of a logged iteration: epoch, iteration, lr, loss, speed, ETA."""
        speed = 1.0 / max(self.timer.seconds_per_iter(), 1e-9)
        images = f" ({format_rate(record['images_per_s'])} images/s)" if "images_per_s" in record else ""
        accuracy = f"  accuracy {record['accuracy']:.2f}%" if "accuracy" in record else ""
        return (f"ep {record['epoch']}  iter {record['iterations_done']}/{self.max_iter}  "
                f"lr {shown_lr(record):.6g}  loss {record['loss']:.4f} "
                f"(median {storage.median('loss', self.period):.4f})  {format_rate(speed)} it/s"
                f"{images}  eta {format_seconds(record['eta_seconds'])}{accuracy}")

    def _status(self, storage: MetricsStorage, latest: Dict[str, float], eta: float) -> str:
        it = storage.iter
        speed = 1.0 / max(self.timer.seconds_per_iter(), 1e-9)
        text = (f"ep {self.epoch(it + 1)} iter {it + 1}/{self.max_iter} "
                f"lr {shown_lr(latest):.3g} loss {storage.median('loss', 20):.4f} "
                f"{format_rate(speed)} it/s eta {format_seconds(eta)}")
        return fit_status(text, (it + 1) / self.max_iter, self.progress_bar.width())

    def after_train(self, storage: MetricsStorage) -> None:
        self.progress_bar.close()
        for writer in self.writers:
            try:
                writer.close()
            except OSError as e:
                raise output_write_error(writer.path, e) from None
