"""How the step seam calls ``optimizer.step()``: without torch's per-step wrappers when nothing
would see them.

torch runs every ``optimizer.step()`` through its hook runner (a profiler range, the step pre-
and post-hooks) and, once an lr scheduler is built, through the scheduler's wrapper that records
the call. On the default job these layers were about 1% of train_net's loop (lock-step against
the bare loop, which pays them too). With no step hook registered (globally or on the
optimizer), no profiler recording and no patch of ``optimizer.step`` but a scheduler's, the seam
calls the class's step itself: the same update (under the same no_grad wrapper), with the
scheduler's record set as its wrapper sets it.
"""
import torch
from torch.optim import optimizer as torch_optimizer

from pet.lib.utils.grad_clip import call_step_unhooked

# torch's registries of global step hooks (dicts, changed in place), and whether a profiler
# records; a torch without them: always the wrapped call.
_GLOBAL_HOOKS = (getattr(torch_optimizer, "_global_optimizer_pre_hooks", None),
                 getattr(torch_optimizer, "_global_optimizer_post_hooks", None))
_profiler_enabled = getattr(torch._C._autograd, "_profiler_enabled", lambda: True)


def optimizer_step(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.step()``; the class's step without the wrappers when nothing observes them."""
    if not unobserved(optimizer):
        optimizer.step()
        return
    record_step_call(optimizer)
    call_step_unhooked(type(optimizer).step.__get__(optimizer))


def record_step_call(optimizer: torch.optim.Optimizer) -> None:
    """Record what an lr scheduler's patch of ``optimizer.step`` records when the step runs.
    The seam also records a step it skipped (not finite, or GradScaler's overflow): the
    schedule is a function of the iteration, which the step belongs to either way, and torch's
    scheduler would otherwise warn at its first step that it ran before the optimizer's and
    skips a value of the schedule (GradScaler's skipped first step is that warning's known
    false alarm)."""
    optimizer._opt_called = True


def unobserved(optimizer: torch.optim.Optimizer) -> bool:
    """Whether a step of ``optimizer`` runs no hook, is not profiled and is patched by nothing
    but an lr scheduler's record (asked at every step: a hook or a profiler may start any time)."""
    class_step = type(optimizer).step
    if not getattr(class_step, "hooked", False) or None in _GLOBAL_HOOKS:
        return False
    patched = optimizer.__dict__.get("step")
    if patched is not None and not (getattr(patched, "_wrapped_by_lr_sched", False)
                                    and getattr(patched, "__wrapped__", None) is class_step):
        return False
    return not (_GLOBAL_HOOKS[0] or _GLOBAL_HOOKS[1] or getattr(optimizer, "_optimizer_step_pre_hooks", True)
                or getattr(optimizer, "_optimizer_step_post_hooks", True) or _profiler_enabled())
