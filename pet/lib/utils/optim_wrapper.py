"""The step seam: what happens between a micro-batch's loss and the parameter update.

``OptimWrapper`` (after MMEngine's optimizer wrapper) is the one place that knows about loss
scaling (``torch.amp.GradScaler``), autocast, gradient accumulation, DDP's ``no_sync`` and
skipped steps. The trainer calls it once per micro-batch::

    with optim_wrapper.optim_context(model):
        loss = loss_fn(model(inputs), targets)
    loss_value = optim_wrapper.update_params(loss, iteration)

Clipping is not done here: Pet's clipped optimizers clip inside ``optimizer.step()``, which
``GradScaler.step`` calls after unscaling (or hands the scale to a fused kernel), so every
combination stays correct without an unscale pass of the wrapper's own.
"""
import contextlib
import math
from typing import Any, ContextManager, Dict, List, Optional

import torch
import torch.distributed as dist
from torch import nn
from yacs.config import CfgNode

from pet.lib.utils.grad_check import GradientCheck, host_floats

# One instance serves every step: entering it allocates nothing.
_NULL_CONTEXT = contextlib.nullcontext()


class OptimWrapper:
    """Backward, accumulation, loss scaling and the optimizer step of a training loop.

    Args:
        optimizer: the torch optimizer (possibly one of Pet's clipped ones).
        accumulation_steps: micro-batches per optimizer step (k); each loss is divided by k,
            so k micro-batches of size b step like one batch of size k * b.
        scaler: a ``torch.amp.GradScaler`` for float16 training; None (or a disabled one): no
            loss scaling.
        autocast_dtype: the dtype of ``torch.autocast`` around the forward pass; None: none.
        device_type: the device type autocast runs on ("cpu", "cuda", ...).
        skip_nonfinite: how many non-finite steps in a row are skipped (0: the first one
            raises FloatingPointError); see ``update_params``.

    Raises:
        ValueError when ``accumulation_steps`` is below 1.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, accumulation_steps: int = 1,
                 scaler: Optional[torch.amp.GradScaler] = None,
                 autocast_dtype: Optional[torch.dtype] = None, device_type: str = "cpu",
                 skip_nonfinite: int = 0) -> None:
        if int(accumulation_steps) != accumulation_steps or accumulation_steps < 1:
            raise ValueError(f"accumulation_steps: expected an integer >= 1, got {accumulation_steps!r}")
        self.optimizer = optimizer
        self.accumulation_steps = int(accumulation_steps)
        # A disabled scaler would only pass calls through: treat it as none, so the loss check
        # (which a scaler replaces by skipping) stays on.
        self.scaler = scaler if scaler is not None and scaler.is_enabled() else None
        self.autocast_dtype = autocast_dtype
        self.device_type = device_type
        # Micro-batches whose gradients are accumulated and wait for the next step (0 .. k-1).
        self.micro_batches = 0
        # Steps the scaler skipped because the gradients held inf or nan.
        self.skipped_steps = 0
        self.skip_nonfinite = int(skip_nonfinite)
        # Steps skipped for a non-finite loss or gradients (SOLVER.SKIP_NONFINITE), and how
        # many of the last steps were in a row.
        self.nonfinite_steps = 0
        self._nonfinite_in_a_row = 0
        # The total 2-norm of the last step's (unscaled) gradients: measured when asked
        # (``update_params``'s measure_grad_norm) and, without a scaler, whenever they were not
        # finite; else None.
        self.last_grad_norm: Optional[float] = None
        # The scale after the last update: a smaller one after the next update means a skip.
        self._last_scale: Optional[float] = None
        # The cycle's divided losses so far, read (and added) once, when the cycle steps.
        self._cycle_losses: List[torch.Tensor] = []
        self._gradient_check = GradientCheck(optimizer)
        # The model of the last optim_context, and whether it has DDP's no_sync.
        self._sync_model: Optional[nn.Module] = None
        self._model_has_no_sync = False

    def is_last_micro_batch(self) -> bool:
        """Whether the next ``update_params`` call ends an accumulation cycle (and steps)."""
        return self.micro_batches + 1 >= self.accumulation_steps

    def optim_context(self, model: nn.Module) -> ContextManager:
        """The context of a micro-batch's forward pass: autocast when ``autocast_dtype`` is set,
        and ``model.no_sync()`` (DDP) unless this micro-batch ends the cycle, so gradients are
        all-reduced once per step rather than once per micro-batch."""
        # hasattr on an nn.Module without the attribute costs microseconds (it builds an
        # AttributeError): asked once per model.
        skip_sync = not self.is_last_micro_batch() and self._has_no_sync(model)
        if self.autocast_dtype is None and not skip_sync:
            return _NULL_CONTEXT
        return self._forward_context(model, skip_sync)

    def _has_no_sync(self, model: nn.Module) -> bool:
        if self._sync_model is not model:  # asked once per model
            self._sync_model, self._model_has_no_sync = model, hasattr(model, "no_sync")
        return self._model_has_no_sync

    @contextlib.contextmanager
    def _forward_context(self, model: nn.Module, skip_sync: bool):
        with contextlib.ExitStack() as stack:
            if skip_sync:
                stack.enter_context(model.no_sync())
            if self.autocast_dtype is not None:
                stack.enter_context(torch.autocast(self.device_type, dtype=self.autocast_dtype))
            yield

    def update_params(self, loss: torch.Tensor, iteration: Optional[int] = None,
                      measure_grad_norm: bool = True) -> Optional[float]:
        """Backward of ``loss / k`` (scaled when there is a scaler); every k-th call, the
        optimizer step and ``zero_grad``.

        Returns, on the call that steps, the step's loss on this process (the mean of the
        cycle's k losses); None on the other calls. ``iteration`` only names the iteration in
        error messages. Under torch.distributed nothing here communicates beyond DDP's own
        gradient all-reduce: the decision to step is taken from what every process holds alike.

        A step is non-finite when an element of its gradients is (identical on every process
        after DDP averaged them), or, in a single process, its loss. Without a scaler such a
        step is never taken: it raises FloatingPointError, or, with ``skip_nonfinite`` N > 0,
        is skipped and counted in ``nonfinite_steps`` up to N in a row. With a scaler, the
        scaler checks the gradients (a non-finite loss gives non-finite gradients) and skips
        such steps itself, counted in ``skipped_steps``.

        The gradients' total 2-norm (unscaled) is measured when ``measure_grad_norm``
        (``last_grad_norm``, else None); without a scaler the other steps only check that the
        gradients are finite, a cheaper pass (the trainer measures on logged iterations only).
        """
        divided = loss / self.accumulation_steps if self.accumulation_steps > 1 else loss
        (divided if self.scaler is None else self.scaler.scale(divided)).backward()
        self.micro_batches += 1
        self._cycle_losses.append(divided.detach())
        if self.micro_batches < self.accumulation_steps:
            return None
        losses, self._cycle_losses = self._cycle_losses, []
        if self.scaler is not None:  # the scaler checks the gradients, and skips
            loss_value = sum(host_floats(losses))
            if measure_grad_norm:  # of the gradients still multiplied by this step's scale
                norm = self._gradient_check.total_norm()
                self.last_grad_norm = None if norm is None else norm.item() / self.scaler.get_scale()
            self.step()
        else:
            if measure_grad_norm:
                loss_value, self.last_grad_norm, finite_grads = self._gradient_check.norm(losses)
            else:
                loss_value, finite_grads = self._gradient_check.finite(losses)
                # Measured only for what the error message and the metrics show of it.
                self.last_grad_norm = None if finite_grads else self._gradient_check.total_norm().item()
            distributed = dist.is_available() and dist.is_initialized()
            if finite_grads and (distributed or math.isfinite(loss_value)):
                self._nonfinite_in_a_row = 0
                self.step()
            else:
                self._skip_nonfinite(loss_value, iteration)
        self.zero_grad()
        return loss_value

    def _skip_nonfinite(self, loss_value: float, iteration: Optional[int]) -> None:
        """Drop a non-finite step's gradients, or raise when no more may be skipped."""
        self.micro_batches = 0
        self._nonfinite_in_a_row += 1
        if self._nonfinite_in_a_row <= self.skip_nonfinite:
            self.nonfinite_steps += 1
            return
        where = "" if iteration is None else f" at iteration {iteration}"
        what = (f"loss became {loss_value}" if not math.isfinite(loss_value)
                else f"gradients became non-finite (norm {self.last_grad_norm})")
        if self.skip_nonfinite:
            what += f" for {self._nonfinite_in_a_row} steps in a row (SOLVER.SKIP_NONFINITE {self.skip_nonfinite})"
        self._nonfinite_in_a_row = 0
        raise FloatingPointError(f"{what}{where}; lower SOLVER.OPTIMIZER.BASE_LR, enable "
                                 f"SOLVER.OPTIMIZER.CLIP_GRADIENTS or skip such steps with "
                                 f"SOLVER.SKIP_NONFINITE")

    def step(self) -> None:
        """Step the optimizer on the accumulated gradients and start a new cycle; with a scaler,
        through ``scaler.step`` and ``scaler.update`` (a step with inf/nan gradients is skipped
        and counted in ``skipped_steps``)."""
        self.micro_batches = 0
        if self.scaler is None:
            self.optimizer.step()
            return
        before = self._last_scale if self._last_scale is not None else self.scaler.get_scale()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        # The scale shrinks exactly when the step found inf/nan gradients (and was skipped).
        self._last_scale = self.scaler.get_scale()
        if self._last_scale < before:
            self.skipped_steps += 1

    @property
    def loss_scale(self) -> Optional[float]:
        """The scaler's scale after the last step (read once per step), None without one."""
        if self.scaler is None:
            return None
        if self._last_scale is None:
            self._last_scale = self.scaler.get_scale()
        return self._last_scale

    def zero_grad(self) -> None:
        """Drop the gradients (set them to None: the next backward writes instead of adding)."""
        if type(self.optimizer).zero_grad is not torch.optim.Optimizer.zero_grad:
            self.optimizer.zero_grad(set_to_none=True)  # an optimizer's own
            return
        # What torch's zero_grad(set_to_none=True) does, over the params grouped once.
        for _, params in self._gradient_check.params_by_device_and_dtype():
            for param in params:
                param.grad = None

    def state_dict(self) -> Dict[str, Any]:
        """The wrapper's progress as plain values (``torch.load(weights_only=True)`` loads it):
        the micro-batch counter, the skipped steps (by the scaler, and for non-finite values)
        and the scaler's state when there is one."""
        state: Dict[str, Any] = {"micro_batches": self.micro_batches,
                                 "skipped_steps": self.skipped_steps,
                                 "nonfinite_steps": self.nonfinite_steps,
                                 "nonfinite_in_a_row": self._nonfinite_in_a_row}
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restore ``state_dict()``'s values. A scaler's state is loaded when both the saved run
        and this one have a scaler; turning loss scaling on at resume starts a fresh scale.

        Raises:
            KeyError naming the missing entry.
        """
        self.micro_batches = int(state_dict["micro_batches"])
        self.skipped_steps = int(state_dict["skipped_steps"])
        self.nonfinite_steps = int(state_dict["nonfinite_steps"])
        self._nonfinite_in_a_row = int(state_dict["nonfinite_in_a_row"])
        if self.scaler is not None and "scaler" in state_dict:
            self.scaler.load_state_dict(state_dict["scaler"])
        self._last_scale = None


AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def build_optim_wrapper(optimizer: torch.optim.Optimizer, solver: CfgNode,
                        device_type: str = "cpu") -> OptimWrapper:
    """The step seam of ``SOLVER`` (ACCUMULATION_STEPS, AMP, SKIP_NONFINITE; already validated)
    on a device: float16 gets a ``GradScaler``, bfloat16 autocast alone (its range needs no loss
    scaling)."""
    autocast_dtype = AUTOCAST_DTYPES[solver.AMP.DTYPE] if solver.AMP.ENABLED else None
    scaler = torch.amp.GradScaler(device_type) if autocast_dtype is torch.float16 else None
    return OptimWrapper(optimizer, accumulation_steps=solver.ACCUMULATION_STEPS, scaler=scaler,
                        autocast_dtype=autocast_dtype, device_type=device_type,
                        skip_nonfinite=solver.SKIP_NONFINITE)
