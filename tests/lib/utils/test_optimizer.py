"""Optimizer.build(): every type honours the groups and BASE_LR; every clip type is numerically
what torch's own clip functions give."""
import copy
import io
import pickle

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from clip_reference import clip_like_torch_
from pet.lib.config import ConfigError, get_cfg
from pet.lib.utils.optimizer import Optimizer

TORCH_CLASSES = {
    "SGD": torch.optim.SGD,
    "ADAMW": torch.optim.AdamW,
    "ADAM": torch.optim.Adam,
    "RMSPROP": torch.optim.RMSprop,
}


def small_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def optimizer_cfg(type_="SGD", **overrides):
    o = get_cfg().SOLVER.OPTIMIZER
    o.TYPE = type_
    o.BASE_LR = 0.05
    o.BIAS_LR_FACTOR = 2.0
    o.WEIGHT_DECAY = 1e-3
    for key, value in overrides.items():
        o[key] = value
    return o


def set_grads(model, seed=1, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen) * scale


@pytest.mark.parametrize("type_", ["SGD", "adamw", "Adam", "rmsprop"])
def test_every_type_builds_its_torch_class_with_groups_and_base_lr(type_):
    model = small_model()
    opt = Optimizer(model, optimizer_cfg(type_)).build()
    assert isinstance(opt, TORCH_CLASSES[type_.upper()])
    lrs = sorted({g["lr"] for g in opt.param_groups})
    assert lrs == pytest.approx([0.05, 0.1])  # BASE_LR and BASE_LR * BIAS_LR_FACTOR
    by_name = {n: g for g in opt.param_groups for n in g["param_names"]}
    assert by_name["0.weight"]["weight_decay"] == 1e-3
    assert by_name["0.bias"]["lr"] == pytest.approx(0.1)
    assert by_name["1.weight"]["weight_decay"] == 0.0


def test_type_specific_options_reach_torch():
    sgd = Optimizer(small_model(), optimizer_cfg("SGD", MOMENTUM=0.8, NESTEROV=True)).build()
    assert sgd.param_groups[0]["momentum"] == 0.8 and sgd.param_groups[0]["nesterov"]
    adamw = Optimizer(small_model(), optimizer_cfg("ADAMW", BETAS=(0.8, 0.9), EPS=1e-6)).build()
    assert adamw.param_groups[0]["betas"] == (0.8, 0.9) and adamw.param_groups[0]["eps"] == 1e-6
    rms = Optimizer(small_model(), optimizer_cfg("RMSPROP", RMSPROP_ALPHA=0.9, MOMENTUM=0.5)).build()
    assert rms.param_groups[0]["alpha"] == 0.9 and rms.param_groups[0]["momentum"] == 0.5


@pytest.mark.parametrize("type_", ["SGD", "ADAMW", "ADAM", "RMSPROP"])
def test_update_equals_torch_with_the_same_groups(type_):
    """The built optimizer steps exactly like torch's class given the same groups by hand."""
    model = small_model()
    reference_model = copy.deepcopy(model)
    opt = Optimizer(model, optimizer_cfg(type_, MOMENTUM=0.5)).build()
    named = dict(reference_model.named_parameters())
    groups = [
        dict(params=[named[n] for n in g["param_names"]], lr=g["lr"], weight_decay=g["weight_decay"])
        for g in opt.param_groups
    ]
    options = {"SGD": dict(momentum=0.5), "RMSPROP": dict(momentum=0.5)}.get(type_, {})
    reference = TORCH_CLASSES[type_](groups, lr=1.0, foreach=False, **options)
    for step in range(3):
        set_grads(model, seed=step)
        set_grads(reference_model, seed=step)
        opt.step()
        reference.step()
    for p, q in zip(model.parameters(), reference_model.parameters()):
        torch.testing.assert_close(p, q)


def clip_cfg(type_, clip_type, clip_value, norm_type=2.0):
    o = optimizer_cfg(type_, BASE_LR=1.0, BIAS_LR_FACTOR=1.0, WEIGHT_DECAY=0.0, MOMENTUM=0.0)
    o.CLIP_GRADIENTS.ENABLED = True
    o.CLIP_GRADIENTS.CLIP_TYPE = clip_type
    o.CLIP_GRADIENTS.CLIP_VALUE = clip_value
    o.CLIP_GRADIENTS.NORM_TYPE = norm_type
    return o


def reference_clip(grads, clip_type, clip_value, norm_type):
    """Clip copies of ``grads`` with torch.nn.utils, the independent reference."""
    params = [nn.Parameter(torch.zeros_like(g)) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    clip_like_torch_(params, clip_type, clip_value, norm_type)
    return [p.grad for p in params]


@pytest.mark.parametrize("implementation", ["auto", "foreach", "loop"])
@pytest.mark.parametrize(
    "clip_type,clip_value,norm_type",
    [("value", 0.3, 2.0), ("norm", 0.5, 2.0), ("norm", 0.5, 1.0), ("full_model", 1.0, 2.0),
     ("full_model", 0.7, float("inf")), ("norm", 0.4, float("inf"))],
)
def test_sgd_lr1_update_is_the_clipped_gradient(clip_type, clip_value, norm_type, implementation):
    model = small_model()
    cfg = clip_cfg("SGD", clip_type, clip_value, norm_type)
    cfg.IMPLEMENTATION = implementation
    opt = Optimizer(model, cfg).build()
    before = [p.detach().clone() for p in model.parameters()]
    set_grads(model, scale=3.0)
    expected = reference_clip([p.grad for p in model.parameters()], clip_type, clip_value, norm_type)
    opt.step()
    for p, p0, g in zip(model.parameters(), before, expected):
        torch.testing.assert_close(p0 - p.detach(), g, rtol=1e-5, atol=1e-6)


def test_clipping_leaves_small_gradients_alone():
    model = small_model()
    opt = Optimizer(model, clip_cfg("SGD", "full_model", 1e6)).build()
    before = [p.detach().clone() for p in model.parameters()]
    set_grads(model)
    grads = [p.grad.clone() for p in model.parameters()]
    opt.step()
    for p, p0, g in zip(model.parameters(), before, grads):
        torch.testing.assert_close(p0 - p.detach(), g)


@pytest.mark.parametrize("type_", ["ADAMW", "ADAM", "RMSPROP"])
@pytest.mark.parametrize("clip_type", ["value", "norm", "full_model"])
def test_every_type_clips_like_torch_clip_then_step(type_, clip_type):
    model = small_model()
    reference_model = copy.deepcopy(model)
    opt = Optimizer(model, clip_cfg(type_, clip_type, 0.2)).build()
    reference = TORCH_CLASSES[type_](reference_model.parameters(), lr=1.0, weight_decay=0.0)
    for step in range(3):
        set_grads(model, seed=step, scale=2.0)
        clipped = reference_clip([p.grad for p in model.parameters()], clip_type, 0.2, 2.0)
        for p, g in zip(reference_model.parameters(), clipped):
            p.grad = g
        opt.step()
        reference.step()
    for p, q in zip(model.parameters(), reference_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_closure_gradients_are_clipped():
    model = small_model()
    opt = Optimizer(model, clip_cfg("SGD", "value", 1e-3)).build()
    before = [p.detach().clone() for p in model.parameters()]
    x = torch.randn(8, 4)

    def closure():
        opt.zero_grad()
        loss = model(x).pow(2).sum() * 100
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert loss is not None
    for p, p0 in zip(model.parameters(), before):
        assert (p0 - p.detach()).abs().max() <= 1e-3 + 1e-6  # float32 rounding of p - g


@pytest.mark.parametrize("type_", ["SGD", "ADAMW"])
def test_clipped_step_runs_each_step_hook_once(type_):
    # A plain optimizer of the same torch class wraps that class's step in torch's hook
    # runner too: the clipped step must not run the hooks again when it calls it.
    TORCH_CLASSES[type_](small_model().parameters(), lr=0.1)
    assert getattr(TORCH_CLASSES[type_].step, "hooked", False)
    model = small_model()
    opt = Optimizer(model, clip_cfg(type_, "norm", 0.5)).build()
    calls = []
    opt.register_step_pre_hook(lambda *args: calls.append("pre"))
    opt.register_step_post_hook(lambda *args: calls.append("post"))
    handle = register_optimizer_step_pre_hook(lambda *args: calls.append("global pre"))
    try:
        set_grads(model)
        opt.step()
    finally:
        handle.remove()
    assert calls == ["global pre", "pre", "post"]


def test_clipped_optimizer_pickles_and_state_dicts_like_the_plain_one():
    model = small_model()
    opt = Optimizer(model, clip_cfg("ADAMW", "norm", 0.5)).build()
    set_grads(model)
    opt.step()
    clone = pickle.loads(pickle.dumps(opt))
    assert (clone.clip_type, clone.clip_value, clone.norm_type) == ("norm", 0.5, 2.0)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh = Optimizer(model, clip_cfg("ADAMW", "norm", 0.5)).build()
    fresh.load_state_dict(state)
    assert fresh.state_dict()["state"].keys() == opt.state_dict()["state"].keys()
    torch.testing.assert_close(fresh.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("TYPE", "LAMB", "SOLVER.OPTIMIZER.TYPE: unknown value 'LAMB'; allowed: SGD, ADAMW, ADAM, RMSPROP, ADAMAX"),
        ("BASE_LR", -0.1, "SOLVER.OPTIMIZER.BASE_LR: must be >= 0, got -0.1"),
        ("BIAS_LR_FACTOR", -1.0, "SOLVER.OPTIMIZER.BIAS_LR_FACTOR: must be >= 0"),
        ("BACKBONE_LR_FACTOR", -0.5, "SOLVER.OPTIMIZER.BACKBONE_LR_FACTOR: must be >= 0"),
        ("WEIGHT_DECAY", -1e-4, "SOLVER.OPTIMIZER.WEIGHT_DECAY: must be >= 0"),
        ("WEIGHT_DECAY_NORM", -1.0, "SOLVER.OPTIMIZER.WEIGHT_DECAY_NORM: must be >= 0"),
        ("MOMENTUM", 1.5, "SOLVER.OPTIMIZER.MOMENTUM: must be < 1"),
        ("BETAS", (0.9, 1.2), "SOLVER.OPTIMIZER.BETAS: must be < 1, got (0.9, 1.2)"),
        ("EPS", 0.0, "SOLVER.OPTIMIZER.EPS: must be > 0"),
        ("IMPLEMENTATION", "cuda_graph", "SOLVER.OPTIMIZER.IMPLEMENTATION: unknown value 'cuda_graph'; allowed: auto, fused, foreach, loop"),
    ],
)
def test_bad_optimizer_values_are_rejected_naming_the_key(key, value, message):
    cfg = optimizer_cfg()
    cfg[key] = value
    with pytest.raises(ConfigError) as error:
        Optimizer(small_model(), cfg)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("CLIP_TYPE", "global", "SOLVER.OPTIMIZER.CLIP_GRADIENTS.CLIP_TYPE: unknown value 'global'; allowed: value, norm, full_model"),
        ("NORM_TYPE", 0.0, "SOLVER.OPTIMIZER.CLIP_GRADIENTS.NORM_TYPE: must be > 0, got 0.0"),
        ("NORM_TYPE", -2.0, "SOLVER.OPTIMIZER.CLIP_GRADIENTS.NORM_TYPE: must be > 0"),
        ("CLIP_VALUE", 0.0, "SOLVER.OPTIMIZER.CLIP_GRADIENTS.CLIP_VALUE: must be > 0"),
    ],
)
def test_bad_clip_values_are_rejected_naming_the_key(key, value, message):
    cfg = optimizer_cfg()
    cfg.CLIP_GRADIENTS.ENABLED = True
    cfg.CLIP_GRADIENTS[key] = value
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        Optimizer(small_model(), cfg)


def test_nesterov_without_momentum_is_rejected():
    with pytest.raises(ConfigError, match="SOLVER.OPTIMIZER.NESTEROV: True needs SOLVER.OPTIMIZER.MOMENTUM > 0"):
        Optimizer(small_model(), optimizer_cfg("SGD", NESTEROV=True, MOMENTUM=0.0))


def test_forcing_fused_on_rmsprop_is_rejected():
    with pytest.raises(ConfigError, match=r"^SOLVER.OPTIMIZER.IMPLEMENTATION: 'fused' is not available for "
                       r"TYPE RMSPROP; allowed: auto, foreach, loop \(fused exists for SGD, ADAMW, ADAM, ADAGRAD\)$"):
        Optimizer(small_model(), optimizer_cfg("RMSPROP", IMPLEMENTATION="fused"))


@pytest.mark.parametrize(
    "keys,message",
    [
        ((("head", 2.0),), "SOLVER.OPTIMIZER.CUSTOM_KEYS: each entry is a mapping {KEY: name, LR_MULT: x, DECAY_MULT: y}, got ('head', 2.0)"),
        (({"KEY": ""},), "SOLVER.OPTIMIZER.CUSTOM_KEYS: each entry needs a non-empty string KEY, got {'KEY': ''}"),
        (({"LR_MULT": 2.0},), "SOLVER.OPTIMIZER.CUSTOM_KEYS: each entry needs a non-empty string KEY"),
        (({"KEY": "head", "LR_MULT": -1.0},), "SOLVER.OPTIMIZER.CUSTOM_KEYS ('head').LR_MULT: must be >= 0, got -1.0"),
        (({"KEY": "head", "DECAY_MULT": "x"},), "SOLVER.OPTIMIZER.CUSTOM_KEYS ('head').DECAY_MULT: expected a number, got 'x'"),
        (({"KEY": "head", "LR": 2.0},), "SOLVER.OPTIMIZER.CUSTOM_KEYS: unknown field 'LR' in {'KEY': 'head', 'LR': 2.0}; allowed: KEY, LR_MULT, DECAY_MULT"),
        (({"KEY": "head"}, {"key": "head", "lr_mult": 2.0}), "SOLVER.OPTIMIZER.CUSTOM_KEYS: each KEY may appear once, got ('head', 'head')"),
    ],
)
def test_bad_custom_keys_are_rejected(keys, message):
    with pytest.raises(ConfigError) as error:
        Optimizer(small_model(), optimizer_cfg(CUSTOM_KEYS=keys))
    assert str(error.value) == message or str(error.value).startswith(message)
