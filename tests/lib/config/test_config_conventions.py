"""The command line's conventions (issue 15): ``_BASE_`` inheritance, ``KEY=VALUE``, negative
values, hints for detectron2/MMEngine names, and one-line errors for each."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from yacs.config import CfgNode

from pet.lib.config import ConfigError, get_cfg, load_cfg
from pet.lib.config.cli import add_iter_per_epoch_argument, build_parser, parse_cfg
from pet.lib.config.foreign_keys import FOREIGN_KEYS, foreign_key_hint
from pet.lib.config.loader import all_keys
from pet.lib.config.yaml_file import MAX_CHAIN_FILES

REPO = Path(__file__).resolve().parents[3]


def write(path, text):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def config_error(cfg_file=None, overrides=()):
    """The message of the ConfigError that load_cfg raises; asserts it is one line."""
    with pytest.raises(ConfigError) as error:
        load_cfg(None if cfg_file is None else str(cfg_file), overrides)
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.fixture
def chain(tmp_path):
    """child.yaml -> base/mid.yaml -> base/root.yaml (each _BASE_ relative to its own file)."""
    write(tmp_path / "base" / "root.yaml",
          "SEED: 7\nSOLVER:\n  OPTIMIZER: {MOMENTUM: 0.1, WEIGHT_DECAY: 0.3, KWARGS: {dampening: 0.1}}\n")
    write(tmp_path / "base" / "mid.yaml",
          "_BASE_: root.yaml\nSOLVER:\n  OPTIMIZER: {MOMENTUM: 0.5, BASE_LR: 0.2}\n"
          "  SCHEDULER: {STEPS: [10, 20, 30]}\n")
    return write(tmp_path / "child.yaml",
                 "_BASE_: base/mid.yaml\nSOLVER:\n  OPTIMIZER: {BASE_LR: 0.05, KWARGS: {maximize: true}}\n"
                 "  SCHEDULER: {STEPS: [5]}\n")


# ---------------------------------------------------------------------------------------------
# _BASE_
# ---------------------------------------------------------------------------------------------
def test_base_chain_merges_key_by_key_and_the_child_wins(chain):
    cfg = load_cfg(str(chain))
    optimizer = cfg.SOLVER.OPTIMIZER
    assert cfg.SEED == 7                          # from the root only
    assert optimizer.WEIGHT_DECAY == 0.3          # root, untouched by mid and child
    assert optimizer.MOMENTUM == 0.5              # mid over root
    assert optimizer.BASE_LR == 0.05              # child over mid
    assert cfg.SOLVER.SCHEDULER.STEPS == (5,)     # a list is replaced, not merged
    assert optimizer.KWARGS == {"dampening": 0.1, "maximize": True}  # an open section merges
    assert cfg.DATA.BATCH_SIZE == get_cfg().DATA.BATCH_SIZE
    assert "_BASE_" not in all_keys(cfg) and "_BASE_" not in cfg.dump()
    assert load_cfg(str(chain), ["SOLVER.OPTIMIZER.BASE_LR", "0.5"]).SOLVER.OPTIMIZER.BASE_LR == 0.5


def test_the_written_config_loads_back_without_its_bases(chain, tmp_path):
    cfg = load_cfg(str(chain))
    written = write(tmp_path / "elsewhere" / "config.yaml", cfg.dump())
    assert "_BASE_" not in yaml.safe_load(written.read_text())
    assert load_cfg(str(written)) == cfg


def test_a_relative_base_is_read_from_the_directory_of_its_file_not_the_working_one(
        chain, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path / "base")
    assert load_cfg(os.path.join("..", "child.yaml")).SEED == 7


def test_an_absolute_base_and_a_list_of_bases_in_order(tmp_path):
    first = write(tmp_path / "a" / "first.yaml", "SEED: 1\nLOG_PERIOD: 5\n")
    write(tmp_path / "b" / "second.yaml", "SEED: 2\n")
    child = write(tmp_path / "c" / "child.yaml", f"_BASE_: [{first}, ../b/second.yaml]\nNUM_THREADS: 3\n")
    cfg = load_cfg(str(child))
    assert (cfg.SEED, cfg.LOG_PERIOD, cfg.NUM_THREADS) == (2, 5, 3)


def test_a_child_may_replace_a_base_value_of_another_shape(tmp_path):
    write(tmp_path / "base.yaml", "SOLVER:\n  OPTIMIZER:\n    KWARGS: {dampening: 0.1}\n")
    child = write(tmp_path / "child.yaml", "_BASE_: base.yaml\nSOLVER:\n  OPTIMIZER:\n    KWARGS: {}\n")
    # As in detectron2, an empty mapping merges nothing: the base's keys stay.
    assert load_cfg(str(child)).SOLVER.OPTIMIZER.KWARGS == {"dampening": 0.1}


@pytest.mark.parametrize("files, start, chain_text", [
    ({"a.yaml": "_BASE_: b.yaml\n", "b.yaml": "_BASE_: a.yaml\n"}, "a.yaml", "a.yaml -> b.yaml -> a.yaml"),
    ({"self.yaml": "_BASE_: ./self.yaml\n"}, "self.yaml", "self.yaml -> self.yaml"),
    ({"a.yaml": "_BASE_: b.yaml\n", "b.yaml": "_BASE_: c.yaml\n", "c.yaml": "_BASE_: b.yaml\n"},
     "a.yaml", "a.yaml -> b.yaml -> c.yaml -> b.yaml"),
])
def test_a_cycle_is_one_line_naming_the_chain(tmp_path, monkeypatch, files, start, chain_text):
    for name, text in files.items():
        write(tmp_path / name, text)
    monkeypatch.chdir(tmp_path)
    assert config_error(start) == f"--cfg {start}: the _BASE_ files form a cycle: {chain_text}"


def test_a_diamond_is_no_cycle_but_the_files_read_are_bounded(tmp_path):
    write(tmp_path / "d.yaml", "SEED: 4\n")
    write(tmp_path / "b.yaml", "_BASE_: d.yaml\n")
    write(tmp_path / "c.yaml", "_BASE_: d.yaml\n")
    assert load_cfg(str(write(tmp_path / "a.yaml", "_BASE_: [b.yaml, c.yaml]\n"))).SEED == 4
    # Each level names the next twice: 2**20 reads without the bound.
    for level in range(20):
        write(tmp_path / f"l{level}.yaml", f"_BASE_: [l{level + 1}.yaml, l{level + 1}.yaml]\n")
    write(tmp_path / "l20.yaml", "SEED: 1\n")
    assert f"more than {MAX_CHAIN_FILES} files in its _BASE_ chain" in config_error(tmp_path / "l0.yaml")


def test_a_missing_base_names_it_and_the_file_that_names_it(tmp_path):
    child = write(tmp_path / "child.yaml", "_BASE_: ../nowhere/base.yaml\nSEED: 1\n")
    assert config_error(child) == (
        f"_BASE_ ../nowhere/base.yaml (named in {child}): no such file "
        f"{tmp_path.parent / 'nowhere' / 'base.yaml'}")


@pytest.mark.parametrize("base_text, fragment", [
    ("a: &x 1\nb: *x\n", "aliases"),
    ("SEED: " + "[" * 100 + "]" * 100, "nested deeper than 32"),
    ("SOLVER: {}\nSOLVER: {}\n", "key SOLVER is given twice"),
    ("#" * (1 << 21), "larger than 1024 KiB"),
    ("SOLVER: [unclosed\n", "not valid YAML"),
    ("- 1\n", "the top level must be a mapping"),
])
def test_every_file_of_the_chain_passes_the_limits(tmp_path, base_text, fragment):
    write(tmp_path / "mid" / "base.yaml", base_text)
    child = write(tmp_path / "child.yaml", "_BASE_: mid/base.yaml\n")
    write(tmp_path / "top.yaml", "_BASE_: child.yaml\n")
    message = config_error(tmp_path / "top.yaml")
    assert message.startswith(f"_BASE_ mid/base.yaml (named in {child}): ") and fragment in message


def test_a_base_that_is_no_yaml_file_or_a_directory(tmp_path):
    write(tmp_path / "base.json", "{}")
    (tmp_path / "dir.yaml").mkdir()
    json_child = write(tmp_path / "j.yaml", "_BASE_: base.json\n")
    dir_child = write(tmp_path / "d.yaml", "_BASE_: dir.yaml\n")
    assert config_error(json_child).endswith("only YAML files (.yaml, .yml) are accepted")
    assert config_error(dir_child).endswith("not a regular file")


def test_a_bad_key_in_a_base_names_the_base(tmp_path):
    base = write(tmp_path / "base.yaml", "SOLVER:\n  OPTIMIZER:\n    BASE_LRR: 0.1\n")
    child = write(tmp_path / "child.yaml", "_BASE_: base.yaml\nSEED: 1\n")
    assert config_error(child) == (f"unknown config key SOLVER.OPTIMIZER.BASE_LRR ({base}) "
                                   f"(did you mean SOLVER.OPTIMIZER.BASE_LR?)")


@pytest.mark.parametrize("value", ["3", "''", "[]", "[a.yaml, 3]", "{a: b.yaml}", "null"])
def test_base_must_be_a_path_or_a_list_of_paths(tmp_path, value):
    child = write(tmp_path / "child.yaml", f"_BASE_: {value}\n")
    if value == "null":
        assert load_cfg(str(child)) == get_cfg()  # an empty _BASE_ names no base
        return
    assert config_error(child).startswith(f"_BASE_ ({child}): expected a path or a list of paths")


def test_base_is_a_yaml_key_only(tmp_path):
    assert config_error(None, ["_BASE_", "x.yaml"]).startswith("_BASE_ (command line): is read from a YAML")
    nested = write(tmp_path / "nested.yaml", "SOLVER:\n  _BASE_: x.yaml\n")
    assert config_error(nested).startswith("unknown config key SOLVER._BASE_")


# ---------------------------------------------------------------------------------------------
# A missing --cfg file
# ---------------------------------------------------------------------------------------------
def test_a_missing_relative_cfg_names_the_path_as_given_and_where_it_was_looked_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = config_error(os.path.join("cfgs", "nope.yaml"))
    assert message == (f"--cfg cfgs/nope.yaml: no such file (looked for {tmp_path / 'cfgs' / 'nope.yaml'}: "
                       f"a relative path is read from the working directory {tmp_path})")
    assert config_error(tmp_path / "nope.yaml") == f"--cfg {tmp_path / 'nope.yaml'}: no such file"


# ---------------------------------------------------------------------------------------------
# KEY=VALUE and negative values
# ---------------------------------------------------------------------------------------------
def test_key_equals_value_beside_key_value():
    cfg = load_cfg(None, ["SOLVER.OPTIMIZER.BASE_LR=0.05", "SEED", "3", "OUTPUT_DIR=runs/lr=0.05",
                          "SOLVER.OPTIMIZER.KWARGS.dampening=0.1", "MODEL.WEIGHTS", "w=1.pth"])
    assert cfg.SOLVER.OPTIMIZER.BASE_LR == 0.05 and cfg.SEED == 3
    assert cfg.OUTPUT_DIR == "runs/lr=0.05"              # split at the first "="
    assert cfg.SOLVER.OPTIMIZER.KWARGS == {"dampening": 0.1}
    assert cfg.MODEL.WEIGHTS == "w=1.pth"                # a value is never split


@pytest.mark.parametrize("overrides, message", [
    (["SEED="], "SEED (command line): 'SEED=' has no value; write SEED=VALUE or SEED VALUE"),
    (["SEED=1", "LOG_PERIOD"], "overrides must be KEY VALUE pairs; 'LOG_PERIOD' has no value"),
    (["SOLVER.OPTIMIZER.BASE_RL=0.1"], "unknown config key SOLVER.OPTIMIZER.BASE_RL (command line) "
                                       "(did you mean SOLVER.OPTIMIZER.BASE_LR?)"),
    (["SEED=three"], "SEED: expected an integer, got 'three' (str)"),
])
def test_key_equals_value_errors_are_one_line_naming_the_key(overrides, message):
    assert config_error(None, overrides) == message


def parser_with_flags():
    parser = build_parser("test")
    parser.add_argument("--resume", action="store_true")
    add_iter_per_epoch_argument(parser)
    return parser


@pytest.mark.parametrize("value, expected", [("-1e-4", -1e-4), ("-5", -5.0), ("-.5", -0.5),
                                             ("-1E-4", -1e-4), ("-2.5e+3", -2500.0), ("-0", 0.0)])
@pytest.mark.parametrize("where", ["before", "between", "after"])
def test_negative_values_reach_the_config_with_flags_anywhere(tmp_path, value, expected, where):
    cfg_file = write(tmp_path / "job.yaml", "SEED: 1\n")
    overrides = ["SOLVER.OPTIMIZER.WEIGHT_DECAY", value, "SOLVER.SCHEDULER.GAMMA=-3"]
    position = {"before": 0, "between": 2, "after": 3}[where]
    argv = ["--cfg", str(cfg_file)] + overrides[:position] + ["--resume"] + overrides[position:]
    args, cfg = parse_cfg(parser_with_flags(), argv)
    assert args.resume and args.cfg_file == str(cfg_file)
    assert cfg.SOLVER.OPTIMIZER.WEIGHT_DECAY == expected and cfg.SOLVER.SCHEDULER.GAMMA == -3.0
    assert args.opts == ["SOLVER.OPTIMIZER.WEIGHT_DECAY", value, "SOLVER.SCHEDULER.GAMMA", "-3"]


def test_negative_values_of_every_type_and_a_flag_keeps_its_own():
    args, cfg = parse_cfg(parser_with_flags(), [
        "--cfg", str(REPO / "cfgs" / "digits_cnn_sgd_step.yaml"), "SEED", "-5", "--iter-per-epoch", "7",
        "SOLVER.OPTIMIZER.KWARGS.dampening", "-1e-4", "SOLVER.SCHEDULER.STEPS", "(-1, 2)"])
    assert (cfg.SEED, cfg.SOLVER.OPTIMIZER.KWARGS.dampening) == (-5, -1e-4)
    assert cfg.SOLVER.SCHEDULER.STEPS == (-1, 2) and args.iter_per_epoch == 7
    with pytest.raises(SystemExit) as exit_:  # argparse's own error for the flag: status 2
        parse_cfg(parser_with_flags(), ["--cfg", "x.yaml", "--iter-per-epoch", "-5"])
    assert exit_.value.code == 2


def test_a_non_number_after_a_key_is_still_a_flag(capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_cfg(parser_with_flags(), ["--cfg", "x.yaml", "SEED", "-x"])
    assert exit_.value.code == 2 and "unrecognized arguments: -x" in capsys.readouterr().err


def test_a_bad_override_from_parse_cfg_exits_2_with_one_line(tmp_path, capsys):
    cfg_file = write(tmp_path / "job.yaml", "SEED: 1\n")
    with pytest.raises(SystemExit) as exit_:
        parse_cfg(parser_with_flags(), ["--cfg", str(cfg_file), "SEED=", "--resume"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "error: SEED (command line): 'SEED=' has no value; write " \
                                      "SEED=VALUE or SEED VALUE\n"


# ---------------------------------------------------------------------------------------------
# detectron2 / MMEngine names
# ---------------------------------------------------------------------------------------------
def test_every_foreign_name_points_to_an_existing_key_and_is_not_one_of_ours():
    defaults = get_cfg()
    ours = {key.upper() for key in all_keys(defaults)}
    for name, (target, origin) in FOREIGN_KEYS.items():
        node = defaults
        for part in target.split("."):
            assert isinstance(node, CfgNode) and part in node, f"{origin} -> {target}: no such key"
            node = node[part]
        assert name not in ours, f"{origin} is a key of ours: the hint would never be shown"


@pytest.mark.parametrize("name, target, origin", [
    ("SOLVER.MAX_ITER", "SOLVER.SCHEDULER.TOTAL_ITERS", "detectron2"),
    ("SOLVER.IMS_PER_BATCH", "DATA.BATCH_SIZE", "detectron2"),
    ("SOLVER.CHECKPOINT_PERIOD", "SOLVER.SNAPSHOT_ITERS", "detectron2"),
    ("SOLVER.BASE_LR", "SOLVER.OPTIMIZER.BASE_LR", "detectron2"),
    ("SOLVER.WEIGHT_DECAY", "SOLVER.OPTIMIZER.WEIGHT_DECAY", "detectron2"),
    ("SOLVER.MOMENTUM", "SOLVER.OPTIMIZER.MOMENTUM", "detectron2"),
    ("SOLVER.WARMUP_ITERS", "SOLVER.SCHEDULER.WARM_UP_ITERS", "detectron2"),
    ("SOLVER.GAMMA", "SOLVER.SCHEDULER.GAMMA", "detectron2"),
    ("SOLVER.STEPS", "SOLVER.SCHEDULER.STEPS", "detectron2"),
    ("SOLVER.LR_SCHEDULER_NAME", "SOLVER.SCHEDULER.POLICY", "detectron2"),
    ("SOLVER.CLIP_GRADIENTS.CLIP_VALUE", "SOLVER.OPTIMIZER.CLIP_GRADIENTS.CLIP_VALUE", "detectron2"),
    ("TEST.EVAL_PERIOD", "TEST.EVAL_ITERS", "detectron2"),
    ("optim_wrapper.optimizer.lr", "SOLVER.OPTIMIZER.BASE_LR", "MMEngine"),
    ("train_cfg.max_iters", "SOLVER.SCHEDULER.TOTAL_ITERS", "MMEngine"),
    ("default_hooks.checkpoint.interval", "SOLVER.SNAPSHOT_ITERS", "MMEngine"),
    ("train_dataloader.batch_size", "DATA.BATCH_SIZE", "MMEngine"),
    ("param_scheduler", "SOLVER.SCHEDULER", "MMEngine"),
])
def test_a_foreign_name_suggests_ours_before_any_spelling_guess(name, target, origin):
    assert config_error(None, [f"{name}=1"]) == (
        f"unknown config key {name} (command line) (did you mean {target}? {origin}'s {name})")


def test_foreign_names_in_a_yaml_file_and_under_a_foreign_section(tmp_path):
    path = write(tmp_path / "mm.yaml", "optim_wrapper:\n  optimizer: {type: SGD, lr: 0.02}\n")
    assert config_error(path) == (f"unknown config key optim_wrapper.optimizer.type ({path}) (did you "
                                  f"mean SOLVER.OPTIMIZER.TYPE? MMEngine's optim_wrapper.optimizer.type)")
    assert foreign_key_hint("optim_wrapper.optimizer.foo") == (
        "did you mean a key under SOLVER.OPTIMIZER? MMEngine's optim_wrapper.optimizer")
    assert foreign_key_hint("SOLVER.CLIP_GRADIENTS.FOO") == (
        "did you mean a key under SOLVER.OPTIMIZER.CLIP_GRADIENTS? detectron2's SOLVER.CLIP_GRADIENTS")
    assert foreign_key_hint("SOLVER.BASE_LR.X") is None  # under a key, not a section: no hint here
    assert foreign_key_hint("SOLVER.OPTIMIZER.BASE_LRR") is None


def test_our_own_renamed_keys_and_spelling_guesses_are_unchanged():
    assert config_error(None, ["SOLVER.OPTIMIZER.CUSTOM_RULES", "()"]).startswith(
        "SOLVER.OPTIMIZER.CUSTOM_RULES (command line): was replaced by SOLVER.OPTIMIZER.CUSTOM_KEYS")
    assert config_error(None, ["SOLVER.SCHEDULER.WARMUP_ITERS", "3"]).endswith(
        "(did you mean SOLVER.SCHEDULER.WARM_UP_ITERS?)")


# ---------------------------------------------------------------------------------------------
# The whole command line, in a subprocess
# ---------------------------------------------------------------------------------------------
def check_cfg(*args, cwd):
    return subprocess.run([sys.executable, str(REPO / "tools" / "check_cfg.py"), *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_check_cfg_takes_a_base_chain_key_equals_value_and_a_negative_value(chain, tmp_path):
    result = check_cfg("--cfg", chain, "SOLVER.OPTIMIZER.BASE_LR=0.02", "SOLVER.SCHEDULER.STEPS=(600, 800)",
                       "SOLVER.OPTIMIZER.KWARGS.dampening", "-1e-4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    merged = yaml.safe_load(result.stdout)
    assert "_BASE_" not in merged and merged["SEED"] == 7
    assert merged["SOLVER"]["OPTIMIZER"]["BASE_LR"] == 0.02
    assert merged["SOLVER"]["OPTIMIZER"]["MOMENTUM"] == 0.5
    assert merged["SOLVER"]["OPTIMIZER"]["KWARGS"] == {"dampening": -1e-4, "maximize": True}
    assert "# merged config: " + str(chain) + " + 3 override(s)" in result.stdout


@pytest.mark.slow
def test_check_cfg_refuses_a_base_cycle_with_status_2_and_one_line(tmp_path):
    write(tmp_path / "a.yaml", "_BASE_: b.yaml\n")
    write(tmp_path / "b.yaml", "_BASE_: a.yaml\n")
    result = check_cfg("--cfg", "a.yaml", cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == "error: --cfg a.yaml: the _BASE_ files form a cycle: a.yaml -> b.yaml -> a.yaml\n"
