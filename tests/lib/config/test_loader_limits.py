"""The loader's limits: hostile YAML and overrides are one-line ConfigErrors."""
import pytest

from pet.lib.config import ConfigError, load_cfg


@pytest.mark.parametrize("text, message", [
    ("a: &x 1\nb: *x\n", "aliases"),
    ("SEED: " + "[" * 100 + "]" * 100, "nested deeper than 32"),
    ("SOLVER: {}\nSOLVER: {}\n", "key SOLVER is given twice"),
    ("SOLVER: {OPTIMIZER: {BASE_LR: .inf}}", "SOLVER.OPTIMIZER.BASE_LR: expected a finite number"),
    ("SOLVER: {OPTIMIZER: {MOMENTUM: .nan}}", "expected a finite number"),
])
def test_hostile_yaml_is_refused(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_cfg(str(path))


def test_non_utf8_and_directory_and_size(tmp_path):
    (tmp_path / "b.yaml").write_bytes(b"SEED: \xff")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_cfg(str(tmp_path / "b.yaml"))
    (tmp_path / "d.yaml").mkdir()
    with pytest.raises(ConfigError, match="not a regular file"):
        load_cfg(str(tmp_path / "d.yaml"))
    (tmp_path / "big.yaml").write_text("#" * (1 << 21))
    with pytest.raises(ConfigError, match="larger than 1024 KiB"):
        load_cfg(str(tmp_path / "big.yaml"))


def test_infinity_stays_allowed_where_it_means_the_max_norm():
    cfg = load_cfg(None, ["SOLVER.OPTIMIZER.CLIP_GRADIENTS.NORM_TYPE", "1e999"])
    assert cfg.SOLVER.OPTIMIZER.CLIP_GRADIENTS.NORM_TYPE == float("inf")


@pytest.mark.parametrize("overrides, message", [
    (["SOLVER.OPTIMIZER.BASE_LR", "1e999"], "finite number"),
    (["SOLVER.OPTIMIZER.BASE_LR", "9" * 400], "too large"),
    (["SEED", "1" * 20000], "longer than"),
])
def test_hostile_overrides_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_cfg(None, overrides)


def test_a_mapping_where_a_single_value_goes_says_what_goes_there():
    with pytest.raises(ConfigError, match=r"^SOLVER.SCHEDULER.TOTAL_EPOCHS: expected a single value or a "
                                          r"list, got \{'a': 1\} \(dict\)$"):
        load_cfg(None, ["SOLVER.SCHEDULER.TOTAL_EPOCHS", "{'a': 1}"])


@pytest.mark.parametrize("key, flow", [
    ("SOLVER.OPTIMIZER.CUSTOM_KEYS", "[{KEY: head, LR_MULT: 10.0, DECAY_MULT: 1e-1}]"),
    ("WRITERS", "[json]"),
    ("SOLVER.DISTRIBUTED.FSDP_BLOCKS", "[backbone.blocks.layers.*]"),
    ("SOLVER.SCHEDULER.STEPS", "[1e3, 2e3]"),
    ("SOLVER.SCHEDULER.PARAMS", "[{PARAM: momentum, START: 0.85, END: 0.95}]"),
    ("SOLVER.OPTIMIZER.KWARGS", "{lr_decay: 1e-4}"),
    ("SOLVER.OPTIMIZERS", "{generator: {BASE_LR: 1e-3, SCHEDULER: {POLICY: COSINE}}, discriminator: {}}"),
])
def test_a_command_line_value_may_be_written_as_in_the_yaml_file(tmp_path, key, flow):
    path = tmp_path / "c.yaml"
    *sections, leaf = key.split(".")
    path.write_text("".join(f"{'  ' * depth}{name}:\n" for depth, name in enumerate(sections))
                    + f"{'  ' * len(sections)}{leaf}: {flow}\n")
    from_file = load_cfg(str(path))
    from_command_line = load_cfg(None, [key, flow])
    assert from_command_line == from_file
    assert from_command_line != load_cfg(None)


@pytest.mark.parametrize("overrides, value", [
    (["OUTPUT_DIR", "[runs]"], "[runs]"),  # a text key keeps its text
    (["SOLVER.OPTIMIZER.CUSTOM_KEYS", "[{'KEY': 'head', 'LR_MULT': 10.0}]"], ({"KEY": "head", "LR_MULT": 10.0},)),
])
def test_python_literals_and_text_keys_read_as_before(overrides, value):
    cfg = load_cfg(None, overrides)
    got = cfg
    for part in overrides[0].split("."):
        got = got[part]
    assert got == value


@pytest.mark.parametrize("overrides, message", [
    (["WRITERS", "[&a json, *a]"], r"^WRITERS \(command line\): not a Python literal nor valid YAML \(.*aliases"),
    (["SOLVER.OPTIMIZER.CUSTOM_KEYS", "[{KEY: head, KEY: neck}]"], r"key KEY is given twice"),
    (["SOLVER.SCHEDULER.STEPS", "[1, [2"], r"^SOLVER.SCHEDULER.STEPS \(command line\): not a Python literal nor "
                                           r"valid YAML \(.*\)$"),
])
def test_a_command_line_collection_that_is_neither_literal_nor_yaml_says_so(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_cfg(None, overrides)
