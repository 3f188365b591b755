"""MMEngine's rule vocabulary in YACS form, each rule as the rule that fired: depth-wise conv and
flat (1-D) decay multipliers, global multipliers, named custom keys (the longest wins, a typo is
an error), FREEZE, the RULES order, and BEiT's layer-wise lr decay per block on the shipped
transformer."""
from dataclasses import replace

import pytest
import torch
from torch import nn

from pet.lib.config import ConfigError, get_cfg
from pet.lib.utils.optimizer import Optimizer
from pet.lib.utils.param_groups import CustomKey, GroupingSpec, build_param_groups, explain_params
from pet.models.transformer import DigitsTransformer
from pet.reports.param_report import rule_label


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3)
        self.dw = nn.Conv2d(8, 8, 3, groups=8)
        self.pw = nn.Conv2d(8, 16, 1)
        self.gamma = nn.Parameter(torch.ones(16))  # a layer scale: 1-D, no rule of its own
        self.bn = nn.BatchNorm2d(16)
        self.head = nn.Linear(16, 10)


SPEC = GroupingSpec(base_lr=0.1, weight_decay=0.01, bias_lr_factor=2.0, weight_decay_bias=0.001)


def explained(model, spec):
    return {a.name: (rule_label(a), pytest.approx(a.lr), pytest.approx(a.weight_decay))
            for a in explain_params(model, spec)}


def test_dwconv_and_flat_multipliers_fire_only_when_set():
    off = explained(ConvNet(), SPEC)
    assert off["dw.weight"] == ("default", 0.1, 0.01) and off["gamma"] == ("default", 0.1, 0.01)
    on = explained(ConvNet(), replace(SPEC, dwconv_decay_mult=0.5, flat_decay_mult=0.0))
    assert on["dw.weight"] == ("dwconv", 0.1, 0.005)
    assert on["stem.weight"] == ("default", 0.1, 0.01) and on["pw.weight"] == ("default", 0.1, 0.01)
    assert on["gamma"] == ("flat", 0.1, 0.0)
    # The earlier rules keep their 1-D parameters: bias lr and decay, norm decay.
    assert on["dw.bias"] == ("bias", 0.2, 0.001) and on["bn.weight"] == ("norm", 0.1, 0.0)


def test_global_multipliers_scale_every_parameter_on_top():
    spec = replace(SPEC, lr_mult=0.5, decay_mult=2.0, backbone_lr_factor=0.1)
    got = explained(ConvNet(), spec)
    assert got["stem.weight"] == ("default+global", 0.05, 0.02)
    assert got["stem.bias"] == ("bias+global", 0.1, 0.002)


def test_custom_keys_longest_wins_either_mult_may_be_left_out():
    spec = replace(SPEC, custom_keys=(CustomKey("head", lr_mult=10.0), CustomKey("head.bias", decay_mult=0.0)))
    got = explained(ConvNet(), spec)
    assert got["head.weight"] == ("custom[head]", 1.0, 0.01)
    assert got["head.bias"] == ("custom[head.bias]", 0.1, 0.0)


def test_a_custom_key_or_freeze_entry_matching_nothing_is_an_error():
    with pytest.raises(ConfigError, match=r"^SOLVER.OPTIMIZER.CUSTOM_KEYS: KEY 'haed' matches no trainable "
                                          r"parameter; names look like gamma, stem.weight, stem.bias, dw.weight, ...$"):
        explain_params(ConvNet(), replace(SPEC, custom_keys=(CustomKey("haed", 2.0),)))
    o = get_cfg().SOLVER.OPTIMIZER
    o.FREEZE = ("stme",)
    with pytest.raises(ConfigError, match=r"^SOLVER.OPTIMIZER.FREEZE: 'stme' matches no parameter of ConvNet"):
        Optimizer(ConvNet(), o).build()


def test_freeze_sets_requires_grad_false_and_leaves_them_out_of_every_group():
    o = get_cfg().SOLVER.OPTIMIZER
    o.FREEZE = ("stem", "bn.")
    model = ConvNet()
    opt = Optimizer(model, o).build()
    names = {n for g in opt.param_groups for n in g["param_names"]}
    assert not {"stem.weight", "stem.bias", "bn.weight", "bn.bias"} & names
    assert not model.stem.weight.requires_grad and model.dw.weight.requires_grad
    # lr 0 freezes nothing by itself: the parameter is still trained (and decayed).
    o = get_cfg().SOLVER.OPTIMIZER
    o.CUSTOM_KEYS = ({"KEY": "stem", "LR_MULT": 0.0},)
    opt = Optimizer(ConvNet(), o).build()
    assert any("stem.weight" in g["param_names"] and g["lr"] == 0.0 for g in opt.param_groups)


def test_rules_are_tried_in_the_configured_order():
    spec = replace(SPEC, flat_decay_mult=0.0, rules=("flat", "norm", "bias"))
    got = explained(ConvNet(), spec)
    assert got["bn.weight"] == ("flat", 0.1, 0.0) and got["stem.bias"] == ("flat", 0.1, 0.0)
    o = get_cfg().SOLVER.OPTIMIZER
    o.RULES = ("norm", "nrom")
    with pytest.raises(ConfigError, match=r"^SOLVER.OPTIMIZER.RULES: unknown value 'nrom'; allowed: norm, embed, "):
        Optimizer(ConvNet(), o)


def transformer(depth=3):
    torch.manual_seed(0)
    return DigitsTransformer(embed_dim=16, depth=depth, num_heads=2, mlp_ratio=2.0, dropout=0.0,
                             patch_size=2, num_classes=10)


def test_layer_decay_per_block_on_the_shipped_transformer():
    decay, depth = 0.6, 3
    spec = GroupingSpec(base_lr=1.0, weight_decay=0.05, layer_decay=decay,
                        embed_keywords=("pos_embed", "cls_token"))
    scale = {a.name: a.lr for a in explain_params(transformer(depth), spec)}
    for name in ("backbone.cls_token", "backbone.pos_embed", "backbone.pixel_embed.weight"):
        assert scale[name] == pytest.approx(decay ** (depth + 1)), name  # before the first block
    for i in range(depth):
        block = [n for n in scale if f"blocks.layers.{i}." in n]
        assert len(block) == 12  # attention in/out, 2 linears, 2 norms: weight and bias each
        for name in block:
            assert scale[name] == pytest.approx(decay ** (depth - i)), name
    for name in ("backbone.norm.weight", "backbone.norm.bias", "head.weight", "head.bias"):
        assert scale[name] == 1.0, name  # after the last block


def test_layer_decay_keeps_groups_merged_by_hyper_parameters():
    spec = GroupingSpec(base_lr=1.0, weight_decay=0.05, weight_decay_bias=0.0, layer_decay=0.6)
    groups = build_param_groups(transformer(3), spec)
    # embeddings (default decay here), then per block one decayed and one not, then the rest.
    assert len(groups) == len({(g["lr"], g["weight_decay"]) for g in groups}) <= 2 * (3 + 2)


def test_layer_decay_block_numbers_found_in_timm_style_names():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)

    class Timm(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch_embed = nn.Linear(2, 2)
            self.blocks = nn.Sequential(Block(), Block())
            self.head = nn.Linear(2, 2)

    spec = GroupingSpec(base_lr=1.0, weight_decay=0.0, layer_decay=0.5)
    got = {a.name: a.lr for a in explain_params(Timm(), spec)}
    assert got == {"patch_embed.weight": 0.125, "patch_embed.bias": 0.125, "blocks.0.fc.weight": 0.25,
                   "blocks.0.fc.bias": 0.25, "blocks.1.fc.weight": 0.5, "blocks.1.fc.bias": 0.5,
                   "head.weight": 1.0, "head.bias": 1.0}
    with pytest.raises(ConfigError) as error:
        explain_params(Timm(), replace(spec, block_pattern=r"stage(\d+)"))
    assert str(error.value).startswith("SOLVER.OPTIMIZER.LAYER_DECAY_BLOCK_PATTERN: 'stage(\\\\d+)' finds no block")


def test_layer_decay_scales_with_the_scheduler_every_group_by_the_same_factor():
    from pet.lib.utils.lr_scheduler import LearningRateScheduler
    cfg = get_cfg()
    cfg.MODEL.TYPE = "transformer"
    cfg.SOLVER.OPTIMIZER.TYPE, cfg.SOLVER.OPTIMIZER.LAYER_DECAY = "ADAMW", 0.7
    cfg.SOLVER.SCHEDULER.POLICY, cfg.SOLVER.SCHEDULER.WARM_UP_ITERS = "COSINE", 0
    opt = Optimizer(transformer(2), cfg.SOLVER.OPTIMIZER).build()
    scheduler = LearningRateScheduler(opt, cfg.SOLVER)
    for _ in range(5):
        opt.step()
        scheduler.step()
    ratios = {round(g["lr"] / g["initial_lr"], 12) for g in opt.param_groups}
    assert len(ratios) == 1 and ratios.pop() < 1.0
