"""pet/engine/fsdp.py without processes: which submodules become blocks, the AMP policy, and the
checks made before the processes meet (the sharded runs: tests/tools/test_fsdp.py)."""
import pytest
import torch

from pet.engine.fsdp import fsdp_blocks, mixed_precision
from pet.lib.config import ConfigError, get_cfg, merge_from_list
from pet.models import build_model


def transformer():
    cfg = get_cfg()
    merge_from_list(cfg, ["MODEL.TYPE", "transformer", "MODEL.TRANSFORMER.DEPTH", "3"])
    with torch.device("meta"):
        return build_model(cfg)


def test_the_transformer_names_its_encoder_layers_as_blocks():
    model = transformer()
    assert fsdp_blocks(model, [], "transformer") == list(model.backbone.blocks.layers)


def test_patterns_choose_blocks_in_module_order_outer_before_inner():
    model = transformer()
    names = {id(m): n for n, m in model.named_modules()}
    blocks = fsdp_blocks(model, ["backbone.blocks.layers.[02]", "backbone.blocks", "head"], "transformer")
    assert [names[id(b)] for b in blocks] == ["backbone.blocks", "backbone.blocks.layers.0",
                                              "backbone.blocks.layers.2", "head"]


@pytest.mark.parametrize("patterns, message", [
    (["backbone.layer*"], "'backbone.layer*' matches no submodule of MODEL.TYPE transformer (its modules: backbone,"),
    ([], "MODEL.TYPE cnn names no blocks"),
])
def test_a_model_without_blocks_or_an_unmatched_pattern_is_refused(patterns, message):
    cfg = get_cfg()
    model = transformer() if patterns else build_model(cfg)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("*", r"\*")):
        fsdp_blocks(model, patterns, "transformer" if patterns else "cnn")


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_amp_becomes_the_mixed_precision_policy(dtype):
    cfg = get_cfg()
    merge_from_list(cfg, ["SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.DTYPE", dtype])
    block, root = mixed_precision(cfg.SOLVER, root=False), mixed_precision(cfg.SOLVER, root=True)
    assert block.param_dtype == root.param_dtype == getattr(torch, dtype)
    assert block.reduce_dtype == root.reduce_dtype == torch.float32
    assert block.output_dtype is None and root.output_dtype == torch.float32  # the loss reads float32
    plain = mixed_precision(get_cfg().SOLVER, root=True)
    assert plain.param_dtype is None and plain.reduce_dtype is None
