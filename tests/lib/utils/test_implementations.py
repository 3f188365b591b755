"""Every kernel (fused, foreach, loop) x clip type x GradScaler gives the update of the plain loop
optimizer stepping on gradients clipped by torch.nn.utils: the fast paths change speed, not
results."""
import copy

import pytest
import torch
from torch import nn

from clip_reference import clip_like_torch_
from pet.lib.config import get_cfg
from pet.lib.utils import clip_ops
from pet.lib.utils.optimizer import OPTIMIZERS, Optimizer, implementation_kwargs

TYPES = ("SGD", "ADAMW", "ADAM", "RMSPROP")
FUSED_TYPES = tuple(t for t in TYPES if OPTIMIZERS.get(t).fused)
# (optimizer, implementation) pairs that exist: RMSprop has no fused kernel.
KERNELS = [(t, impl) for t in TYPES for impl in ("fused", "foreach", "loop")
           if impl != "fused" or t in FUSED_TYPES]
CLIPS = [None, ("value", 0.05, 2.0), ("norm", 0.3, 2.0), ("full_model", 0.5, 2.0)]
OTHER_NORMS = [("norm", 0.3, 1.0), ("norm", 0.2, float("inf")),
               ("full_model", 0.5, 1.0), ("full_model", 0.1, float("inf"))]
STEPS = 3


class TinyNet(nn.Module):
    """Backbone, norm, embedding and bias parameters, so the grouping rules make several groups."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(6, 10), nn.LayerNorm(10))
        self.pos_embed = nn.Parameter(torch.zeros(1, 10))
        self.head = nn.Linear(10, 3)


@pytest.fixture(params=["cpu_large", "cpu_mixed", "multi_tensor"])
def clip_path(request, monkeypatch):
    """Run the test with the CPU's clip ops taking every tensor one at a time (as large), then
    splitting small from large, then with the accelerators' multi-tensor ops (foreach works on
    the CPU too), so every path is checked here."""
    if request.param == "multi_tensor":
        monkeypatch.setattr(clip_ops, "for_device", lambda device: clip_ops.MultiTensorOps)
    else:
        # TinyNet's tensors have 3 to 60 elements: 20 puts the two weights among the large.
        monkeypatch.setattr(clip_ops, "SMALL_TENSOR", 0 if request.param == "cpu_large" else 20)
    return request.param


def tiny_net():
    torch.manual_seed(0)
    return TinyNet()


def solver_cfg(type_, implementation, clip):
    o = get_cfg().SOLVER.OPTIMIZER
    o.TYPE = type_
    o.IMPLEMENTATION = implementation
    o.BASE_LR = 0.05
    o.BIAS_LR_FACTOR = 2.0
    o.BACKBONE_LR_FACTOR = 0.5
    o.WEIGHT_DECAY = 1e-2
    o.MOMENTUM = 0.9 if type_ == "SGD" else 0.5
    if clip is not None:
        o.CLIP_GRADIENTS.ENABLED = True
        o.CLIP_GRADIENTS.CLIP_TYPE, o.CLIP_GRADIENTS.CLIP_VALUE, o.CLIP_GRADIENTS.NORM_TYPE = clip
    return o


def target_grads(model, step):
    """Fixed gradients of a few sizes, large enough that every clip type bites."""
    gen = torch.Generator().manual_seed(step)
    return [torch.randn(p.shape, generator=gen) * 0.5 for p in model.parameters()]


def backward(model, grads, scaler=None):
    """Make ``p.grad == g`` exactly through autograd (and ``scale * g`` under a GradScaler)."""
    for p in model.parameters():
        p.grad = None
    loss = sum((p * g).sum() for p, g in zip(model.parameters(), grads))
    (loss if scaler is None else scaler.scale(loss)).backward()


def reference_params(type_, clip):
    """Parameters after STEPS steps of the loop kernel, without clipping in step()."""
    model = tiny_net()
    opt = Optimizer(model, solver_cfg(type_, "loop", None)).build()
    for step in range(STEPS):
        backward(model, target_grads(model, step))
        if clip is not None:
            clip_like_torch_(list(model.parameters()), *clip)
        opt.step()
    return [p.detach() for p in model.parameters()]


def solver_params(type_, implementation, clip, scaler=None, unscale_first=False):
    """Parameters after STEPS steps of the solver-built optimizer (clipping inside step())."""
    model = tiny_net()
    opt = Optimizer(model, solver_cfg(type_, implementation, clip)).build()
    for step in range(STEPS):
        backward(model, target_grads(model, step), scaler)
        if scaler is None:
            opt.step()
            continue
        if unscale_first:
            scaler.unscale_(opt)
        scaler.step(opt)
        scaler.update()
        assert not hasattr(opt, "grad_scale"), "the scaler's grad_scale must not outlive step()"
    return [p.detach() for p in model.parameters()]


def assert_params_close(actual, expected):
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6)


def scaler():
    # A power of two, so scaling and unscaling are exact and the reference is bit-comparable.
    return torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=1)


@pytest.mark.parametrize("clip", CLIPS, ids=lambda c: c[0] if c else "no_clip")
@pytest.mark.parametrize("type_,implementation", KERNELS)
def test_every_kernel_and_clip_matches_the_loop_reference(type_, implementation, clip, clip_path):
    assert_params_close(solver_params(type_, implementation, clip), reference_params(type_, clip))


@pytest.mark.parametrize("clip", OTHER_NORMS, ids=lambda c: f"{c[0]}-p{c[2]}")
@pytest.mark.parametrize("implementation", ["fused", "foreach", "loop"])
def test_other_norm_types_match_the_loop_reference(implementation, clip, clip_path):
    actual = solver_params("ADAMW", implementation, clip)
    assert_params_close(actual, reference_params("ADAMW", clip))


@pytest.mark.parametrize("clip", CLIPS, ids=lambda c: c[0] if c else "no_clip")
@pytest.mark.parametrize("type_,implementation", KERNELS)
def test_grad_scaler_clips_the_true_gradients(type_, implementation, clip, clip_path):
    """Fused kernels get the scale as optimizer.grad_scale (unscaled inside the kernel); the
    others are unscaled by the scaler before step(). Either way the clip sees true gradients."""
    actual = solver_params(type_, implementation, clip, scaler=scaler())
    assert_params_close(actual, reference_params(type_, clip))


@pytest.mark.parametrize("clip", CLIPS[1:], ids=lambda c: c[0])
@pytest.mark.parametrize("type_", FUSED_TYPES)
def test_grad_scaler_unscale_before_step_with_fused(type_, clip, clip_path):
    """scaler.unscale_(opt) first (the way users clip by hand): step() gets grad_scale=None."""
    actual = solver_params(type_, "fused", clip, scaler=scaler(), unscale_first=True)
    assert_params_close(actual, reference_params(type_, clip))


@pytest.mark.parametrize("clip", CLIPS[1:], ids=lambda c: c[0])
@pytest.mark.parametrize("type_,implementation", KERNELS)
def test_grad_scaler_skips_the_step_on_inf_despite_clipping(type_, implementation, clip, clip_path):
    """Clipping must not hide an overflow: the step is skipped and the scale backs off."""
    model = tiny_net()
    opt = Optimizer(model, solver_cfg(type_, implementation, clip)).build()
    amp = scaler()
    grads = target_grads(model, 0)
    grads[0][0, 0] = float("inf")
    before = [p.detach().clone() for p in model.parameters()]
    backward(model, grads, amp)
    amp.step(opt)
    amp.update()
    for p, p0 in zip(model.parameters(), before):
        assert torch.equal(p.detach(), p0)
    assert amp.get_scale() == 2.0 ** 9


@pytest.mark.parametrize("type_", TYPES)
def test_auto_picks_fused_where_torch_has_it_else_the_loop_on_cpu(type_):
    info = OPTIMIZERS.get(type_)
    params = list(tiny_net().parameters())
    expected = dict(fused=True) if info.fused else dict(foreach=False)
    assert implementation_kwargs("auto", info, params) == expected


@pytest.mark.parametrize("implementation,flags", [
    ("fused", dict(fused=True)), ("foreach", dict(foreach=True)), ("loop", dict(foreach=False)),
    ("FUSED", dict(fused=True)),
])
def test_a_forced_implementation_reaches_torch(implementation, flags):
    opt = Optimizer(tiny_net(), solver_cfg("ADAMW", implementation, None)).build()
    for key, value in flags.items():
        assert all(group[key] is value for group in opt.param_groups)


@pytest.mark.parametrize("type_", FUSED_TYPES)
def test_fused_clipped_optimizer_keeps_amp_support_after_pickling(type_):
    """GradScaler relies on _step_supports_amp_scaling to hand over the scale; it must survive."""
    import pickle

    opt = Optimizer(tiny_net(), solver_cfg(type_, "fused", CLIPS[3])).build()
    assert pickle.loads(pickle.dumps(opt))._step_supports_amp_scaling
    assert copy.deepcopy(opt)._step_supports_amp_scaling


class SparseEmbeddingNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.tokens = nn.Embedding(20, 6, sparse=True)
        self.head = nn.Linear(6, 3)

    def forward(self, ids):
        return self.head(self.tokens(ids).mean(dim=1))


def test_auto_steps_sparse_gradients_with_sgds_loop_as_torch_does():
    torch.manual_seed(0)
    model = SparseEmbeddingNet()
    reference = copy.deepcopy(model)
    initial = model.tokens.weight.detach().clone()
    opt = Optimizer(model, solver_cfg("SGD", "auto", None)).build()
    assert all(not group["fused"] and group["foreach"] is False for group in opt.param_groups)
    twin = dict(zip(map(id, model.parameters()), reference.parameters()))
    ref_opt = torch.optim.SGD(
        [dict(params=[twin[id(p)] for p in group["params"]], lr=group["lr"],
              weight_decay=group["weight_decay"]) for group in opt.param_groups],
        lr=0.05, momentum=0.9)
    ids = torch.randint(0, 20, (4, 5))
    for _ in range(STEPS):
        for net, optimizer in ((model, opt), (reference, ref_opt)):
            optimizer.zero_grad()
            net(ids).sum().backward()
            assert net.tokens.weight.grad.is_sparse
            optimizer.step()  # fused SGD raises "_fused_sgd does not support sparse gradients"
    for p, q in zip(model.parameters(), reference.parameters()):
        assert torch.equal(p, q)
    assert not torch.equal(model.tokens.weight, initial)


@pytest.mark.parametrize("type_,implementation,clip,key", [
    ("ADAMW", "auto", None, "SOLVER.OPTIMIZER.TYPE: 'ADAMW' cannot step sparse gradients"),
    ("RMSPROP", "loop", None, "SOLVER.OPTIMIZER.TYPE: 'RMSPROP' cannot step sparse gradients"),
    ("SGD", "fused", None, "SOLVER.OPTIMIZER.IMPLEMENTATION: 'fused' cannot step sparse"),
    ("SGD", "auto", CLIPS[2], "SOLVER.OPTIMIZER.CLIP_GRADIENTS.ENABLED: True cannot clip sparse"),
])
def test_a_config_that_cannot_step_sparse_gradients_is_refused_at_build(type_, implementation,
                                                                        clip, key):
    from pet.lib.config.errors import ConfigError

    with pytest.raises(ConfigError) as error:
        Optimizer(SparseEmbeddingNet(), solver_cfg(type_, implementation, clip)).build()
    message = str(error.value)
    assert message.startswith(key) and "tokens.weight" in message and "\n" not in message
