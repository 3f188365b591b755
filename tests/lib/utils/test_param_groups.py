"""Every parameter rule, on a model that has each kind of parameter: the config-free core
(GroupingSpec in, groups out), and the config adapter giving the same spec."""
import pytest
import torch
from torch import nn

from dataclasses import replace

from pet.lib.config import get_cfg
from pet.lib.utils.param_groups import (
    PARAM_RULES,
    CustomKey,
    GroupingSpec,
    build_param_groups,
    explain_params,
    grouping_spec,
)


class Backbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, bias=True)
        self.bn = nn.BatchNorm2d(8)
        self.embed = nn.Embedding(10, 8)
        self.pos_embed = nn.Parameter(torch.zeros(1, 4, 8))
        self.ln = nn.LayerNorm(8)


class CustomNorm(nn.GroupNorm):
    """A subclass of a norm layer still counts as a norm layer."""


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = Backbone()
        self.neck = nn.Linear(8, 8)
        self.neck_norm = CustomNorm(2, 8)
        self.head = nn.Linear(8, 10)
        self.frozen = nn.Linear(8, 8)
        for p in self.frozen.parameters():
            p.requires_grad_(False)
        # Tied weights: the head shares the embedding's weight (10 x 8).
        self.tied = nn.Linear(8, 10, bias=False)
        self.tied.weight = self.backbone.embed.weight


def solver_cfg():
    return GroupingSpec(base_lr=0.1, weight_decay=1e-4, bias_lr_factor=2.0, backbone_lr_factor=0.5,
                        weight_decay_bias=1e-5, weight_decay_norm=0.0, weight_decay_embed=2e-6,
                        embed_keywords=("pos_embed",))


def test_the_config_adapter_gives_the_spec():
    o = get_cfg().SOLVER.OPTIMIZER
    o.BIAS_LR_FACTOR, o.BACKBONE_LR_FACTOR, o.WEIGHT_DECAY_BIAS, o.WEIGHT_DECAY_EMBED = 2.0, 0.5, 1e-5, 2e-6
    o.CUSTOM_KEYS = ({"KEY": "head", "LR_MULT": 10.0, "DECAY_MULT": 0.0}, {"key": "neck", "lr_mult": 2})
    o.FREEZE = ("frozen",)
    spec = grouping_spec(o)
    assert spec == replace(solver_cfg(), embed_keywords=tuple(o.EMBED_KEYWORDS),
                           custom_keys=(CustomKey("head", 10.0, 0.0), CustomKey("neck", 2.0, 1.0)),
                           freeze=("frozen",), rules=("norm", "embed", "bias", "dwconv", "flat"))


def test_built_in_rules_are_registered_in_priority_order():
    assert PARAM_RULES.names() == ("norm", "embed", "bias", "dwconv", "flat")


EXPECTED = {
    # name: (rule, lr, weight_decay)
    "backbone.pos_embed": ("embed", 0.1 * 0.5, 2e-6),
    "backbone.conv.weight": ("default", 0.1 * 0.5, 1e-4),
    "backbone.conv.bias": ("bias", 0.1 * 2.0 * 0.5, 1e-5),
    "backbone.bn.weight": ("norm", 0.1 * 0.5, 0.0),
    "backbone.bn.bias": ("norm", 0.1 * 0.5, 0.0),
    "backbone.embed.weight": ("embed", 0.1 * 0.5, 2e-6),
    "backbone.ln.weight": ("norm", 0.1 * 0.5, 0.0),
    "backbone.ln.bias": ("norm", 0.1 * 0.5, 0.0),
    "neck.weight": ("default", 0.1, 1e-4),
    "neck.bias": ("bias", 0.1 * 2.0, 1e-5),
    "neck_norm.weight": ("norm", 0.1, 0.0),
    "neck_norm.bias": ("norm", 0.1, 0.0),
    "head.weight": ("default", 0.1, 1e-4),
    "head.bias": ("bias", 0.1 * 2.0, 1e-5),
}


def test_each_parameter_gets_its_rule_lr_and_weight_decay():
    explained = {a.name: (a.rule, a.lr, a.weight_decay) for a in explain_params(Net(), solver_cfg())}
    assert explained.keys() == EXPECTED.keys()
    for name, (rule, lr, wd) in EXPECTED.items():
        assert explained[name][0] == rule, name
        assert explained[name][1] == pytest.approx(lr), name
        assert explained[name][2] == pytest.approx(wd), name


def test_every_trainable_parameter_appears_exactly_once_frozen_and_shared_handled():
    model = Net()
    groups = build_param_groups(model, solver_cfg())
    tensors = [p for g in groups for _, p in g["params"]]
    assert len(tensors) == len({id(p) for p in tensors})
    trainable = {id(p) for p in model.parameters() if p.requires_grad}  # dedups the tied weight
    assert {id(p) for p in tensors} == trainable
    assert all(id(p) not in {id(q) for q in tensors} for p in model.frozen.parameters())


def test_identical_hyperparameters_share_one_group():
    groups = build_param_groups(Net(), solver_cfg())
    keys = [(g["lr"], g["weight_decay"]) for g in groups]
    assert len(keys) == len(set(keys))
    assert len(groups) == len(set((lr, wd) for _, lr, wd in EXPECTED.values()))
    for group in groups:
        assert group["initial_lr"] == group["lr"]


def test_many_tensors_make_a_handful_of_groups():
    model = nn.Sequential(*[nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)) for _ in range(50)])
    groups = build_param_groups(model, solver_cfg())
    assert sum(len(g["params"]) for g in groups) == 200
    assert len(groups) == 3  # weights, biases, norms


def test_embed_keywords_are_configurable():
    o = replace(solver_cfg(), embed_keywords=("conv",))
    explained = {a.name: a.rule for a in explain_params(Net(), o)}
    assert explained["backbone.pos_embed"] == "default"  # no longer a keyword
    assert explained["backbone.embed.weight"] == "embed"  # nn.Embedding regardless


def test_model_without_trainable_parameters_is_an_error():
    model = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameter"):
        build_param_groups(model, solver_cfg())


@pytest.mark.parametrize(
    "norm",
    [nn.BatchNorm1d(4), nn.BatchNorm3d(4), nn.SyncBatchNorm(4), nn.InstanceNorm2d(4, affine=True),
     nn.InstanceNorm1d(4, affine=True), nn.InstanceNorm3d(4, affine=True), nn.GroupNorm(2, 4)],
)
def test_every_norm_type_is_recognized(norm):
    assert {a.rule for a in explain_params(nn.Sequential(norm), solver_cfg())} == {"norm"}


def test_custom_keys_override_by_name_backbone_still_applies():
    o = replace(solver_cfg(), custom_keys=(CustomKey("head", 10.0, 0.0), CustomKey("neck_norm", 3.0, 2.0),
                                           CustomKey("backbone.bn", 0.1)))
    explained = {a.name: (a.rule, a.lr, a.weight_decay) for a in explain_params(Net(), o)}
    assert explained["head.weight"] == ("custom", pytest.approx(1.0), 0.0)
    assert explained["head.bias"] == ("custom", pytest.approx(1.0), 0.0)  # not the bias rule
    assert explained["neck_norm.weight"] == ("custom", pytest.approx(0.3), pytest.approx(2e-4))
    assert explained["backbone.bn.bias"] == ("custom", pytest.approx(0.1 * 0.1 * 0.5), pytest.approx(1e-4))
    assert explained["neck.weight"] == ("default", pytest.approx(0.1), pytest.approx(1e-4))


def test_longest_custom_key_wins():
    o = replace(solver_cfg(), custom_keys=(CustomKey("neck", 2.0), CustomKey("neck_norm", 3.0)))
    explained = {a.name: a.lr for a in explain_params(Net(), o)}
    assert explained["neck.weight"] == pytest.approx(0.2)
    assert explained["neck_norm.weight"] == pytest.approx(0.3)
