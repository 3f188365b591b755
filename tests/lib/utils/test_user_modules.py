"""Registries for users: an optimizer class, a param rule, a param-groups builder and an lr policy
registered in the user's own module (user_module_example.py), imported through CUSTOM_IMPORTS and
chosen by name in YAML; bad input is one line and exit status 2."""
import copy
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from pet.lib.config.cli import build_parser, parse_cfg
from pet.lib.utils.lr_schedules import LR_POLICIES
from pet.lib.utils.optimizer import OPTIMIZERS, Optimizer
from pet.lib.utils.param_groups import PARAM_GROUPS_BUILDERS, PARAM_RULES

REPO = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
USER_YAML = """CUSTOM_IMPORTS: [user_module_example]
SOLVER:
  OPTIMIZER:
    TYPE: user_sign_sgd
    BASE_LR: 0.01
    WEIGHT_DECAY: 0.001
    RULES: [user_linear, norm, embed, bias]
"""


@pytest.fixture
def user_module():
    """Import the user's module as CUSTOM_IMPORTS would, and undo its registrations after."""
    yield
    sys.modules.pop("user_module_example", None)
    for registry, name in ((OPTIMIZERS, "USER_SIGN_SGD"), (PARAM_RULES, "user_linear"),
                           (PARAM_GROUPS_BUILDERS, "user_one_group"),
                           (LR_POLICIES, "USER_INVERSE_SQRT")):
        if name in registry:
            registry.unregister(name)


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))


def test_custom_imports_registers_an_optimizer_and_a_rule_chosen_from_yaml(tmp_path, user_module):
    path = tmp_path / "user.yaml"
    path.write_text(USER_YAML)
    _, cfg = parse_cfg(build_parser("test"), ["--cfg", str(path)])
    model = net()
    reference = copy.deepcopy(model)
    opt = Optimizer(model, cfg.SOLVER.OPTIMIZER).build()
    assert type(opt).__name__ == "SignSGD"
    by_name = {n: (g["lr"], g["weight_decay"]) for g in opt.param_groups for n in g["param_names"]}
    assert by_name["0.weight"] == (pytest.approx(0.03), 0.0)  # the user's rule
    assert by_name["1.weight"] == (0.01, 0.0) and by_name["0.bias"] == (0.01, 0.0)  # norm, bias
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        lr, wd = by_name[name]
        torch.testing.assert_close(p, q - lr * (1.0 + wd * q))


def test_a_registered_builder_makes_the_groups(tmp_path, user_module):
    path = tmp_path / "builder.yaml"
    path.write_text("CUSTOM_IMPORTS: [user_module_example]\nSOLVER:\n  OPTIMIZER:\n"
                    "    PARAM_GROUPS_BUILDER: user_one_group\n    BASE_LR: 0.2\n")
    _, cfg = parse_cfg(build_parser("test"), ["--cfg", str(path)])
    opt = Optimizer(net(), cfg.SOLVER.OPTIMIZER).build()
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["initial_lr"] == 0.2
    assert opt.param_groups[0]["weight_decay"] == cfg.SOLVER.OPTIMIZER.WEIGHT_DECAY


def test_an_unimportable_module_exits_2_with_one_line(tmp_path, capsys):
    path = tmp_path / "missing.yaml"
    path.write_text("CUSTOM_IMPORTS: [no_such_user_module]\n")
    with pytest.raises(SystemExit) as exit_:
        parse_cfg(build_parser("test"), ["--cfg", str(path)])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        "error: CUSTOM_IMPORTS: cannot import 'no_such_user_module' (ModuleNotFoundError: No module "
        "named 'no_such_user_module'); allowed: modules importable from sys.path (set PYTHONPATH)\n")


def run_tool(tool, *args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), env_path()]))
    return subprocess.run([sys.executable, str(REPO / "tools" / tool), *args], cwd=REPO, env=env,
                          capture_output=True, text=True)


def env_path():
    return os.environ.get("PYTHONPATH", "")


@pytest.mark.slow
def test_explain_solver_shows_the_user_rule_from_yaml_custom_imports(tmp_path):
    path = tmp_path / "user.yaml"
    path.write_text(USER_YAML.replace("SOLVER:", "MODEL:\n  TYPE: transformer\nSOLVER:"))
    result = run_tool("explain_solver.py", "--cfg", str(path), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["optimizer"] == "SignSGD"
    rules = {p["name"]: (p["rule"], p["lr"], p["weight_decay"]) for p in report["params"]}
    assert rules["head.weight"] == ("user_linear", pytest.approx(0.03), 0.0)
    assert rules["backbone.norm.weight"] == ("norm+backbone", 0.01, 0.0)


# The user's policy in iteration mode: a 10-iteration linear warm-up, then sqrt(10 / i).
USER_POLICY_YAML = """CUSTOM_IMPORTS: [user_module_example]
MODEL:
  TYPE: cnn
  CNN: {CHANNELS: [4, 8, 8], HIDDEN_DIM: 16}
SOLVER:
  OPTIMIZER: {BASE_LR: 0.1, BIAS_LR_FACTOR: 2.0}
  SCHEDULER:
    POLICY: user_inverse_sqrt
    TOTAL_EPOCHS: null
    TOTAL_ITERS: 40
    WARM_UP_EPOCHS: null
    WARM_UP_ITERS: 10
    WARM_UP_FACTOR: 0.1
"""


@pytest.mark.slow
def test_a_user_policy_from_yaml_custom_imports_drives_plot_lr_and_check_cfg(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(USER_POLICY_YAML)
    checked = run_tool("check_cfg.py", "--cfg", str(path))
    assert checked.returncode == 0, checked.stderr
    assert "schedule: USER_INVERSE_SQRT, iteration-based" in checked.stdout
    assert "milestones" not in checked.stdout  # the policy reads no STEPS

    plotted = run_tool("plot_lr.py", "--cfg", str(path), "--out", str(tmp_path / "lr.png"),
                       "--csv", str(tmp_path / "lr.csv"))
    assert plotted.returncode == 0, plotted.stderr
    with open(tmp_path / "lr.csv", newline="") as f:
        header, *rows = list(csv.reader(f))
    lr_columns = [k for k, name in enumerate(header) if name.startswith("lr:")]
    assert len(rows) == 41 and len(lr_columns) == 2  # weights and biases (lr x2)
    expected = [0.1 + 0.9 * i / 10 if i < 10 else math.sqrt(10 / i) for i in range(41)]
    for k in lr_columns:
        top = float(rows[10][k])  # the warm-up's end: factor 1
        assert top in (0.1, 0.2)
        assert [float(row[k]) for row in rows] == pytest.approx([top * f for f in expected], rel=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("overrides,message", [
    (["CUSTOM_IMPORTS", "['no_such_user_module']"],
     "error: CUSTOM_IMPORTS: cannot import 'no_such_user_module' (ModuleNotFoundError"),
    (["SOLVER.OPTIMIZER.TYPE", "ADAGRAD", "SOLVER.OPTIMIZER.KWARGS.rho", "0.9"],
     "error: SOLVER.OPTIMIZER.KWARGS.rho: ADAGRAD (torch.optim.adagrad.Adagrad) takes no keyword 'rho'; allowed: "),
    (["SOLVER.OPTIMIZER.CUSTOM_KEYS", "[{'KEY': 'haed', 'LR_MULT': 10}]"],
     "error: SOLVER.OPTIMIZER.CUSTOM_KEYS: KEY 'haed' matches no trainable parameter; names look like "),
    (["SOLVER.OPTIMIZER.RULES", "['norm', 'user_linear']"],
     "error: SOLVER.OPTIMIZER.RULES: unknown value 'user_linear'; allowed: norm, embed, bias, dwconv, flat"),
    (["SOLVER.OPTIMIZER.TYPE", "LBFGS"], "error: SOLVER.OPTIMIZER.TYPE: 'LBFGS' is not supported: "),
])
def test_bad_input_exits_2_with_one_line(overrides, message):
    result = run_tool("explain_solver.py", "--cfg", "cfgs/digits_cnn_sgd_step.yaml", *overrides)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr
