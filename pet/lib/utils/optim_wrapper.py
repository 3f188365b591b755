"""The step seam: what happens between a micro-batch's loss and the parameter update.

``OptimWrapper`` (after MMEngine's optimizer wrapper) is the one place that knows about loss
scaling (``torch.amp.GradScaler``), autocast, gradient accumulation, DDP's ``no_sync`` and
skipped steps. The trainer calls it once per micro-batch::

    with optim_wrapper.optim_context(model):
        loss = loss_fn(model(inputs), targets)
    step_loss = optim_wrapper.update_params(loss, iteration)  # a device tensor, not read
    ...
    metrics = optim_wrapper.read_back()  # on logged iterations: the seam's one host read

What it keeps on the device and when it reads it back is decided here: a step that logs
nothing reads no tensor value (the loss, the non-finite flag, the skip counts and the loss
scale wait on the device), so the host keeps queuing work while the device computes. Torch's
fused kernels take the step's non-finite flag as ``found_inf`` and skip the update on the
device; an optimizer without one reads its flag once per step, as GradScaler does for it.

Clipping is not done here: Pet's clipped optimizers clip inside ``optimizer.step()``, which
``GradScaler.step`` calls after unscaling (or hands the scale to a fused kernel), so every
combination stays correct without an unscale pass of the wrapper's own.
"""
import contextlib
from typing import Any, ContextManager, Dict, List, Optional

import torch
import torch.distributed as dist
from torch import nn
from yacs.config import CfgNode

from pet.lib.config.errors import ConfigError
from pet.lib.utils.compiled_step import compiled_step, start_momentum_buffers
from pet.lib.utils.grad_check import FlagSlots, GradientCheck
from pet.lib.utils.shards import ShardedGradScaler, optimizer_shard_group
from pet.lib.utils.step_call import optimizer_step, record_step_call
from pet.lib.utils.step_record import PendingStep, StepRecord, decay_overshoot

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
        name: the optimizer's name in SOLVER.OPTIMIZERS (its errors name its keys); "" for
            SOLVER.OPTIMIZER's.

    Raises:
        ValueError when ``accumulation_steps`` is below 1.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, accumulation_steps: int = 1,
                 scaler: Optional[torch.amp.GradScaler] = None,
                 autocast_dtype: Optional[torch.dtype] = None, device_type: str = "cpu",
                 skip_nonfinite: int = 0, name: str = "") -> None:
        if int(accumulation_steps) != accumulation_steps or accumulation_steps < 1:
            raise ValueError(f"accumulation_steps: expected an integer >= 1, got {accumulation_steps!r}")
        self.optimizer = optimizer
        # The compiled form of optimizer.step (SOLVER.OPTIMIZER.COMPILE, compiled_step.py), or
        # None: optimizer.step, looked up at each call (a torch scheduler built later wraps it
        # to record that the optimizer stepped; see step_call.py).
        self._compiled_step = None
        self.accumulation_steps = int(accumulation_steps)
        # A disabled scaler would only pass calls through: treat it as none, so the loss check
        # (which a scaler replaces by skipping) stays on.
        self.scaler = scaler if scaler is not None and scaler.is_enabled() else None
        self.autocast_dtype = autocast_dtype
        self.device_type = device_type
        # Micro-batches whose gradients are accumulated and wait for the next step (0 .. k-1).
        self.micro_batches = 0
        self.skip_nonfinite = int(skip_nonfinite)
        # Whether an update_params call that does not say measures the gradients' norm, and
        # the iteration its errors name (the trainer sets both for a model's own train_step).
        self.measure_grad_norm = True
        self.iteration: Optional[int] = None
        # The cycle's divided losses so far, added on the device when the cycle steps.
        self._cycle_losses: List[torch.Tensor] = []
        # The steps since the last read_back, with their device-held values, and the counts.
        self._record = StepRecord(self.skip_nonfinite, scaled=self.scaler is not None, name=name,
                                  cause=lambda: decay_overshoot(self.optimizer))
        self._gradient_check = GradientCheck(optimizer)
        self._flags: Optional[FlagSlots] = None  # the steps' non-finite flags (no scaler)
        # Whether the steps run under torch.distributed: a run's process group is set up before
        # its first step and lasts it (asked once, with the flags).
        self._distributed = False
        # Whether a fused SGD with momentum may still allocate its buffers on a skipped step.
        self._watch_momentum = isinstance(optimizer, torch.optim.SGD) and any(
            group.get("fused") and group.get("momentum") for group in optimizer.param_groups)
        # The model of the last optim_context, and how it skips a gradient reduction.
        self._sync_model: Optional[nn.Module] = None
        self._model_sync_kind: Optional[str] = None

    def is_last_micro_batch(self) -> bool:
        """Whether the next ``update_params`` call ends an accumulation cycle (and steps)."""
        return self.micro_batches + 1 >= self.accumulation_steps

    def optim_context(self, model: nn.Module) -> ContextManager:
        """The context of a micro-batch's forward pass: autocast when ``autocast_dtype`` is set,
        and ``model.no_sync()`` (DDP) unless this micro-batch ends the cycle, so gradients are
        all-reduced once per step rather than once per micro-batch (FSDP2: reduce-scattered)."""
        # hasattr on an nn.Module without the attribute costs microseconds (it builds an
        # AttributeError): asked once per model.
        sync = self._sync_kind(model)
        if sync == "fsdp":
            if self.accumulation_steps > 1:  # read by FSDP2 at this micro-batch's backward
                model.set_requires_gradient_sync(self.is_last_micro_batch())
            sync = None
        skip_sync = sync == "ddp" and not self.is_last_micro_batch()
        if self.autocast_dtype is None and not skip_sync:
            return _NULL_CONTEXT
        return self._forward_context(model, skip_sync)

    def _sync_kind(self, model: nn.Module) -> Optional[str]:
        """How ``model`` skips the gradient reduction of a micro-batch: "ddp" (``no_sync()``),
        "fsdp" (FSDP2's ``set_requires_gradient_sync``: the reduce-scatter is skipped and the
        unsharded gradients accumulate), or None."""
        if self._sync_model is not model:  # asked once per model
            kind = ("ddp" if hasattr(model, "no_sync") else
                    "fsdp" if hasattr(model, "set_requires_gradient_sync") else None)
            self._sync_model, self._model_sync_kind = model, kind
        return self._model_sync_kind

    @contextlib.contextmanager
    def _forward_context(self, model: nn.Module, skip_sync: bool):
        with contextlib.ExitStack() as stack:
            if skip_sync:
                stack.enter_context(model.no_sync())
            if self.autocast_dtype is not None:
                stack.enter_context(torch.autocast(self.device_type, dtype=self.autocast_dtype))
            yield

    def update_params(self, loss: torch.Tensor, iteration: Optional[int] = None,
                      measure_grad_norm: Optional[bool] = None) -> Optional[torch.Tensor]:
        """Backward of ``loss / k`` (scaled when there is a scaler); every k-th call, the
        optimizer step and ``zero_grad``.

        Returns, on the call that steps, the step's loss on this process (the sum of the
        cycle's k divided losses: their mean) as a detached 0-dim tensor on the loss's device;
        None on the other calls. ``iteration`` names the step in error messages (None: the
        wrapper's ``iteration``). Nothing here reads a tensor's value on the host (see
        ``read_back``) unless the optimizer has no fused kernel: then, as GradScaler does for
        such optimizers, one flag per step. Under torch.distributed nothing communicates
        beyond DDP's own gradient all-reduce: the step is decided from what every process
        holds alike.

        A step is non-finite when an element of its gradients is (identical on every process
        after DDP averaged them), or, in a single process, its loss. Such a step changes no
        weight and no optimizer state: without a scaler the fused kernel takes the step's flag
        as ``found_inf`` (GradScaler's protocol) and skips the update on the device, other
        kernels are not called. Up to ``skip_nonfinite`` such steps in a row are counted in
        ``nonfinite_steps``; one more raises FloatingPointError at the next ``read_back``
        (at once for optimizers without a fused kernel). With a scaler, the scaler checks the
        gradients (a non-finite loss gives non-finite gradients) and skips such steps itself,
        counted in ``skipped_steps``.

        With ``measure_grad_norm`` the gradients' total 2-norm (unscaled) is computed on the
        device and read back as ``grad_norm``; None: the wrapper's ``measure_grad_norm``
        (True, unless the trainer set it for a model's own ``train_step``: it measures on
        logged iterations only).
        """
        divided = loss / self.accumulation_steps if self.accumulation_steps > 1 else loss
        self.backward(divided)
        self.micro_batches += 1
        self._cycle_losses.append(divided.detach())
        if self.micro_batches < self.accumulation_steps:
            return None
        losses, self._cycle_losses = self._cycle_losses, []
        step_loss = losses[0] if len(losses) == 1 else torch.stack([l.float() for l in losses]).sum()
        measure = self.measure_grad_norm if measure_grad_norm is None else measure_grad_norm
        grad_norm = self._grad_norm() if measure else None
        step = PendingStep(self.iteration if iteration is None else iteration, step_loss, grad_norm)
        self._record.pending.append(step)
        if self.scaler is not None:
            step.nonfinite = self._scaled_step()
        else:
            self._guarded_step(step)
        self.zero_grad()
        return step_loss

    def _grad_norm(self) -> Optional[torch.Tensor]:
        """The total norm of the unscaled gradients, on the device (None without gradients)."""
        norm = self._gradient_check.total_norm()
        if norm is None or self.scaler is None:
            return norm
        return norm / self.scaler._get_scale_async().to(norm.device)  # still multiplied by the scale

    def _guarded_step(self, step: "PendingStep") -> None:
        """Check the gradients (and the loss) on the device, then step unless they are not
        finite: on the device where the optimizer takes ``found_inf``, else after one read."""
        self.micro_batches = 0
        if self._flags is None:
            self._flags = FlagSlots(self._gradient_check.first_device())
            self._distributed = dist.is_available() and dist.is_initialized()
        losses = [] if self._distributed else [step.loss if step.loss.device == self._flags.device
                                               else step.loss.to(self._flags.device)]
        step.nonfinite = self._gradient_check.raise_if_nonfinite(self._flags.take(), losses)
        if getattr(self.optimizer, "_step_supports_amp_scaling", False):
            allocates_momentum = self._momentum_unset()
            self.optimizer.found_inf = step.nonfinite
            try:
                optimizer_step(self.optimizer)
            finally:
                del self.optimizer.found_inf
            if allocates_momentum:
                self._after_momentum_allocated(step.nonfinite)
            return
        if not bool(step.nonfinite):  # the one read of such an optimizer's step
            self._optimizer_step()
            return
        record_step_call(self.optimizer)  # a skipped step
        if step.grad_norm is None:  # for the error message and the metrics
            step.grad_norm = self._gradient_check.total_norm()
        self.read_back()  # raises when too many were non-finite in a row

    def _optimizer_step(self) -> None:
        if self._compiled_step is not None:
            self._compiled_step()
        else:
            optimizer_step(self.optimizer)

    def _momentum_unset(self) -> bool:
        """Before a step of a fused SGD with momentum whose buffers do not exist yet, make
        sure a skipped first step cannot leave them uninitialised (torch's fused SGD allocates
        them with empty_like and skips their initialisation with the update). Without
        dampening they start at zero now: the first step's ``momentum * 0 + grad`` is exactly
        torch's first ``buf = grad``, and a skipped one leaves zeros. With dampening, returns
        True: the step's flag is read once after it (``_after_momentum_allocated``)."""
        if not self._watch_momentum:
            return False
        started = start_momentum_buffers(self.optimizer)
        if started == "dampened":
            return True
        self._watch_momentum = False  # made by an earlier step, loaded, or started at zero now
        return False

    def _after_momentum_allocated(self, nonfinite: torch.Tensor) -> None:
        """After the first step of a fused SGD with momentum and dampening, one read: a
        skipped first step drops the buffers it left uninitialised (the next step is a first
        step again)."""
        if not bool(nonfinite):
            self._watch_momentum = False
            return
        for group in self.optimizer.param_groups:
            for param in group["params"]:
                self.optimizer.state[param].pop("momentum_buffer", None)

    def _scaled_step(self) -> torch.Tensor:
        """``scaler.step`` and ``scaler.update``; returns the scaler's flag of the step (1 when
        it found inf/nan gradients and skipped the step), read back with the others."""
        self.micro_batches = 0
        allocates_momentum = self._momentum_unset()
        self.scaler.step(self.optimizer)
        record_step_call(self.optimizer)  # a step the scaler skipped too
        found = list(self.scaler._found_inf_per_device(self.optimizer).values())
        self.scaler.update()
        nonfinite = found[0] if len(found) == 1 else torch.stack([f.to(found[0].device) for f in found]).sum()
        if allocates_momentum:
            self._after_momentum_allocated(nonfinite)
        return nonfinite

    def step(self) -> None:
        """Step the optimizer on the accumulated gradients and start a new cycle; with a scaler,
        through ``scaler.step`` and ``scaler.update`` (a step with inf/nan gradients is skipped
        and counted in ``skipped_steps``)."""
        if self.scaler is None:
            self.micro_batches = 0
            self._optimizer_step()
            return
        self._record.pending.append(PendingStep(None, None, None, self._scaled_step()))

    def read_back(self) -> Dict[str, float]:
        """The one host read of the step seam: the device-held values of the steps since the
        last call (their non-finite flags, losses for messages, the measured gradient norm and
        the loss scale), read in one sync, and the counts they update.

        Returns the step's metrics: ``grad_norm`` when the last step measured it,
        ``nonfinite_steps`` with ``skip_nonfinite``, ``loss_scale`` and ``skipped_steps`` with a
        scaler. Raises FloatingPointError when more than ``skip_nonfinite`` steps in a row were
        not finite, naming the first step past the limit (its weights were left unchanged).
        The trainer calls it on logged iterations; ``state_dict`` calls it, so no checkpoint is
        taken from a run that had to stop.
        """
        if self._record.pending:
            scale = self.scaler._get_scale_async() if self.scaler is not None else None
            try:
                self._record.read_back(scale)
            finally:
                if self._flags is not None:
                    self._flags.reset()
        metrics = self._record.metrics()
        if self.scaler is not None:
            metrics["loss_scale"] = self.loss_scale
        return metrics

    @property
    def last_grad_norm(self) -> Optional[float]:
        """The total 2-norm of the last step's unscaled gradients when that step measured it,
        else None (reads back)."""
        self.read_back()
        return self._record.last_grad_norm

    @property
    def skipped_steps(self) -> int:
        """Steps the scaler skipped because the gradients held inf or nan (reads back)."""
        self.read_back()
        return self._record.skipped_steps

    @property
    def nonfinite_steps(self) -> int:
        """Steps skipped for a non-finite loss or gradients, SOLVER.SKIP_NONFINITE (reads back)."""
        self.read_back()
        return self._record.nonfinite_steps

    @property
    def loss_scale(self) -> Optional[float]:
        """The scaler's scale after the last step (as last read back), None without one."""
        if self.scaler is None:
            return None
        if self._record.last_scale is None:
            self._record.last_scale = self.scaler.get_scale()
        return self._record.last_scale

    def backward(self, loss: torch.Tensor, **kwargs) -> None:
        """``loss.backward(**kwargs)``, the loss multiplied by the scaler's scale first when
        there is one (MMEngine's ``backward``; ``update_params`` divides by k before)."""
        (loss if self.scaler is None else self.scaler.scale(loss)).backward(**kwargs)

    @property
    def param_groups(self) -> List[Dict[str, Any]]:
        """The optimizer's param groups."""
        return self.optimizer.param_groups

    def get_lr(self) -> Dict[str, List[float]]:
        """``{'lr': [the lr of each param group]}``, as MMEngine's wrapper returns it."""
        return {"lr": [group["lr"] for group in self.optimizer.param_groups]}

    def get_momentum(self) -> Dict[str, List[float]]:
        """``{'momentum': [...]}`` with each group's ``momentum`` (SGD, RMSprop), an Adam-family
        group's ``betas[0]``, else 0, as MMEngine's wrapper returns it."""
        return {"momentum": [group["momentum"] if "momentum" in group
                             else group["betas"][0] if "betas" in group else 0
                             for group in self.optimizer.param_groups]}

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
        self.read_back()  # raises when the run had to stop: no checkpoint of it
        state: Dict[str, Any] = {"micro_batches": self.micro_batches, **self._record.state_dict()}
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
        self._record.load_state_dict(state_dict)
        if self.scaler is not None and "scaler" in state_dict:
            self.scaler.load_state_dict(state_dict["scaler"])


AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def build_optim_wrapper(optimizer: torch.optim.Optimizer, solver: CfgNode,
                        device_type: str = "cpu", name: str = "") -> OptimWrapper:
    """The step seam of ``SOLVER`` (ACCUMULATION_STEPS, AMP, SKIP_NONFINITE; already validated)
    on a device: float16 gets a ``GradScaler``, bfloat16 autocast alone (its range needs no loss
    scaling). Sharded (FSDP2) parameters: no autocast (the model's MixedPrecisionPolicy casts)
    and a ``ShardedGradScaler`` for float16. ``name``: the optimizer's in SOLVER.OPTIMIZERS."""
    autocast_dtype = AUTOCAST_DTYPES[solver.AMP.DTYPE] if solver.AMP.ENABLED else None
    scaler = torch.amp.GradScaler(device_type) if autocast_dtype is torch.float16 else None
    shards = optimizer_shard_group(optimizer)
    if shards is not None:  # FSDP2: its MixedPrecisionPolicy casts, no autocast
        scaler = ShardedGradScaler(device_type, shards) if scaler is not None else None
        autocast_dtype = None
    wrapper = OptimWrapper(optimizer, accumulation_steps=solver.ACCUMULATION_STEPS, scaler=scaler,
                           autocast_dtype=autocast_dtype, device_type=device_type,
                           skip_nonfinite=solver.SKIP_NONFINITE, name=name)
    if solver.OPTIMIZER.COMPILE:
        if scaler is not None:
            raise ConfigError("SOLVER.OPTIMIZER.COMPILE: not supported with SOLVER.AMP.DTYPE float16 (its "
                              "GradScaler steps the optimizer itself); use bfloat16 or COMPILE False")
        wrapper._compiled_step = compiled_step(optimizer)
    return wrapper


# MMEngine's container of several wrappers, importable beside OptimWrapper.
from pet.lib.utils.optim_wrapper_dict import OptimWrapperDict  # noqa: E402,F401
