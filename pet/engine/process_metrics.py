"""The metrics of a multi-process run: each process's loss averaged over the job on the
iterations that are logged, and only there (the steps in between communicate nothing beyond
DDP's gradient all-reduce)."""
import math
from typing import Optional, Tuple

from pet.engine.events import MetricsStorage
from pet.engine.hooks import HookBase, is_logged_iteration
from pet.lib.config.runtime import PRIORITIES


class AverageOverProcesses(HookBase):
    """On every logged iteration (``is_logged_iteration``), ``storage.synchronize()``: the
    per-process values since the last logged one become their means over the processes, which
    MetricsWriter (rank 0) then writes; the logged loss is the whole batch's on any layout.

    Each process's step is guarded by its gradients (identical everywhere after DDP averaged
    them, see ``OptimWrapper.update_params``); a logged loss that is not finite while the
    step's gradients were is caught here, on every process alike: FloatingPointError naming
    the iteration.

    Runs on every process, after the evaluation and before the metrics are written.
    ``eval_period``: as MetricsWriter's (the trainer then calls it on logged iterations only).
    """

    priority = PRIORITIES["BELOW_NORMAL"]

    def __init__(self, period: int, max_iter: int, eval_period: Optional[int] = None) -> None:
        self.period = period
        self.max_iter = max_iter
        self.eval_period = eval_period

    def step_periods(self) -> Optional[Tuple[int, ...]]:
        return None if self.eval_period is None else (self.period, self.eval_period)

    def after_step(self, storage: MetricsStorage) -> None:
        it = storage.iter
        if not is_logged_iteration(it, self.period, self.max_iter, storage.has("accuracy")):
            return
        storage.synchronize()
        latest = storage.latest()
        # A step with non-finite gradients was already skipped or stopped by the step seam,
        # which then records their non-finite grad_norm (a finite step's only when measured),
        # or by the GradScaler (loss_scale recorded): only a loss alone non-finite is news.
        gradients_finite = math.isfinite(latest.get("grad_norm", 0.0)) and "loss_scale" not in latest
        loss = latest.get("loss", 0.0)
        if not math.isfinite(loss) and gradients_finite:
            raise FloatingPointError(f"loss became {loss} at iteration {it} (the mean over the "
                                     f"processes; the gradients were finite)")
