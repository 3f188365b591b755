"""The per-parameter report and the grouping warnings of explain_solver, on a model with each
classic mistake."""
import torch
from torch import nn

from pet.lib.config import get_cfg
from pet.lib.utils.optimizer import Optimizer
from pet.lib.utils.param_groups import explain_params, grouping_spec
from pet.reports.param_report import (
    FROZEN,
    ParamRow,
    group_rows,
    group_rules,
    grouping_warnings,
    looks_like_norm,
    param_rows,
    rule_label,
)


class HandWrittenLayerNorm(nn.Module):
    """A LayerNorm that is not an nn.LayerNorm: the rules cannot recognize it."""

    def __init__(self, dim):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))


class FrozenBN(nn.Module):
    """Statistics and affine terms as buffers: nothing to optimize, so nothing to warn about."""

    def __init__(self, dim):
        super().__init__()
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))


class ConvBNReLU(nn.Module):
    """"BN" in the name but owns no parameter itself: its children are judged, not it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = ConvBNReLU()
        self.frozen_bn = FrozenBN(4)
        self.norm = HandWrittenLayerNorm(4)
        self.temperature = nn.Parameter(torch.tensor(1.0))
        self.head = nn.Linear(4, 2)
        self.head.weight.requires_grad_(False)


def build(weight_decay=1e-4):
    cfg = get_cfg()
    cfg.SOLVER.OPTIMIZER.WEIGHT_DECAY = weight_decay
    cfg.SOLVER.OPTIMIZER.BIAS_LR_FACTOR = 2.0
    cfg.SOLVER.OPTIMIZER.BACKBONE_LR_FACTOR = 0.5
    model = Net()
    optimizer = Optimizer(model, cfg.SOLVER.OPTIMIZER).build()
    return model, explain_params(model, grouping_spec(cfg.SOLVER.OPTIMIZER)), optimizer.param_groups


def test_rows_cover_every_parameter_with_rule_and_group():
    model, assignments, groups = build()
    rows = {row.name: row for row in param_rows(model, assignments, groups)}
    assert list(rows) == [name for name, _ in model.named_parameters()]
    assert rows["backbone.bn.weight"].rule == "norm+backbone"
    assert rows["backbone.conv.bias"].rule == "bias+backbone"
    assert rows["backbone.conv.bias"].lr == 0.1 * 2.0 * 0.5
    assert rows["head.bias"].rule == "bias"
    assert rows["head.weight"] == ParamRow("head.weight", (2, 4), FROZEN, None, None, None)
    for row in rows.values():
        if row.group is not None:
            group = groups[row.group]
            assert (group["lr"], group["weight_decay"]) == (row.lr, row.weight_decay)


def test_group_rows_count_tensors_and_elements():
    model, assignments, groups = build()
    summary = group_rows(groups, assignments)
    assert [g.index for g in summary] == list(range(len(groups)))
    assert sum(g.tensors for g in summary) == len(assignments)
    assert sum(g.elements for g in summary) == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert [g.rules for g in summary] == group_rules(groups, assignments)
    backbone_norm = next(g for g in summary if "norm+backbone" in g.rules)
    assert backbone_norm.weight_decay == 0.0


def test_rule_label_marks_backbone():
    _, assignments, _ = build()
    labels = {a.name: rule_label(a) for a in assignments}
    assert labels["backbone.conv.weight"] == "default+backbone"
    assert labels["temperature"] == "default"


def test_warns_once_for_unrecognized_norm_and_for_decayed_scalar():
    model, assignments, _ = build()
    warnings = grouping_warnings(model, assignments)
    assert len(warnings) == 2, warnings
    norm_warning, scalar_warning = warnings
    assert norm_warning.startswith("norm (HandWrittenLayerNorm) looks like a normalization layer")
    assert "norm.weight: default" in norm_warning and "norm.bias: bias" in norm_warning
    assert scalar_warning.startswith("temperature (shape ()) is bias- or scale-like")


def test_no_scalar_warning_without_weight_decay():
    model, assignments, _ = build(weight_decay=0.0)
    warnings = grouping_warnings(model, assignments)
    assert len(warnings) == 1 and warnings[0].startswith("norm (HandWrittenLayerNorm)")


def test_looks_like_norm():
    assert looks_like_norm(FrozenBN(2))
    assert looks_like_norm(HandWrittenLayerNorm(2))
    assert looks_like_norm(nn.BatchNorm1d(2))
    assert not looks_like_norm(nn.Linear(2, 2))
