"""Tests of pet/models: both models build from the config, run, and exercise every param rule."""
import pytest
import torch

from pet.lib.config import get_cfg
from pet.models import MODELS
from pet.lib.utils.param_groups import explain_params, grouping_spec
from pet.models import build_model


@pytest.mark.parametrize("model_type", MODELS.names())
def test_models_map_level_images_to_class_logits(model_type):
    cfg = get_cfg()
    cfg.MODEL.TYPE = model_type
    torch.manual_seed(0)
    model = build_model(cfg)
    torch.manual_seed(0)
    again = build_model(cfg)
    # The seed alone decides the init.
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    logits = model(torch.randint(0, 17, (5, 1, 8, 8), dtype=torch.uint8))
    assert logits.shape == (5, 10)


@pytest.mark.parametrize("model_type, rules", [
    ("cnn", {"norm", "bias", "default"}),
    ("transformer", {"norm", "bias", "default", "embed"}),
])
def test_models_exercise_the_param_rules_and_the_backbone_head_split(model_type, rules):
    cfg = get_cfg()
    cfg.MODEL.TYPE = model_type
    assignments = explain_params(build_model(cfg), grouping_spec(cfg.SOLVER.OPTIMIZER))
    assert {a.rule for a in assignments} == rules
    assert {a.backbone for a in assignments} == {True, False}
    assert all(a.name.startswith(("backbone.", "head.")) for a in assignments)
    assert any(a.rule == "bias" and a.name.startswith("head.") for a in assignments)


def test_transformer_embeds_pixels_positions_and_a_class_token():
    cfg = get_cfg()
    cfg.MODEL.TYPE = "transformer"
    rules = {a.name: a.rule for a in explain_params(build_model(cfg), grouping_spec(cfg.SOLVER.OPTIMIZER))}
    assert rules["backbone.pixel_embed.weight"] == "embed"  # an nn.Embedding
    assert rules["backbone.pos_embed"] == "embed"  # by EMBED_KEYWORDS
    assert rules["backbone.cls_token"] == "embed"
    assert rules["backbone.norm.weight"] == "norm"


@pytest.mark.parametrize("patch_size, tokens", [(1, 64), (2, 16), (4, 4)])
def test_transformer_patch_tokens_concatenate_their_pixels(patch_size, tokens):
    cfg = get_cfg()
    cfg.MODEL.TYPE = "transformer"
    cfg.MODEL.TRANSFORMER.PATCH_SIZE = patch_size
    encoder = build_model(cfg).backbone
    levels = torch.randint(0, 17, (2, 1, 8, 8))
    patches = encoder.tokens(levels)
    assert patches.shape == (2, tokens, 64)
    width = 64 // patch_size ** 2
    # The second token's first pixel is the pixel at row 0, column patch_size.
    assert torch.equal(patches[0, 1, :width], encoder.pixel_embed(levels[0, 0, 0, patch_size]))
    assert encoder.pos_embed.shape == (1, tokens + 1, 64)
