"""The clip passes (clip_ops) against torch's own norms and clip functions, on both the CPU's
per-tensor path and the accelerators' multi-tensor path, including the awkward inputs."""
import math

import pytest
import torch

from pet.lib.utils import clip_ops
from pet.lib.utils.optimizer import ClippedAdamW


@pytest.fixture(params=["cpu_large", "cpu_mixed", "multi_tensor"])
def ops(request, monkeypatch):
    """The CPU ops with every tensor taken as large, with a small/large split, and the
    accelerators' multi-tensor ops (on the CPU)."""
    if request.param == "multi_tensor":
        return clip_ops.MultiTensorOps
    # awkward_grads() has tensors of 0 to 120 elements: 34 splits them about in half.
    monkeypatch.setattr(clip_ops, "SMALL_TENSOR", 0 if request.param == "cpu_large" else 34)
    return clip_ops.CpuOps

NORM_TYPES = [2.0, 1.0, 3.0, math.inf]


def awkward_grads(norm_type=2.0):
    """Contiguous, transposed, channels-last, bfloat16, float64 and empty gradients (no empty
    one for the max-norm, which torch refuses: a max over nothing has no value)."""
    gen = torch.Generator().manual_seed(0)
    grads = [
        torch.randn(7, 5, generator=gen),
        torch.randn(6, 4, generator=gen).t(),
        torch.randn(2, 3, 4, 5, generator=gen).to(memory_format=torch.channels_last),
        torch.randn(33, generator=gen).to(torch.bfloat16),
        torch.randn(9, generator=gen, dtype=torch.float64),
        torch.zeros(0, 3),
    ]
    return grads[:-1] if math.isinf(norm_type) else grads


@pytest.mark.parametrize("norm_type", NORM_TYPES)
def test_host_norm_equals_torch_vector_norm(norm_type):
    for grad in awkward_grads(norm_type):
        expected = float(torch.linalg.vector_norm(grad.double(), norm_type))
        tolerance = 1e-2 if grad.dtype == torch.bfloat16 else 1e-5
        assert clip_ops.host_norm(grad, norm_type) == pytest.approx(expected, rel=tolerance)


@pytest.mark.parametrize("norm_type", [2.0, math.inf])
def test_host_norm_propagates_nan_and_inf(norm_type):
    assert math.isnan(clip_ops.host_norm(torch.tensor([1.0, math.nan, 2.0]), norm_type))
    assert clip_ops.host_norm(torch.tensor([1.0, -math.inf]), norm_type) == math.inf


@pytest.mark.parametrize("norm_type", NORM_TYPES)
def test_total_norm_equals_torch(ops, norm_type):
    grads = [g.float() for g in awkward_grads(norm_type)]
    expected = torch.nn.utils.get_total_norm(grads, norm_type)
    torch.testing.assert_close(ops.total_norm(grads, norm_type), expected, rtol=1e-5, atol=0)


def clipped_by_torch(grads, clip_type, clip_value, norm_type):
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g.clone()
        if clip_type == "norm":
            torch.nn.utils.clip_grad_norm_([p], clip_value, norm_type)
    if clip_type == "value":
        torch.nn.utils.clip_grad_value_(params, clip_value)
    return [p.grad for p in params]


@pytest.mark.parametrize("norm_type", NORM_TYPES)
@pytest.mark.parametrize("scale", [None, 256.0])
def test_clip_norm_equals_torch_and_unscales(ops, norm_type, scale):
    grads = [g.float() for g in awkward_grads(norm_type)]
    expected = clipped_by_torch(grads, "norm", 0.7, norm_type)
    actual = [g.clone() * (scale or 1.0) for g in grads]
    ops.clip_norm_(actual, 0.7, norm_type, None if scale is None else torch.tensor(scale))
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("scale", [None, 256.0])
def test_clip_value_equals_torch_and_unscales(ops, scale):
    grads = [g.float() for g in awkward_grads()]
    expected = clipped_by_torch(grads, "value", 0.4, 2.0)
    actual = [g.clone() * (scale or 1.0) for g in grads]
    ops.clip_value_(actual, 0.4, None if scale is None else torch.tensor(scale))
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e)


def test_a_nan_norm_poisons_the_gradient_as_in_torch(ops):
    grad = torch.tensor([1.0, math.nan, 3.0])
    ops.clip_norm_([grad], 0.5, 2.0, None)
    assert torch.isnan(grad).all()


def fused_clipped_adamw(clip_value):
    param = torch.nn.Parameter(torch.ones(4))
    opt = ClippedAdamW([param], lr=0.1, fused=True, clip_type="full_model",
                       clip_value=clip_value, norm_type=2.0)
    param.grad = torch.full((4,), 3.0)  # norm 6
    return opt, param


def test_full_model_on_fused_rides_in_grad_scale_and_leaves_no_trace():
    opt, param = fused_clipped_adamw(1.5)
    opt.clip_gradients_()
    torch.testing.assert_close(opt.grad_scale, torch.tensor(6.0 / 1.5), rtol=1e-5, atol=0)
    assert torch.equal(param.grad, torch.full((4,), 3.0)), "the kernel divides, not the clip"
    del opt.grad_scale
    opt.step()
    assert not hasattr(opt, "grad_scale")
    torch.testing.assert_close(param.grad, torch.full((4,), 0.75))  # the kernel wrote it back


def test_full_model_within_the_bound_touches_nothing():
    opt, param = fused_clipped_adamw(10.0)
    opt.clip_gradients_()
    assert not hasattr(opt, "grad_scale")
    assert torch.equal(param.grad, torch.full((4,), 3.0))
