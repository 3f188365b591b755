"""Tests of pet/lib/utils/step_call.py: the seam's step skips torch's wrappers only when nothing
observes them, and updates exactly as ``optimizer.step()``."""
import copy
import warnings

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from pet.lib.utils.optim_wrapper import OptimWrapper
from pet.lib.utils.step_call import optimizer_step, unobserved


def model_and_optimizer(fused=True):
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01, fused=fused)


def test_the_direct_step_updates_as_optimizer_step_and_records_the_call_for_the_scheduler():
    model, optimizer = model_and_optimizer()
    reference, reference_optimizer = model_and_optimizer()
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 2)
    reference_scheduler = torch.optim.lr_scheduler.StepLR(reference_optimizer, 2)
    assert unobserved(optimizer)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "lr_scheduler.step() before optimizer.step()"
        for _ in range(3):
            optimizer_step(optimizer)
            reference_optimizer.step()
            scheduler.step()
            reference_scheduler.step()
    assert optimizer._opt_called
    for a, b in zip(model.parameters(), reference.parameters()):
        assert torch.equal(a, b)
    assert all(torch.equal(optimizer.state[a]["momentum_buffer"], reference_optimizer.state[b]["momentum_buffer"])
               for a, b in zip(model.parameters(), reference.parameters()))


def test_hooks_a_profiler_and_a_patched_step_get_the_wrapped_call():
    model, optimizer = model_and_optimizer(fused=False)
    calls = []
    handle = optimizer.register_step_pre_hook(lambda *args: calls.append("pre"))
    assert not unobserved(optimizer)
    optimizer_step(optimizer)
    handle.remove()
    handle = optimizer.register_step_post_hook(lambda *args: calls.append("post"))
    optimizer_step(optimizer)
    handle.remove()
    for register in (register_optimizer_step_pre_hook, register_optimizer_step_post_hook):
        handle = register(lambda *args: calls.append("global"))
        optimizer_step(optimizer)
        handle.remove()
    assert calls == ["pre", "post", "global", "global"]
    assert unobserved(optimizer)

    with torch.profiler.profile() as profile:
        optimizer_step(optimizer)
    assert any(e.name == "Optimizer.step#SGD.step" for e in profile.events())

    patched = copy.copy(optimizer.step)
    optimizer.step = lambda: calls.append("patched")
    assert not unobserved(optimizer)
    optimizer_step(optimizer)
    assert calls[-1] == "patched"
    optimizer.step = patched


@pytest.mark.parametrize("implementation", [{"foreach": False}, {"foreach": True}, {"fused": True}])
@pytest.mark.parametrize("seam", ["gradscaler", "skip_nonfinite"])
def test_a_skipped_first_step_leaves_torchs_scheduler_without_its_order_warning(implementation, seam):
    # torch's scheduler warns at its first step when optimizer.step has not run: GradScaler's
    # skipped first step (an overflow at the initial scale) is the warning's known false alarm.
    model = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, **implementation)
    if seam == "gradscaler":
        wrapper = OptimWrapper(optimizer, scaler=torch.amp.GradScaler("cpu"))
    else:
        wrapper = OptimWrapper(optimizer, skip_nonfinite=1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda iteration: 0.5 ** iteration)
    before = copy.deepcopy(model.state_dict())
    wrapper.update_params(model(torch.ones(1, 2)).sum() * float("inf"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metrics = wrapper.read_back()
        scheduler.step()
    assert metrics.get("skipped_steps", metrics.get("nonfinite_steps")) == 1
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # skipped
    assert optimizer.param_groups[0]["lr"] == 0.05  # the schedule's next value, none skipped
