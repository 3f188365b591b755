"""SOLVER.OPTIMIZERS as a pure function of the model and the config: one optimizer per top-level
submodule from the entry's keys over SOLVER.OPTIMIZER's, every parameter in exactly one."""
import pytest
import torch
from torch import nn

from pet.lib.config import load_cfg
from pet.lib.config.errors import ConfigError
from pet.lib.utils.multi_optimizer import build_optimizers, optimizer_solvers
from pet.lib.utils.solver import validate_solver


class TwoParts(nn.Module):
    def __init__(self, shared: bool = False):
        super().__init__()
        self.gen = nn.Linear(3, 3)
        self.disc = nn.Linear(3, 1)
        if shared:  # a tied weight: one parameter in both submodules
            self.disc.weight = nn.Parameter(self.gen.weight[:1].detach().clone())
            self.gen.extra = self.disc


def solver(*overrides):
    return load_cfg(None, ["SOLVER.OPTIMIZER.TYPE", "ADAM", "SOLVER.OPTIMIZER.BASE_LR", "0.001", *overrides]).SOLVER


def test_each_entry_over_the_shared_keys_builds_its_submodules_optimizer():
    cfg = solver("SOLVER.OPTIMIZERS.gen.BASE_LR", "0.01", "SOLVER.OPTIMIZERS.gen.BETAS", "(0.5, 0.9)",
                 "SOLVER.OPTIMIZERS.disc.TYPE", "SGD", "SOLVER.OPTIMIZERS.disc.SCHEDULER.POLICY", "COSINE")
    model = TwoParts()
    optimizers = build_optimizers(model, cfg)
    assert list(optimizers) == ["gen", "disc"]
    assert isinstance(optimizers["gen"], torch.optim.Adam) and isinstance(optimizers["disc"], torch.optim.SGD)
    assert {g["lr"] for g in optimizers["gen"].param_groups} == {0.01}
    assert {g["betas"] for g in optimizers["gen"].param_groups} == {(0.5, 0.9)}
    assert {id(p) for g in optimizers["gen"].param_groups for p in g["params"]} == {id(p) for p in model.gen.parameters()}
    nodes = optimizer_solvers(cfg)
    assert nodes["disc"].SCHEDULER.POLICY == "COSINE" and nodes["gen"].SCHEDULER.POLICY == cfg.SCHEDULER.POLICY
    assert nodes["disc"].OPTIMIZER.BASE_LR == 0.001  # not given: SOLVER.OPTIMIZER's


def test_an_empty_entry_takes_every_shared_key(tmp_path):
    """``gen: {}`` (YAML or command line) or ``gen: {SCHEDULER: {}}``: an optimizer of its own
    with SOLVER.OPTIMIZER's keys (refused as "expected NoneType, got {}" and "unknown config
    key SOLVER.OPTIMIZERS.gen.SCHEDULER")."""
    (tmp_path / "two.yaml").write_text("SOLVER:\n  OPTIMIZER: {TYPE: ADAM, BASE_LR: 0.001}\n"
                                       "  OPTIMIZERS:\n    gen: {SCHEDULER: {}}\n    disc: {TYPE: SGD}\n")
    for cfg in (load_cfg(str(tmp_path / "two.yaml")).SOLVER,
                solver("SOLVER.OPTIMIZERS.gen", "{}", "SOLVER.OPTIMIZERS.disc.TYPE", "SGD")):
        optimizers = build_optimizers(TwoParts(), cfg)
        assert isinstance(optimizers["gen"], torch.optim.Adam) and isinstance(optimizers["disc"], torch.optim.SGD)
        assert {g["lr"] for g in optimizers["gen"].param_groups} == {0.001}


def test_a_parameter_in_none_or_in_two_optimizers_is_one_line_naming_it():
    with pytest.raises(ConfigError, match=r"^SOLVER.OPTIMIZERS: parameter 'disc.weight' is in no optimizer; "
                                          r"add its top-level submodule 'disc'"):
        build_optimizers(TwoParts(), solver("SOLVER.OPTIMIZERS.gen.BASE_LR", "0.01"))
    with pytest.raises(ConfigError, match=r"^SOLVER.OPTIMIZERS: parameter 'gen.extra.weight' is also one of 'disc'"):
        build_optimizers(TwoParts(shared=True), solver("SOLVER.OPTIMIZERS.disc.BASE_LR", "0.01",
                                                       "SOLVER.OPTIMIZERS.gen.BASE_LR", "0.01"))


@pytest.mark.parametrize("overrides, message", [
    (["SOLVER.OPTIMIZERS.gen.TYPE", "ADAMM"], r"^SOLVER.OPTIMIZERS.gen.TYPE: unknown value 'ADAMM'"),
    (["SOLVER.OPTIMIZERS.gen.SCHEDULER.GAMMA", "-1.0"], r"^SOLVER.OPTIMIZERS.gen.SCHEDULER.GAMMA"),
    (["SOLVER.OPTIMIZERS.gen.SCHEDULER.TOTAL_EPOCHS", "3"], r"^SOLVER.OPTIMIZERS.gen.SCHEDULER.TOTAL_EPOCHS: the run's length"),
    (["SOLVER.OPTIMIZERS.gen.BETAS", "fast"], r"^SOLVER.OPTIMIZERS.gen.BETAS"),
])
def test_validation_names_the_entrys_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate_solver(solver(*overrides))
