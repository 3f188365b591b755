"""Tests of hooks listed by name in the config (CUSTOM_HOOKS), their priorities and the checks
that turn a bad entry into one ConfigError naming the key."""
import pytest

from pet.engine.hook_config import build_custom_hooks, check_custom_hooks, describe_hooks, order_hooks
from pet.engine.hooks import HOOKS, EvalHook, HookBase, IterationTimer, MetricsWriter, PeriodicCheckpointer
from pet.engine.job import validate_job
from pet.lib.config import get_cfg
from pet.lib.config.errors import ConfigError
from pet.lib.config.loader import merge_from_file
from pet.lib.config.runtime import PRIORITIES, priority_value


class CountingHook(HookBase):
    """A user's hook: counts its steps."""

    def __init__(self, every: int, message: str = "hi") -> None:
        self.every, self.message = every, message


@pytest.fixture
def registered():
    HOOKS.register(CountingHook)
    yield
    HOOKS.unregister("CountingHook")


def test_priorities_are_mmengine_s_and_ints_pass_through():
    assert list(PRIORITIES) == ["HIGHEST", "VERY_HIGH", "HIGH", "ABOVE_NORMAL", "NORMAL",
                                "BELOW_NORMAL", "LOW", "VERY_LOW", "LOWEST"]
    assert PRIORITIES["HIGHEST"] == 0 and PRIORITIES["NORMAL"] == 50 and PRIORITIES["LOWEST"] == 100
    assert list(PRIORITIES.values()) == sorted(PRIORITIES.values())
    assert priority_value("low", "K") == 70 and priority_value(55, "K") == 55
    with pytest.raises(ConfigError, match=r"^K: unknown priority 'SOMETIMES'; allowed"):
        priority_value("SOMETIMES", "K")


def test_built_in_hooks_keep_their_order_under_their_priorities():
    # MMEngine's order: the metrics line of an iteration is written before its checkpoints.
    built_in = [IterationTimer, HOOKS.get("LRScheduler"), HOOKS.get("EMAHook"), EvalHook,
                MetricsWriter, PeriodicCheckpointer, HOOKS.get("BestCheckpointer")]
    assert [c.priority for c in built_in] == sorted(c.priority for c in built_in)
    assert MetricsWriter.priority < PeriodicCheckpointer.priority == PRIORITIES["VERY_LOW"]


def test_yaml_entries_build_hooks_with_their_keys_and_priority(registered, tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("CUSTOM_HOOKS:\n- {TYPE: CountingHook, PRIORITY: VERY_HIGH, EVERY: 3}\n"
                    "- {TYPE: countinghook, EVERY: 5, MESSAGE: bye}\n")
    cfg = get_cfg()
    merge_from_file(cfg, str(path))
    cfg.freeze()
    first, second = build_custom_hooks(cfg.CUSTOM_HOOKS)
    assert (first.every, first.message, first.priority) == (3, "hi", 10)
    assert (second.every, second.message, second.priority) == (5, "bye", PRIORITIES["NORMAL"])
    timer = IterationTimer(10, 0)
    ordered = order_hooks([timer, second, first])
    assert ordered == [timer, first, second]  # VERY_HIGH ties with the timer: listed order
    assert describe_hooks(ordered) == "IterationTimer (VERY_HIGH), CountingHook (VERY_HIGH), CountingHook (NORMAL)"
    assert "CUSTOM_HOOKS" in cfg.dump()  # yacs keeps (and dumps) the list of mappings


@pytest.mark.parametrize("entry, message", [
    ({"TYPE": "NoSuchHook"}, "CUSTOM_HOOKS[0].TYPE: unknown value 'NoSuchHook'; allowed: "),
    ({"TYPE": "CountingHook", "EVERY": 1, "EVRY": 2},
     "CUSTOM_HOOKS[0] (CountingHook): unknown key EVRY; CountingHook takes: EVERY, MESSAGE"),
    ({"TYPE": "CountingHook"}, "CUSTOM_HOOKS[0] (CountingHook): missing a required argument: 'every'"),
    ({"TYPE": "CountingHook", "EVERY": 1, "PRIORITY": "SOON"}, "CUSTOM_HOOKS[0].PRIORITY: unknown priority"),
    ({"EVERY": 1}, "CUSTOM_HOOKS[0]: each entry needs a TYPE"),
    ("CountingHook", "CUSTOM_HOOKS[0]: each entry is a mapping"),
])
def test_a_bad_entry_is_one_config_error_naming_the_key(registered, entry, message):
    with pytest.raises(ConfigError) as error:
        check_custom_hooks((entry,))
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_validate_job_checks_hooks_writers_and_ema(registered):
    cfg = get_cfg()
    cfg.CUSTOM_HOOKS = ({"TYPE": "CountingHook", "EVERY": 2},)
    cfg.WRITERS = ("json", "CSV", "tensorboard")
    validate_job(cfg)
    for key, value, message in [("WRITERS", ("json", "wandb"), r"WRITERS\[1\]: unknown value 'wandb'"),
                                ("WRITERS", ("csv", "csv"), "WRITERS: each writer may appear once")]:
        bad = cfg.clone()
        bad[key] = value
        with pytest.raises(ConfigError, match=message):
            validate_job(bad)
    bad = cfg.clone()
    bad.MODEL.EMA.DECAY = 1.0
    with pytest.raises(ConfigError, match=r"MODEL.EMA.DECAY: must be in \[0, 1\), got 1.0"):
        validate_job(bad)
