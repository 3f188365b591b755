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
