"""Every optimizer name against torch itself: the built optimizer's step equals the torch class's
own step on param groups written out by hand, with the typed keys and KWARGS reaching it; bad
keywords are one-line ConfigErrors before any model is touched."""
import copy

import pytest
import torch
from torch import nn

from pet.lib.config import ConfigError, get_cfg
from pet.lib.utils.optimizer import OPTIMIZERS, Optimizer, optimizer_spec

# name: (config overrides, the torch class, its keyword arguments written out by hand)
CASES = {
    "SGD": (dict(MOMENTUM=0.5, NESTEROV=True), torch.optim.SGD, dict(momentum=0.5, nesterov=True)),
    "ADAMW": (dict(BETAS=(0.8, 0.95), AMSGRAD=True), torch.optim.AdamW, dict(betas=(0.8, 0.95), amsgrad=True)),
    "ADAM": (dict(EPS=1e-6), torch.optim.Adam, dict(eps=1e-6)),
    "RMSPROP": (dict(MOMENTUM=0.5, CENTERED=True, RMSPROP_ALPHA=0.9), torch.optim.RMSprop,
                dict(momentum=0.5, centered=True, alpha=0.9)),
    "ADAMAX": (dict(BETAS=(0.8, 0.95)), torch.optim.Adamax, dict(betas=(0.8, 0.95))),
    "NADAM": (dict(KWARGS={"momentum_decay": 3e-3}), torch.optim.NAdam, dict(momentum_decay=3e-3)),
    "RADAM": (dict(KWARGS={"decoupled_weight_decay": True}), torch.optim.RAdam, dict(decoupled_weight_decay=True)),
    "ADAGRAD": (dict(KWARGS={"lr_decay": 0.01, "initial_accumulator_value": 0.1}), torch.optim.Adagrad,
                dict(lr_decay=0.01, initial_accumulator_value=0.1)),
    "ADADELTA": (dict(EPS=1e-5, KWARGS={"rho": 0.8}), torch.optim.Adadelta, dict(eps=1e-5, rho=0.8)),
    "ADAFACTOR": (dict(KWARGS={"beta2_decay": -0.7}), torch.optim.Adafactor, dict(beta2_decay=-0.7)),
    # RMSPROP_ALPHA is RMSprop's alpha, not ASGD's: the class keeps its own (0.75).
    "ASGD": (dict(RMSPROP_ALPHA=0.5, KWARGS={"lambd": 1e-3, "t0": 1.0}), torch.optim.ASGD, dict(lambd=1e-3, t0=1.0)),
    "RPROP": (dict(WEIGHT_DECAY=0.0, KWARGS={"etas": (0.4, 1.3)}), torch.optim.Rprop, dict(etas=(0.4, 1.3))),
}
DENSE = sorted(CASES)


def small_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def optimizer_cfg(type_, **overrides):
    o = get_cfg().SOLVER.OPTIMIZER
    o.TYPE, o.BASE_LR, o.BIAS_LR_FACTOR, o.WEIGHT_DECAY = type_, 0.05, 2.0, 1e-3
    for key, value in overrides.items():
        if key == "KWARGS":
            o.KWARGS.update(value)
        else:
            o[key] = value
    return o


def hand_written_groups(model, type_, weight_decay):
    """small_model's groups by the rules, written out: weights, biases (BIAS_LR_FACTOR 2), BN
    (one group with the weights when WEIGHT_DECAY is 0); no weight_decay for a class without."""
    p = dict(model.named_parameters())
    groups = [dict(params=[p["0.weight"], p["3.weight"]], lr=0.05, weight_decay=weight_decay),
              dict(params=[p["0.bias"], p["3.bias"]], lr=0.1, weight_decay=0.0),
              dict(params=[p["1.weight"], p["1.bias"]], lr=0.05, weight_decay=0.0)]
    if weight_decay == 0.0:
        groups = [dict(groups[0], params=[p["0.weight"], p["1.weight"], p["1.bias"], p["3.weight"]]), groups[1]]
    if "weight_decay" not in OPTIMIZERS.get(type_).keywords:
        for g in groups:
            del g["weight_decay"]
    return groups


def set_grads(model, seed):
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.grad = torch.randn(p.shape, generator=gen)


def group_names(groups, model):
    """The parameter names of each group, sorted."""
    name_of = {id(p): n for n, p in model.named_parameters()}
    return [sorted(name_of[id(p)] for p in g["params"]) for g in groups]


def test_every_torch_optimizer_is_registered_and_lbfgs_is_refused_with_a_reason():
    for cls in (torch.optim.SGD, torch.optim.AdamW, torch.optim.Adam, torch.optim.RMSprop, torch.optim.Adamax,
                torch.optim.NAdam, torch.optim.RAdam, torch.optim.Adagrad, torch.optim.Adadelta,
                torch.optim.Adafactor, torch.optim.ASGD, torch.optim.Rprop, torch.optim.SparseAdam):
        assert any(OPTIMIZERS.get(n).cls is cls for n in OPTIMIZERS), cls
    with pytest.raises(ConfigError) as error:
        optimizer_spec(optimizer_cfg("lbfgs"))
    assert str(error.value).startswith("SOLVER.OPTIMIZER.TYPE: 'lbfgs' is not supported: torch.optim.LBFGS "
                                       "re-evaluates the loss several times per step through a closure")
    assert "\n" not in str(error.value) and "allowed: SGD, ADAMW" in str(error.value)


@pytest.mark.parametrize("type_", DENSE + [t.lower() for t in DENSE[:2]])
def test_one_step_equals_the_torch_class_own_step(type_):
    overrides, cls, kwargs = CASES[type_.upper()]
    model = small_model()
    reference_model = copy.deepcopy(model)
    opt = Optimizer(model, optimizer_cfg(type_, **overrides)).build()
    assert type(opt) is cls
    groups = hand_written_groups(reference_model, type_.upper(), overrides.get("WEIGHT_DECAY", 1e-3))
    assert group_names(opt.param_groups, model) == group_names(groups, reference_model)
    reference = cls(groups, lr=1.0, **kwargs)
    for step in range(3):
        set_grads(model, step)
        set_grads(reference_model, step)
        opt.step()
        reference.step()
    for p, q in zip(model.parameters(), reference_model.parameters()):
        torch.testing.assert_close(p, q)


@pytest.mark.parametrize("type_", DENSE)
def test_every_type_clips_inside_step_like_torch_clip_then_step(type_):
    overrides, cls, kwargs = CASES[type_]
    model = small_model()
    reference_model = copy.deepcopy(model)
    cfg = optimizer_cfg(type_, **overrides)
    cfg.CLIP_GRADIENTS.ENABLED, cfg.CLIP_GRADIENTS.CLIP_TYPE, cfg.CLIP_GRADIENTS.CLIP_VALUE = True, "full_model", 0.3
    opt = Optimizer(model, cfg).build()
    assert isinstance(opt, cls) and type(opt).__name__ == f"Clipped{cls.__name__}"
    groups = hand_written_groups(reference_model, type_, overrides.get("WEIGHT_DECAY", 1e-3))
    reference = cls(groups, lr=1.0, **kwargs)
    for step in range(2):
        set_grads(model, step)
        set_grads(reference_model, step)
        torch.nn.utils.clip_grad_norm_(reference_model.parameters(), 0.3)
        opt.step()
        reference.step()
    for p, q in zip(model.parameters(), reference_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_sparse_adam_steps_a_sparse_embedding_like_torch_and_refuses_dense_gradients():
    torch.manual_seed(0)
    model = nn.Embedding(10, 4, sparse=True)
    reference_model = copy.deepcopy(model)
    opt = Optimizer(model, optimizer_cfg("SPARSEADAM", WEIGHT_DECAY=0.0, BETAS=(0.8, 0.9))).build()
    reference = torch.optim.SparseAdam(reference_model.parameters(), lr=0.05, betas=(0.8, 0.9))
    ids = torch.tensor([1, 3, 3, 7])
    for m, o in ((model, opt), (reference_model, reference)):
        m(ids).square().sum().backward()
        o.step()
    torch.testing.assert_close(model.weight, reference_model.weight)
    with pytest.raises(ConfigError, match=r"^SOLVER.OPTIMIZER.TYPE: 'SPARSEADAM' steps only sparse gradients"):
        Optimizer(small_model(), optimizer_cfg("SPARSEADAM", WEIGHT_DECAY=0.0)).build()


@pytest.mark.parametrize(
    "type_,overrides,message",
    [
        ("ADAGRAD", dict(KWARGS={"rho": 0.9}),
         "SOLVER.OPTIMIZER.KWARGS.rho: ADAGRAD (torch.optim.adagrad.Adagrad) takes no keyword 'rho'; "
         "allowed: lr_decay, initial_accumulator_value, maximize, differentiable (and the typed keys EPS)"),
        ("SGD", dict(KWARGS={"momentum": 0.3}),
         "SOLVER.OPTIMIZER.KWARGS.momentum: set it with SOLVER.OPTIMIZER.MOMENTUM (a typed key), not KWARGS"),
        ("SGD", dict(KWARGS={"fused": True}),
         "SOLVER.OPTIMIZER.KWARGS.fused: SGD (torch.optim.sgd.SGD) takes no keyword 'fused'; allowed: "
         "dampening, maximize, differentiable (and the typed keys MOMENTUM, NESTEROV)"),
        ("RPROP", dict(),
         "SOLVER.OPTIMIZER.WEIGHT_DECAY: TYPE RPROP takes no weight decay; allowed: 0, got 0.001"),
        ("ADAMW", dict(EPS=-1.0), "SOLVER.OPTIMIZER.EPS: must be > 0, got -1.0"),
        ("RMSPROP", dict(IMPLEMENTATION="fused"), "SOLVER.OPTIMIZER.IMPLEMENTATION: 'fused' is not available"),
    ],
)
def test_a_keyword_the_class_does_not_take_is_one_line_before_any_model(type_, overrides, message):
    with pytest.raises(ConfigError) as error:
        optimizer_spec(optimizer_cfg(type_, **overrides))  # no model at all
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_a_value_torch_refuses_is_a_config_error_naming_the_class():
    with pytest.raises(ConfigError, match=r"^SOLVER.OPTIMIZER: Adagrad\(lr_decay=-1.0\) refused its "
                                          r"arguments: Invalid lr_decay value: -1.0$"):
        Optimizer(small_model(), optimizer_cfg("ADAGRAD", KWARGS={"lr_decay": -1.0})).build()


def test_adafactor_takes_its_eps_pair_through_kwargs_not_eps():
    cfg = optimizer_cfg("ADAFACTOR", EPS=1e-6, KWARGS={"eps": (None, 1e-4)})
    opt = Optimizer(small_model(), cfg).build()
    assert opt.param_groups[0]["eps"] == (None, 1e-4)


def test_the_implementation_key_keeps_working_for_every_class_that_has_the_kernel():
    for name in OPTIMIZERS:
        info = OPTIMIZERS.get(name)
        if info.sparse_only or info.muon_split or not info.fused:
            continue
        opt = Optimizer(small_model(), optimizer_cfg(name, WEIGHT_DECAY=0.0 if not info.weight_decay else 1e-3,
                                                     IMPLEMENTATION="fused")).build()
        assert all(g["fused"] for g in opt.param_groups), name
        opt = Optimizer(small_model(), optimizer_cfg(name, IMPLEMENTATION="loop")).build()
        assert not any(g.get("foreach") or g.get("fused") for g in opt.param_groups), name
