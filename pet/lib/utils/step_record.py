"""What the step seam keeps on the device between two reads, and the counts it reads into.

Each step leaves a ``PendingStep``: tensors still on the device (its non-finite flag, its loss,
its measured gradient norm). ``StepRecord.read_back`` reads every pending value in one host
read and updates the counts a run shows and checkpoints (skipped and non-finite steps, the
run of non-finite steps in a row), raising when a run must stop.
"""
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import torch

from pet.lib.utils.grad_check import host_floats


def decay_overshoot(optimizer: torch.optim.Optimizer) -> Optional[str]:
    """Why weight decay alone makes the weights grow, when it does: a group whose lr x weight
    decay passes the bound past which the decay's step overshoots zero by more than it started
    from (2 for a decoupled decay, ``p (1 - lr wd)``; 2 (1 + momentum) / (1 - dampening) for
    SGD's, a heavy ball on ``wd p^2 / 2``; Nesterov's bound is lower, so this one never blames
    the decay wrongly). None for the other optimizers (Adam's coupled decay is normalised away)."""
    for group in optimizer.param_groups:
        if isinstance(optimizer, torch.optim.SGD):
            momentum = float(group.get("momentum", 0.0))
            dampening = float(group.get("dampening", 0.0)) if momentum else 0.0  # as torch's SGD
            if dampening >= 1.0:
                continue  # its momentum buffer never takes a gradient
            bound = 2.0 * (1.0 + momentum) / (1.0 - dampening)
        elif isinstance(optimizer, torch.optim.AdamW) or group.get("decoupled_weight_decay"):
            bound = 2.0
        else:
            return None
        lr, decay = float(group["lr"]), float(group.get("weight_decay", 0.0))
        if lr * decay > bound:
            return (f"lr {lr:.4g} x weight decay {decay:.4g} = {lr * decay:.4g} is above {bound:.4g}, "
                    f"where the decay alone makes the weights grow")
    return None


@dataclass
class PendingStep:
    """A step whose device-held values are not read yet: its iteration (for messages), its
    loss (None for a bare ``step()``), its measured gradient norm, and its non-finite flag
    (1.0 when the step was skipped or must be; the scaler's found_inf under loss scaling)."""

    iteration: Optional[int]
    loss: Optional[torch.Tensor]
    grad_norm: Optional[torch.Tensor]
    nonfinite: Optional[torch.Tensor] = None

    def tensors(self) -> List[Optional[torch.Tensor]]:
        return [self.nonfinite, self.loss, self.grad_norm]


class StepRecord:
    """The pending steps and the counts of a step seam.

    ``skip_nonfinite``: how many non-finite steps in a row are skipped before the run stops
    (SOLVER.SKIP_NONFINITE); ``scaled``: the flags are a GradScaler's, whose skipped steps are
    counted (``skipped_steps``) and never stop a run; ``cause``: asked when a run must stop, a
    known cause of the divergence (``decay_overshoot``) or None.
    """

    def __init__(self, skip_nonfinite: int, scaled: bool, name: str = "",
                 cause: Callable[[], Optional[str]] = lambda: None) -> None:
        self.skip_nonfinite = int(skip_nonfinite)
        self.scaled = scaled
        self.name = name  # of an optimizer of SOLVER.OPTIMIZERS: errors name its keys
        self.cause = cause
        self.pending: List[PendingStep] = []
        self.skipped_steps = 0  # by the scaler
        self.nonfinite_steps = 0  # skipped for SKIP_NONFINITE
        self.nonfinite_in_a_row = 0
        # The last step's gradient norm when it was measured, and the loss scale, as last read.
        self.last_grad_norm: Optional[float] = None
        self.last_scale: Optional[float] = None

    def read_back(self, scale: Optional[torch.Tensor] = None) -> None:
        """Read every pending value (and ``scale``, the scaler's) in one host read, then count
        the steps in order. Raises FloatingPointError at the first step past ``skip_nonfinite``
        non-finite ones in a row, naming its iteration and what was not finite."""
        pending, self.pending = self.pending, []
        tensors = [t for step in pending for t in step.tensors() if t is not None]
        values = iter(host_floats(tensors + ([] if scale is None else [scale])))
        read = [[None if t is None else next(values) for t in step.tensors()] for step in pending]
        if scale is not None:
            self.last_scale = next(values)
        for step, (nonfinite, loss, norm) in zip(pending, read):
            self.last_grad_norm = norm
            if not nonfinite:
                self.nonfinite_in_a_row = 0
            elif self.scaled:
                self.skipped_steps += 1
            else:
                self._count_nonfinite(step.iteration, loss, norm)

    def _count_nonfinite(self, iteration: Optional[int], loss: Optional[float],
                         norm: Optional[float]) -> None:
        """Count a skipped non-finite step, or raise when no more may be skipped in a row."""
        self.nonfinite_in_a_row += 1
        if self.nonfinite_in_a_row <= self.skip_nonfinite:
            self.nonfinite_steps += 1
            return
        where = "" if iteration is None else f" at iteration {iteration}"
        if loss is not None and not math.isfinite(loss):
            what = f"loss became {loss}"
        else:
            what = "gradients became non-finite" + ("" if norm is None else f" (norm {norm})")
        if self.skip_nonfinite:
            what += f" for {self.nonfinite_in_a_row} steps in a row (SOLVER.SKIP_NONFINITE {self.skip_nonfinite})"
        self.nonfinite_in_a_row = 0
        owner, keys = (f"the {self.name} optimizer's ", f"SOLVER.OPTIMIZERS.{self.name}") if self.name else (
            "", "SOLVER.OPTIMIZER")
        cause = self.cause()
        if cause is not None:
            raise FloatingPointError(
                f"{owner}{what}{where}: {cause}; lower {keys}.BASE_LR or {keys}.WEIGHT_DECAY (or that "
                f"parameter's WEIGHT_DECAY_* key or DECAY_MULT: tools/explain_solver.py shows each parameter's)")
        raise FloatingPointError(f"{owner}{what}{where}; lower {keys}.BASE_LR, enable {keys}.CLIP_GRADIENTS "
                                 f"or skip such steps with SOLVER.SKIP_NONFINITE")

    def metrics(self) -> Dict[str, float]:
        """``grad_norm`` when the last step measured it, ``nonfinite_steps`` with
        ``skip_nonfinite``, ``skipped_steps`` when scaled (as of the last read)."""
        metrics: Dict[str, float] = {}
        if self.last_grad_norm is not None:
            metrics["grad_norm"] = self.last_grad_norm
        if self.skip_nonfinite:
            metrics["nonfinite_steps"] = self.nonfinite_steps
        if self.scaled:
            metrics["skipped_steps"] = self.skipped_steps
        return metrics

    def state_dict(self) -> Dict[str, Any]:
        """The counts (read back first by the caller)."""
        return {"skipped_steps": self.skipped_steps, "nonfinite_steps": self.nonfinite_steps,
                "nonfinite_in_a_row": self.nonfinite_in_a_row}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restore the counts (KeyError naming a missing one); pending steps are dropped."""
        self.skipped_steps = int(state_dict["skipped_steps"])
        self.nonfinite_steps = int(state_dict["nonfinite_steps"])
        self.nonfinite_in_a_row = int(state_dict["nonfinite_in_a_row"])
        self.pending = []
        self.last_scale = None
