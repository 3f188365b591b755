"""Tests of pet/lib/utils/optim_wrapper.py against independent references: a hand-written loop,
one large batch for accumulation, and torch's documented AMP recipe for loss scaling."""
import contextlib
import copy
import io
import math

import pytest
import torch
from torch import nn

from pet.lib.config import get_cfg
from pet.lib.utils.optim_wrapper import OptimWrapper
from pet.lib.utils.optimizer import Optimizer


def mlp(seed=0):
    """A model without batch statistics: micro-batches and their union give the same gradient."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))


def batches(count, size, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, 6, generator=gen), torch.randint(0, 3, (size,), generator=gen))
            for _ in range(count)]


def loss_of(model, x, y):
    return nn.functional.cross_entropy(model(x), y)


def clipped_optimizer(model, implementation="loop", clip_type="NORM"):
    cfg = get_cfg()
    cfg.SOLVER.OPTIMIZER.TYPE = "SGD"
    cfg.SOLVER.OPTIMIZER.BASE_LR = 0.1
    cfg.SOLVER.OPTIMIZER.IMPLEMENTATION = implementation
    cfg.SOLVER.OPTIMIZER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.OPTIMIZER.CLIP_GRADIENTS.CLIP_TYPE = clip_type
    cfg.SOLVER.OPTIMIZER.CLIP_GRADIENTS.CLIP_VALUE = 0.05  # small: every step clips
    return Optimizer(model, cfg.SOLVER.OPTIMIZER).build()


def assert_same_params(a, b):
    for (name, x), y in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(x, y), name


@pytest.mark.parametrize("make_optimizer", [
    lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9),
    lambda params: torch.optim.AdamW(params, lr=0.01),
])
def test_one_micro_batch_per_step_equals_a_hand_written_loop_bit_for_bit(make_optimizer):
    reference, model = mlp(), mlp()
    reference_optimizer = make_optimizer(reference.parameters())
    wrapper = OptimWrapper(make_optimizer(model.parameters()))
    for iteration, (x, y) in enumerate(batches(6, 8)):
        loss = loss_of(reference, x, y)
        reference_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        reference_optimizer.step()
        with wrapper.optim_context(model):
            loss_value = wrapper.update_params(loss_of(model, x, y), iteration)
        assert loss_value == loss.item()
        assert all(p.grad is None for p in model.parameters())  # zeroed after the step
    assert_same_params(reference, model)


def test_four_micro_batches_step_like_one_batch_of_their_union():
    reference, model = mlp(), mlp()
    reference_optimizer = torch.optim.SGD(reference.parameters(), lr=0.5, momentum=0.9)
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9),
                           accumulation_steps=4)
    for x, y in batches(3, 32):
        reference_optimizer.zero_grad(set_to_none=True)
        loss_of(reference, x, y).backward()
        reference_optimizer.step()
        before = [p.detach().clone() for p in model.parameters()]
        with torch.no_grad():
            whole_batch_loss = loss_of(model, x, y).item()
        losses = []
        for micro_x, micro_y in zip(x.split(8), y.split(8)):
            assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))  # no step yet
            losses.append(wrapper.update_params(loss_of(model, micro_x, micro_y)))
        # Only the call that steps returns the loss: the mean over the whole batch.
        assert losses[:3] == [None] * 3
        assert losses[3] == pytest.approx(whole_batch_loss, rel=1e-5)
        assert wrapper.micro_batches == 0
        for (name, expected), actual in zip(reference.named_parameters(), model.parameters()):
            torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6, msg=name)


def amp_recipe_step(model, optimizer, scaler, x, y):
    """torch's documented AMP recipe (the "Typical Mixed Precision Training" example)."""
    optimizer.zero_grad()
    with torch.autocast("cpu", dtype=torch.float16):
        loss = loss_of(model, x, y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def make_scaler():
    # growth_interval=1: the scale grows every step, so its state changes along the way.
    return torch.amp.GradScaler("cpu", init_scale=2.0 ** 8, growth_interval=1)


@pytest.mark.parametrize("make_optimizer", [
    pytest.param(lambda model: torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), id="sgd"),
    pytest.param(lambda model: clipped_optimizer(model, "loop", "NORM"), id="clipped-loop-norm"),
    pytest.param(lambda model: clipped_optimizer(model, "fused", "NORM"), id="clipped-fused-norm"),
    pytest.param(lambda model: clipped_optimizer(model, "fused", "FULL_MODEL"), id="clipped-fused-full"),
])
def test_float16_loss_scaling_steps_like_torchs_amp_recipe(make_optimizer):
    reference, model = mlp(), mlp()
    reference_optimizer, reference_scaler = make_optimizer(reference), make_scaler()
    wrapper = OptimWrapper(make_optimizer(model), scaler=make_scaler(), autocast_dtype=torch.float16)
    for x, y in batches(5, 8):
        amp_recipe_step(reference, reference_optimizer, reference_scaler, x, y)
        with wrapper.optim_context(model):
            loss = loss_of(model, x, y)
        wrapper.update_params(loss)
    assert_same_params(reference, model)
    assert wrapper.scaler.get_scale() == reference_scaler.get_scale() == 2.0 ** 13
    assert wrapper.skipped_steps == 0


def test_an_inf_gradient_is_skipped_by_the_scaler_and_counted():
    model = mlp()
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), scaler=make_scaler(),
                           autocast_dtype=torch.float16)
    (x, y), = batches(1, 8)
    wrapper.update_params(loss_of(model, x, y))
    before = copy.deepcopy(model)
    scale = wrapper.scaler.get_scale()
    with wrapper.optim_context(model):
        output = model(x)
    output.register_hook(lambda grad: torch.full_like(grad, math.inf))  # a finite loss, inf grads
    loss_value = wrapper.update_params(nn.functional.cross_entropy(output.float(), y))
    assert math.isfinite(loss_value)
    assert_same_params(before, model)
    assert wrapper.skipped_steps == 1 and wrapper.scaler.get_scale() == scale / 2
    # A non-finite loss under a scaler is skipped too, not raised.
    wrapper.update_params(loss_of(model, x, y) * math.inf)
    assert wrapper.skipped_steps == 2
    assert_same_params(before, model)
    wrapper.update_params(loss_of(model, x, y))
    assert wrapper.skipped_steps == 2  # a good step again


def inf_gradient_loss(model, x, y):
    """A finite loss whose gradients are inf (a backward that overflows)."""
    output = model(x)
    output.register_hook(lambda grad: torch.full_like(grad, math.inf))
    return nn.functional.cross_entropy(output, y)


@pytest.mark.parametrize("bad_loss, message", [
    (lambda model, x, y: loss_of(model, x, y) * math.nan,
     r"^loss became nan at iteration 7; lower SOLVER.OPTIMIZER.BASE_LR, enable "
     r"SOLVER.OPTIMIZER.CLIP_GRADIENTS or skip such steps with SOLVER.SKIP_NONFINITE$"),
    (lambda model, x, y: loss_of(model, x, y) * math.inf, r"^loss became inf at iteration 7; "),
    (inf_gradient_loss, r"^gradients became non-finite \(norm (inf|nan)\) at iteration 7; lower"),
], ids=["nan-loss", "inf-loss", "finite-loss-inf-gradients"])
@pytest.mark.parametrize("measure", [True, False], ids=["norm", "finiteness-only"])
def test_a_non_finite_step_raises_before_the_step_without_a_scaler(bad_loss, message, measure):
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    wrapper = OptimWrapper(optimizer)
    (x, y), = batches(1, 8)
    wrapper.update_params(loss_of(model, x, y), measure_grad_norm=measure)
    before, state = copy.deepcopy(model), copy.deepcopy(optimizer.state_dict())
    with pytest.raises(FloatingPointError, match=message):
        wrapper.update_params(bad_loss(model, x, y), iteration=7, measure_grad_norm=measure)
    assert_same_params(before, model)
    for saved, now in zip(state["state"].values(), optimizer.state_dict()["state"].values()):
        assert torch.equal(saved["momentum_buffer"], now["momentum_buffer"])


@pytest.mark.parametrize("measure", [True, False], ids=["norm", "finiteness-only"])
def test_skip_nonfinite_skips_up_to_n_in_a_row_then_raises(measure):
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    wrapper = OptimWrapper(optimizer, accumulation_steps=2, skip_nonfinite=2)
    update_params = wrapper.update_params
    wrapper.update_params = lambda loss, iteration=None: update_params(loss, iteration, measure)
    (x, y), = batches(1, 8)
    before = copy.deepcopy(model)
    for _ in range(2):  # two cycles, each ending on a non-finite micro-batch
        wrapper.update_params(loss_of(model, x, y))
        assert math.isnan(wrapper.update_params(loss_of(model, x, y) * math.nan))
    assert wrapper.nonfinite_steps == 2 and wrapper.micro_batches == 0
    assert all(p.grad is None for p in model.parameters())  # the skipped gradients are dropped
    assert_same_params(before, model)
    wrapper.update_params(loss_of(model, x, y))
    wrapper.update_params(loss_of(model, x, y))  # a good step ends the run of skips
    assert not torch.equal(next(model.parameters()), next(before.parameters()))
    for _ in range(2):
        wrapper.update_params(loss_of(model, x, y))
        wrapper.update_params(inf_gradient_loss(model, x, y))
    assert wrapper.nonfinite_steps == 4
    assert wrapper.state_dict()["nonfinite_in_a_row"] == 2
    wrapper.update_params(loss_of(model, x, y))
    with pytest.raises(FloatingPointError, match=r"^gradients became non-finite \(norm (inf|nan)\) for 3 "
                                                 r"steps in a row \(SOLVER.SKIP_NONFINITE 2\) at "
                                                 r"iteration 9; "):
        wrapper.update_params(inf_gradient_loss(model, x, y), iteration=9)


def test_last_grad_norm_is_torchs_total_norm_before_the_step():
    reference, model = mlp(), mlp()
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    for x, y in batches(3, 8):
        reference.zero_grad()
        loss_of(reference, x, y).backward()
        expected = torch.nn.utils.get_total_norm([p.grad for p in reference.parameters()]).item()
        with torch.no_grad():
            for p in reference.parameters():
                p -= 0.1 * p.grad
        wrapper.update_params(loss_of(model, x, y))
        assert wrapper.last_grad_norm == pytest.approx(expected, rel=1e-6)


def test_under_a_scaler_the_measured_grad_norm_is_that_of_the_unscaled_gradients():
    reference, model = mlp(), mlp()
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), scaler=make_scaler())
    (x, y), = batches(1, 8)
    loss_of(reference, x, y).backward()
    expected = torch.nn.utils.get_total_norm([p.grad for p in reference.parameters()]).item()
    wrapper.update_params(loss_of(model, x, y), measure_grad_norm=False)
    assert wrapper.last_grad_norm is None
    model.load_state_dict(reference.state_dict())
    wrapper.update_params(loss_of(model, x, y))  # the scale has grown: 2 ** 9
    assert wrapper.last_grad_norm == pytest.approx(expected, rel=1e-6)


def test_steps_checked_for_finiteness_only_equal_a_hand_written_loop_bit_for_bit():
    """The finiteness check (GradScaler's, unscaling by 1) leaves the gradients as they were."""
    reference, model = mlp(), mlp()
    reference_optimizer = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    for x, y in batches(4, 8):
        reference_optimizer.zero_grad(set_to_none=True)
        loss = loss_of(reference, x, y)
        loss.backward()
        reference_optimizer.step()
        assert wrapper.update_params(loss_of(model, x, y), measure_grad_norm=False) == loss.item()
        assert wrapper.last_grad_norm is None  # not measured: the step was finite
    assert_same_params(reference, model)


def huge_gradient_loss(model, x, y):
    """A finite loss whose gradients are finite but so large that their norm overflows."""
    output = model(x)
    output.register_hook(lambda grad: torch.full_like(grad, 1e30))
    return nn.functional.cross_entropy(output, y)


@pytest.mark.parametrize("measure", [True, False], ids=["norm", "finiteness-only"])
def test_finite_gradients_whose_norm_overflows_still_step(measure):
    model = mlp()
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=1e-35))
    before = copy.deepcopy(model)
    (x, y), = batches(1, 8)
    wrapper.update_params(huge_gradient_loss(model, x, y), measure_grad_norm=measure)
    assert wrapper.last_grad_norm == (math.inf if measure else None)
    assert wrapper.nonfinite_steps == 0
    assert not torch.equal(next(model.parameters()), next(before.parameters()))
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_the_check_covers_a_param_group_added_later_and_mixed_dtypes():
    model = mlp()
    extra = nn.Linear(6, 3).double()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    wrapper = OptimWrapper(optimizer, skip_nonfinite=5)
    (x, y), = batches(1, 8)
    wrapper.update_params(loss_of(model, x, y), measure_grad_norm=False)
    optimizer.add_param_group({"params": extra.parameters()})

    def loss_with_extra(bad):
        out = extra(x.double())
        if bad:
            out.register_hook(lambda grad: torch.full_like(grad, math.nan))
        return loss_of(model, x, y) + out.float().sum() * 0

    wrapper.update_params(loss_with_extra(bad=False), measure_grad_norm=False)
    assert wrapper.nonfinite_steps == 0
    wrapper.update_params(loss_with_extra(bad=True), measure_grad_norm=False)
    assert wrapper.nonfinite_steps == 1 and math.isnan(wrapper.last_grad_norm)
    wrapper.update_params(loss_with_extra(bad=False), measure_grad_norm=False)  # the flag was reset
    assert wrapper.nonfinite_steps == 1


@pytest.mark.parametrize("measure", [True, False], ids=["norm", "finiteness-only"])
def test_sparse_gradients_are_checked_and_measured(measure):
    torch.manual_seed(0)
    embedding = nn.Embedding(10, 4, sparse=True)
    wrapper = OptimWrapper(torch.optim.SparseAdam(embedding.parameters(), lr=0.1), skip_nonfinite=1)
    index = torch.tensor([1, 2, 2])  # a repeated index: an uncoalesced gradient
    out = embedding(index)
    loss = (out * torch.arange(12.0).view(3, 4)).sum()
    expected = torch.autograd.grad(loss, embedding.weight, retain_graph=True)[0].coalesce()._values().norm()
    assert wrapper.update_params(loss, measure_grad_norm=measure) == loss.item()
    if measure:
        assert wrapper.last_grad_norm == pytest.approx(expected.item(), rel=1e-6)
    before = embedding.weight.detach().clone()
    out = embedding(index)
    out.register_hook(lambda grad: grad * math.nan)
    wrapper.update_params(out.sum(), measure_grad_norm=measure)
    assert wrapper.nonfinite_steps == 1 and math.isnan(wrapper.last_grad_norm)
    assert torch.equal(embedding.weight, before)


def test_state_dict_round_trip_through_weights_only_loading():
    model = mlp()
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), accumulation_steps=2,
                           scaler=make_scaler(), autocast_dtype=torch.float16)
    (x, y), = batches(1, 8)
    for _ in range(5):
        wrapper.update_params(loss_of(model, x, y))
    wrapper.update_params(loss_of(model, x, y) * math.inf)  # ends a cycle: a skipped step
    wrapper.update_params(loss_of(model, x, y))  # the first micro-batch of the next cycle
    buffer = io.BytesIO()
    torch.save(wrapper.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert state["micro_batches"] == 1 and state["skipped_steps"] == 1

    restored = OptimWrapper(torch.optim.SGD(mlp().parameters(), lr=0.1), accumulation_steps=2,
                            scaler=make_scaler())
    restored.load_state_dict(state)
    assert restored.state_dict() == wrapper.state_dict()
    assert restored.scaler.get_scale() == wrapper.scaler.get_scale() != 2.0 ** 8
    # Without a scaler the scaler state is not needed, and not written.
    plain = OptimWrapper(torch.optim.SGD(mlp().parameters(), lr=0.1))
    plain.load_state_dict(state)
    assert plain.state_dict() == {"micro_batches": 1, "skipped_steps": 1, "nonfinite_steps": 0,
                                  "nonfinite_in_a_row": 0}
    with pytest.raises(KeyError, match="skipped_steps"):
        plain.load_state_dict({"micro_batches": 0})


class FakeDDP(nn.Module):
    """Counts the forward passes run under ``no_sync`` as DDP's would skip their all-reduce."""

    def __init__(self):
        super().__init__()
        self.module = mlp()
        self.syncing = True
        self.unsynced_forwards = 0

    @contextlib.contextmanager
    def no_sync(self):
        self.syncing = False
        try:
            yield
        finally:
            self.syncing = True

    def forward(self, x):
        self.unsynced_forwards += not self.syncing
        return self.module(x)


def test_optim_context_skips_the_sync_until_the_last_micro_batch_and_autocasts():
    model = FakeDDP()
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), accumulation_steps=3)
    for x, y in batches(6, 4):
        with wrapper.optim_context(model):
            loss = loss_of(model, x, y)
        wrapper.update_params(loss)
    assert model.unsynced_forwards == 4  # micro-batches 1, 2 of each cycle of 3

    plain = OptimWrapper(torch.optim.SGD(mlp().parameters(), lr=0.1))
    assert plain.optim_context(model) is plain.optim_context(mlp())  # a shared null context
    amp = OptimWrapper(torch.optim.SGD(mlp().parameters(), lr=0.1), autocast_dtype=torch.float16)
    with amp.optim_context(mlp()):
        assert mlp()(torch.randn(2, 6)).dtype == torch.float16


@pytest.mark.parametrize("steps", [0, -1, 1.5])
def test_accumulation_steps_must_be_a_positive_integer(steps):
    with pytest.raises(ValueError, match="accumulation_steps: expected an integer >= 1"):
        OptimWrapper(torch.optim.SGD(mlp().parameters(), lr=0.1), accumulation_steps=steps)


# ---------------------------------------------------------------------------------------------
# Fused kernels: the non-finite step is skipped on the device, the count read back later
# ---------------------------------------------------------------------------------------------
FUSED_OPTIMIZERS = {
    "sgd-momentum": lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9, fused=True),
    "sgd-dampening": lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9, dampening=0.5,
                                                    fused=True),
    "adamw": lambda params: torch.optim.AdamW(params, lr=0.01, fused=True),
    "adagrad": lambda params: torch.optim.Adagrad(params, lr=0.1, fused=True),
}


@pytest.mark.parametrize("make_optimizer", FUSED_OPTIMIZERS.values(), ids=FUSED_OPTIMIZERS.keys())
@pytest.mark.parametrize("bad_at", [0, 2], ids=["first-step", "later-step"])
def test_a_fused_kernel_skips_a_non_finite_step_on_the_device_as_a_hand_written_loop_that_skips_it(
        make_optimizer, bad_at):
    """The reference steps only the finite batches; the wrapper is handed a nan loss at
    ``bad_at`` (the first step: torch's fused SGD would leave its momentum uninitialised)."""
    reference, model = mlp(), mlp()
    reference_optimizer = make_optimizer(reference.parameters())
    wrapper = OptimWrapper(make_optimizer(model.parameters()), skip_nonfinite=1)
    for step, (x, y) in enumerate(batches(5, 8)):
        if step == bad_at:
            wrapper.update_params(loss_of(model, x, y) * math.nan, iteration=step, measure_grad_norm=False)
            continue
        reference_optimizer.zero_grad(set_to_none=True)
        loss_of(reference, x, y).backward()
        reference_optimizer.step()
        wrapper.update_params(loss_of(model, x, y), iteration=step, measure_grad_norm=False)
    assert wrapper.read_back() == {"nonfinite_steps": 1}
    assert_same_params(reference, model)
    for saved, now in zip(reference_optimizer.state.values(), wrapper.optimizer.state.values()):
        for name in saved:
            assert torch.equal(saved[name], now[name]), name


def test_with_a_fused_kernel_too_many_non_finite_steps_raise_at_the_read_naming_the_first_past_the_limit():
    model = mlp()
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, fused=True),
                           skip_nonfinite=1)
    (x, y), = batches(1, 8)
    wrapper.update_params(loss_of(model, x, y), iteration=0)
    before = copy.deepcopy(model)
    for iteration in (1, 2, 3):  # nothing read: the steps are skipped on the device
        wrapper.update_params(loss_of(model, x, y) * math.nan, iteration=iteration, measure_grad_norm=False)
    assert_same_params(before, model)
    with pytest.raises(FloatingPointError, match=r"^loss became nan for 2 steps in a row "
                                                 r"\(SOLVER.SKIP_NONFINITE 1\) at iteration 2; "):
        wrapper.read_back()


def test_a_checkpoint_reads_back_first_so_a_run_that_must_stop_is_not_saved():
    model = mlp()
    wrapper = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=0.1, fused=True))
    (x, y), = batches(1, 8)
    wrapper.update_params(inf_gradient_loss(model, x, y), iteration=4, measure_grad_norm=True)
    with pytest.raises(FloatingPointError, match=r"^gradients became non-finite \(norm (inf|nan)\) at iteration 4"):
        wrapper.state_dict()


def test_the_step_loss_is_a_device_tensor_the_mean_of_the_cycle():
    model = mlp()
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.0), accumulation_steps=2)
    (x1, y1), (x2, y2) = batches(2, 8)
    expected = (loss_of(model, x1, y1).item() + loss_of(model, x2, y2).item()) / 2
    assert wrapper.update_params(loss_of(model, x1, y1)) is None
    step_loss = wrapper.update_params(loss_of(model, x2, y2))
    assert isinstance(step_loss, torch.Tensor) and step_loss.dim() == 0 and not step_loss.requires_grad
    assert step_loss.item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("make, overshoot", [
    # p <- p - lr (g + wd p) with momentum m is stable while lr x wd < 2 (1 + m) (heavy ball).
    (lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=1000.0),
     "lr 0.05 x weight decay 1000 = 50 is above 3.8"),
    (lambda params: torch.optim.SGD(params, lr=0.5, weight_decay=10.0), "lr 0.5 x weight decay 10 = 5 is above 2"),
    # Dampening d scales the step by 1 - d: stable while lr x wd < 2 (1 + m) / (1 - d).
    (lambda params: torch.optim.SGD(params, lr=0.5, momentum=0.5, dampening=0.5, weight_decay=20.0),
     "lr 0.5 x weight decay 20 = 10 is above 6"),
    # Decoupled: p <- p (1 - lr wd) - lr u, stable while lr x wd < 2.
    (lambda params: torch.optim.AdamW(params, lr=0.5, weight_decay=100.0),
     "lr 0.5 x weight decay 100 = 50 is above 2"),
], ids=["sgd-momentum", "sgd", "sgd-dampening", "adamw"])
def test_a_run_that_weight_decay_blows_up_is_told_to_lower_the_decay_or_the_lr(make, overshoot):
    model = mlp()
    wrapper = OptimWrapper(make(model.parameters()), name="")
    (x, y), = batches(1, 8)
    with pytest.raises(FloatingPointError) as raised:
        for iteration in range(2000):
            wrapper.update_params(loss_of(model, x, y), iteration=iteration, measure_grad_norm=False)
            wrapper.read_back()
    message = str(raised.value)
    assert (f"{overshoot}, where the decay alone makes the weights grow; lower SOLVER.OPTIMIZER.BASE_LR or "
            "SOLVER.OPTIMIZER.WEIGHT_DECAY (or that parameter's WEIGHT_DECAY_* key or DECAY_MULT: "
            "tools/explain_solver.py shows each parameter's)") in message, message
    assert "CLIP_GRADIENTS" not in message  # clipping cannot stop a decay's growth


@pytest.mark.parametrize("make", [
    lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1.0),
    # 0.5 x 10 = 5 is above 2 (1 + 0.5) = 3 but below 2 (1 + 0.5) / (1 - 0.5) = 6: stable.
    lambda params: torch.optim.SGD(params, lr=0.5, momentum=0.5, dampening=0.5, weight_decay=10.0),
    lambda params: torch.optim.Adam(params, lr=0.5, weight_decay=100.0),  # coupled: normalised away
], ids=["sgd", "sgd-dampening", "adam"])
def test_a_stable_weight_decay_keeps_the_learning_rate_hint(make):
    model = mlp()
    optimizer = make(model.parameters())
    wrapper = OptimWrapper(optimizer)
    (x, y), = batches(1, 8)
    with pytest.raises(FloatingPointError, match="lower SOLVER.OPTIMIZER.BASE_LR"):
        wrapper.update_params(loss_of(model, x, y) * math.nan, iteration=3)
