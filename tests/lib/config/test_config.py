"""get_cfg, YAML and command-line merging, and the one-line errors of bad keys and values."""
import re

import pytest
from yacs.config import CfgNode

from pet.lib.config import ConfigError, get_cfg, load_cfg
from pet.lib.utils.solver import validate_solver
from pet.lib.config.loader import all_keys
from pet.lib.config.solver import SOLVER

SEED_KEYS = [
    "SOLVER.OPTIMIZER." + k
    for k in ("TYPE", "BASE_LR", "BIAS_LR_FACTOR", "BACKBONE_LR_FACTOR", "WEIGHT_DECAY",
              "WEIGHT_DECAY_BIAS", "WEIGHT_DECAY_NORM", "WEIGHT_DECAY_EMBED", "MOMENTUM",
              "CLIP_GRADIENTS.ENABLED", "CLIP_GRADIENTS.CLIP_TYPE", "CLIP_GRADIENTS.CLIP_VALUE",
              "CLIP_GRADIENTS.NORM_TYPE")
] + [
    "SOLVER.SCHEDULER." + k
    for k in ("POLICY", "TOTAL_ITERS", "TOTAL_EPOCHS", "STEPS", "GAMMA", "WARM_UP_ITERS",
              "WARM_UP_EPOCHS", "WARM_UP_FACTOR", "WARM_UP_METHOD", "LOG_LR_CHANGE_THRESHOLD",
              "LR_POW", "MIN_LR_FACTOR")
]


def test_get_cfg_is_a_fresh_unfrozen_clone():
    a, b = get_cfg(), get_cfg()
    assert isinstance(a, CfgNode) and not a.is_frozen()
    a.SOLVER.OPTIMIZER.BASE_LR = 123.0
    assert b.SOLVER.OPTIMIZER.BASE_LR != 123.0
    assert get_cfg().SOLVER.OPTIMIZER.BASE_LR == SOLVER.OPTIMIZER.BASE_LR


def test_seed_keys_keep_their_names_and_extra_keys_exist():
    keys = set(all_keys(get_cfg()))
    for key in SEED_KEYS + ["SOLVER.OPTIMIZER.BETAS", "SOLVER.OPTIMIZER.EPS", "SOLVER.OPTIMIZER.NESTEROV"]:
        assert key in keys
    assert get_cfg().SOLVER.SCHEDULER.MIN_LR_FACTOR == 0.0


def test_every_solver_key_has_a_comment_in_the_defaults_file():
    source = open("pet/lib/config/solver.py").read().splitlines()
    for index, line in enumerate(source):
        if re.match(r"^SOLVER(\.\w+)+ = (?!CN\(\))", line):
            assert source[index - 1].lstrip().startswith("#") or "#" in line, line


def test_defaults_pass_validation():
    validate_solver(get_cfg().SOLVER)


def test_yaml_then_overrides_merge_in_order(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text(
        "SOLVER:\n  OPTIMIZER:\n    TYPE: ADAMW\n    BASE_LR: 1\n  SCHEDULER:\n    STEPS: [300, 400]\n"
        "    TOTAL_EPOCHS: 12\n"
    )
    cfg = load_cfg(str(path), ["SOLVER.OPTIMIZER.BASE_LR", "0.05", "SOLVER.SCHEDULER.STEPS", "(30, 40)",
                               "SOLVER.OPTIMIZER.CLIP_GRADIENTS.ENABLED", "True"])
    assert cfg.SOLVER.OPTIMIZER.TYPE == "ADAMW"
    assert cfg.SOLVER.OPTIMIZER.BASE_LR == 0.05
    assert cfg.SOLVER.SCHEDULER.STEPS == (30, 40)
    assert cfg.SOLVER.SCHEDULER.TOTAL_EPOCHS == 12
    assert cfg.SOLVER.OPTIMIZER.CLIP_GRADIENTS.ENABLED is True


def test_override_is_checked_against_the_default_type_not_the_yaml_value(tmp_path):
    """An optional key (None by default) set by a YAML to an int still takes a float or None."""
    path = tmp_path / "x.yaml"
    path.write_text("SOLVER:\n  SCHEDULER:\n    TOTAL_EPOCHS: 12\n    WARM_UP_EPOCHS: 1\n")
    cfg = load_cfg(str(path), ["SOLVER.SCHEDULER.WARM_UP_EPOCHS", "0.5",
                               "SOLVER.SCHEDULER.TOTAL_EPOCHS", "None"])
    assert cfg.SOLVER.SCHEDULER.WARM_UP_EPOCHS == 0.5
    assert cfg.SOLVER.SCHEDULER.TOTAL_EPOCHS is None


def test_integer_for_a_float_key_is_accepted_as_float():
    cfg = load_cfg(None, ["SOLVER.OPTIMIZER.BASE_LR", "1"])
    assert cfg.SOLVER.OPTIMIZER.BASE_LR == 1.0 and isinstance(cfg.SOLVER.OPTIMIZER.BASE_LR, float)


def test_yaml_infinity_norm_type(tmp_path):
    path = tmp_path / "inf.yaml"
    path.write_text("SOLVER:\n  OPTIMIZER:\n    CLIP_GRADIENTS:\n      NORM_TYPE: .inf\n")
    assert load_cfg(str(path)).SOLVER.OPTIMIZER.CLIP_GRADIENTS.NORM_TYPE == float("inf")


def config_error(cfg_file=None, overrides=()):
    with pytest.raises(ConfigError) as error:
        load_cfg(cfg_file, overrides)
    message = str(error.value)
    assert "\n" not in message
    return message


def test_unknown_override_key_suggests_the_closest():
    assert config_error(None, ["SOLVER.SCHEDULER.WARM_UP_ITER", "3"]) == (
        "unknown config key SOLVER.SCHEDULER.WARM_UP_ITER (command line) "
        "(did you mean SOLVER.SCHEDULER.WARM_UP_ITERS?)"
    )


def test_unknown_yaml_key_suggests_the_closest(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("SOLVER:\n  OPTIMIZER:\n    BASE_LRR: 0.1\n")
    assert config_error(str(path)) == (
        f"unknown config key SOLVER.OPTIMIZER.BASE_LRR ({path}) (did you mean SOLVER.OPTIMIZER.BASE_LR?)"
    )


def test_a_key_under_the_wrong_section_suggests_its_right_place():
    message = config_error(None, ["SOLVER.OPTIMIZER.GAMMA", "0.5"])
    assert message.endswith("(did you mean SOLVER.SCHEDULER.GAMMA?)")


@pytest.mark.parametrize(
    "override,message",
    [
        (["SOLVER.OPTIMIZER.BASE_LR", "fast"], "SOLVER.OPTIMIZER.BASE_LR: expected a number, got 'fast' (str)"),
        (["SOLVER.SCHEDULER.TOTAL_ITERS", "1.5"], "SOLVER.SCHEDULER.TOTAL_ITERS: expected an integer, got 1.5 (float)"),
        (["SOLVER.OPTIMIZER.NESTEROV", "1"], "SOLVER.OPTIMIZER.NESTEROV: expected True or False, got 1 (int)"),
        (["SOLVER.SCHEDULER.STEPS", "300"], "SOLVER.SCHEDULER.STEPS: expected a list, got 300 (int)"),
        (["SOLVER.SCHEDULER.STEPS", "(3, 'a')"], "SOLVER.SCHEDULER.STEPS: expected a list of numbers, got (3, 'a')"),
        (["SOLVER.OPTIMIZER", "3"], "SOLVER.OPTIMIZER (command line): is a section, not a key; set one of its keys"),
        (["SOLVER.OPTIMIZER.BASE_LR"], "overrides must be KEY VALUE pairs; 'SOLVER.OPTIMIZER.BASE_LR' has no value"),
    ],
)
def test_wrong_types_are_one_line_errors_naming_the_key(override, message):
    assert config_error(None, override) == message


def test_missing_and_non_yaml_files(tmp_path):
    assert config_error(str(tmp_path / "nope.yaml")) == f"--cfg {tmp_path / 'nope.yaml'}: no such file"
    py = tmp_path / "cfg.py"
    py.write_text("x = 1\n")
    assert config_error(str(py)).endswith("only YAML files (.yaml, .yml) are accepted")
    broken = tmp_path / "broken.yaml"
    broken.write_text("SOLVER: [unclosed\n")
    assert config_error(str(broken)).startswith(f"--cfg {broken}: not valid YAML")


def test_custom_keys_from_yaml_and_command_line_are_mappings(tmp_path):
    path = tmp_path / "custom.yaml"
    path.write_text("SOLVER:\n  OPTIMIZER:\n    CUSTOM_KEYS:\n      - {KEY: head, LR_MULT: 10}\n"
                    "      - KEY: norm\n        DECAY_MULT: 0.0\n")
    keys = load_cfg(str(path)).SOLVER.OPTIMIZER.CUSTOM_KEYS
    assert keys == ({"KEY": "head", "LR_MULT": 10}, {"KEY": "norm", "DECAY_MULT": 0.0})
    cfg = load_cfg(None, ["SOLVER.OPTIMIZER.CUSTOM_KEYS", "[{'KEY': 'head', 'LR_MULT': 10.0}]"])
    assert cfg.SOLVER.OPTIMIZER.CUSTOM_KEYS == ({"KEY": "head", "LR_MULT": 10.0},)
    validate_solver(cfg.SOLVER)


def test_custom_keys_and_kwargs_survive_dump_reload_and_a_weights_only_checkpoint(tmp_path):
    torch = pytest.importorskip("torch")
    from pet.engine.checkpointer import cfg_to_dict
    cfg = load_cfg(None, ["SOLVER.OPTIMIZER.CUSTOM_KEYS", "[{'KEY': 'head', 'LR_MULT': 10.0}]",
                          "SOLVER.OPTIMIZER.TYPE", "ADAGRAD", "SOLVER.OPTIMIZER.KWARGS.lr_decay", "0.01",
                          "SOLVER.OPTIMIZER.FREEZE", "['backbone.norm']"])
    path = tmp_path / "config.yaml"
    path.write_text(cfg.dump())
    reloaded = load_cfg(str(path))
    assert reloaded == cfg and reloaded.SOLVER.OPTIMIZER.KWARGS == {"lr_decay": 0.01}
    torch.save({"config": cfg_to_dict(cfg)}, tmp_path / "ckpt.pth")
    saved = torch.load(tmp_path / "ckpt.pth", weights_only=True)["config"]
    assert CfgNode(saved) == cfg


def test_kwargs_is_an_open_section_and_an_empty_mapping_sets_nothing(tmp_path):
    path = tmp_path / "kwargs.yaml"
    path.write_text("SOLVER:\n  OPTIMIZER:\n    TYPE: ADAGRAD\n    KWARGS: {initial_accumulator_value: 0.1}\n")
    assert load_cfg(str(path)).SOLVER.OPTIMIZER.KWARGS == {"initial_accumulator_value": 0.1}
    path.write_text("SOLVER:\n  OPTIMIZER:\n    KWARGS: {}\n")
    assert load_cfg(str(path)).SOLVER.OPTIMIZER.KWARGS == {}
    with pytest.raises(ConfigError, match=r"^unknown config key SOLVER.OPTIMIZER.KWARG.x"):
        load_cfg(None, ["SOLVER.OPTIMIZER.KWARG.x", "1"])


def test_the_replaced_custom_rules_key_names_its_successor(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("SOLVER:\n  OPTIMIZER:\n    CUSTOM_RULES: [[head, 10, 1.0]]\n")
    with pytest.raises(ConfigError) as error:
        load_cfg(str(path))
    assert str(error.value) == (
        f"SOLVER.OPTIMIZER.CUSTOM_RULES ({path}): was replaced by SOLVER.OPTIMIZER.CUSTOM_KEYS, a list "
        "of mappings: write [[head, 10, 1]] as [{KEY: head, LR_MULT: 10, DECAY_MULT: 1}]")


@pytest.mark.parametrize("value, message", [
    ("-1", "SOLVER.KEEP_CHECKPOINTS: expected an integer >= 0, got -1"),
    (str(2 ** 40), f"SOLVER.KEEP_CHECKPOINTS: must be <= {2 ** 31 - 1}, got {2 ** 40}"),
])
def test_keep_checkpoints_is_an_integer_from_0(value, message):
    assert get_cfg().SOLVER.KEEP_CHECKPOINTS == 0  # keep all
    cfg = load_cfg(None, ["SOLVER.KEEP_CHECKPOINTS", "3"])
    validate_solver(cfg.SOLVER)
    cfg = load_cfg(None, ["SOLVER.KEEP_CHECKPOINTS", value])
    with pytest.raises(ConfigError) as error:
        validate_solver(cfg.SOLVER)
    assert str(error.value) == message


def test_yaml_text_that_yacs_reads_as_a_literal_is_read_as_yacs_reads_it(tmp_path):
    # PyYAML leaves 1e-3, (20, 26) and None as text; yacs' own merge reads them as Python
    # literals, and Pet's and detectron2's YAML files are written for that.
    text = ("SOLVER:\n  OPTIMIZER:\n    BASE_LR: 1e-3\n    WEIGHT_DECAY: 5e-4\n"
            "  SCHEDULER:\n    STEPS: (20, 26)\n    WARM_UP_FACTOR: '0.25'\n")
    path = tmp_path / "yacs_style.yaml"
    path.write_text(text)
    reference = get_cfg()
    reference.merge_from_file(str(path))  # yacs itself
    ours = load_cfg(str(path))
    for key in ("BASE_LR", "WEIGHT_DECAY"):
        assert ours.SOLVER.OPTIMIZER[key] == reference.SOLVER.OPTIMIZER[key]
        assert type(ours.SOLVER.OPTIMIZER[key]) is type(reference.SOLVER.OPTIMIZER[key]) is float
    assert ours.SOLVER.SCHEDULER.STEPS == reference.SOLVER.SCHEDULER.STEPS == (20, 26)
    assert ours.SOLVER.SCHEDULER.WARM_UP_FACTOR == reference.SOLVER.SCHEDULER.WARM_UP_FACTOR == 0.25


def test_yaml_none_and_number_texts_in_lists_are_read_and_text_keys_keep_their_text(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("OUTPUT_DIR: 1e3\nSOLVER:\n  SCHEDULER:\n    TOTAL_EPOCHS: None\n    TOTAL_ITERS: 3e3\n"
                    "    STEPS: [1e3, 2e3]\n  OPTIMIZER:\n    FREEZE: ['0']\n    KWARGS:\n      lr_decay: 1e-2\n"
                    "    CUSTOM_KEYS: [{KEY: '0', LR_MULT: 1e-1}]\n")
    cfg = load_cfg(str(path))
    assert cfg.OUTPUT_DIR == "1e3"  # a directory's name
    assert cfg.SOLVER.SCHEDULER.TOTAL_EPOCHS is None
    assert cfg.SOLVER.SCHEDULER.TOTAL_ITERS == 3000 and isinstance(cfg.SOLVER.SCHEDULER.TOTAL_ITERS, int)
    assert cfg.SOLVER.SCHEDULER.STEPS == (1000, 2000)
    assert cfg.SOLVER.OPTIMIZER.FREEZE == ("0",)  # module names stay text
    assert cfg.SOLVER.OPTIMIZER.KWARGS.lr_decay == 0.01
    assert cfg.SOLVER.OPTIMIZER.CUSTOM_KEYS == ({"KEY": "0", "LR_MULT": 0.1},)  # in a mapping: the number only


def test_null_for_a_path_that_is_off_by_default_turns_it_off(tmp_path):
    # MODEL.WEIGHTS "" is "no weights": YAML's null (or the text None) says the same.
    path = tmp_path / "x.yaml"
    path.write_text("MODEL:\n  WEIGHTS: null\n")
    assert load_cfg(str(path)).MODEL.WEIGHTS == ""
    assert load_cfg(None, ["MODEL.WEIGHTS", "None"]).MODEL.WEIGHTS == ""
    assert "OUTPUT_DIR: expected a string, got None" in config_error(None, ["OUTPUT_DIR", "None"])
