"""End-to-end tests of the user tools (plot_lr, explain_solver, check_cfg), each run as a user runs
it: ``python tools/NAME.py --cfg FILE [KEY VALUE ...]`` in a subprocess."""
import csv
import json
import math
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pet.lib.config import load_cfg
from pet.lib.utils.optimizer import Optimizer
from pet.lib.utils.param_groups import explain_params, grouping_spec
from pet.reports.param_report import group_rules
from pet.models import build_model

pytestmark = pytest.mark.slow  # every test here runs a tool in a subprocess

REPO = Path(__file__).resolve().parents[2]
TOOLS = ("plot_lr", "explain_solver", "check_cfg")

# A small epoch-based job: 44 iterations per epoch with the digits' 1437 training images in
# batches of 32, so 4 epochs are 176 iterations.
EPOCH_CFG = {
    "MODEL": {"TYPE": "transformer", "TRANSFORMER": {"EMBED_DIM": 16, "DEPTH": 1, "NUM_HEADS": 2}},
    "SOLVER": {
        "OPTIMIZER": {"BASE_LR": 0.05, "BIAS_LR_FACTOR": 2.0, "BACKBONE_LR_FACTOR": 0.5},
        "SCHEDULER": {"POLICY": "STEP", "TOTAL_EPOCHS": 4, "STEPS": [2, 3], "WARM_UP_EPOCHS": 1},
    },
}


def run_tool(name, *args, cwd):
    """Run tools/NAME.py with ``args`` from ``cwd``; return the CompletedProcess."""
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / f"{name}.py"), *map(str, args)],
        cwd=cwd, capture_output=True, text=True, timeout=300,
    )


def write_cfg(directory, cfg, name="job.yaml"):
    path = Path(directory) / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def read_png_size(path):
    """(width, height) from the IHDR chunk; asserts the PNG signature."""
    header = Path(path).read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    assert header[12:16] == b"IHDR"
    return struct.unpack(">II", header[16:24])


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], [[float(cell) for cell in row] for row in rows[1:]]


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


# ---------------------------------------------------------------------------------------------
# plot_lr
# ---------------------------------------------------------------------------------------------
def test_plot_lr_writes_png_and_csv_per_distinct_curve(tmp_path):
    cfg = write_cfg(tmp_path, EPOCH_CFG)
    result = run_tool("plot_lr", "--cfg", cfg, "--out", "lr.png", "--csv", "lr.csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    width, height = read_png_size(tmp_path / "lr.png")
    assert 400 <= width <= 3000 and 300 <= height <= 2000
    assert 10_000 < (tmp_path / "lr.png").stat().st_size < 500_000

    header, rows = read_csv(tmp_path / "lr.csv")
    # Backbone weights, norms and embeddings share lr 0.025 (weight decays differ), backbone
    # biases and head weights 0.05, head biases 0.1: three curves.
    assert header == ["iteration", "epoch", "lr:embed+backbone/norm+backbone/default+backbone",
                      "lr:bias+backbone/default", "lr:bias"]
    assert [row[0] for row in rows] == list(range(177))
    assert rows[88][1] == 2.0
    tops = [0.025, 0.05, 0.1]
    # Warm-up from 1/3 at iteration 0 to the top at epoch 1, x0.1 at epochs 2 and 3.
    assert rows[0][2:] == pytest.approx([top / 3 for top in tops], rel=1e-12)
    assert rows[44][2:] == pytest.approx(tops, rel=1e-12)
    assert rows[87][2:] == pytest.approx(tops, rel=1e-12)
    assert rows[88][2:] == pytest.approx([top * 0.1 for top in tops], rel=1e-12)
    assert rows[176][2:] == pytest.approx([top * 0.01 for top in tops], rel=1e-12)


def test_plot_lr_csv_equals_the_lrs_of_a_real_training_run(tmp_path):
    """train_net logs (LOG_PERIOD 1) the lr of its largest param group at every iteration: the
    CSV column of the curve holding that group must equal it exactly; so must the weight decay
    scheduled beside it (SOLVER.SCHEDULER.PARAMS), logged and drawn alike."""
    job = {
        "OUTPUT_DIR": str(tmp_path / "run"),
        "LOG_PERIOD": 1,
        "NUM_THREADS": 1,
        "MODEL": {"TYPE": "cnn", "CNN": {"CHANNELS": [4, 8, 8], "HIDDEN_DIM": 16}},
        "SOLVER": {
            "OPTIMIZER": {"BASE_LR": 0.05, "BIAS_LR_FACTOR": 2.0, "BACKBONE_LR_FACTOR": 0.5},
            "SCHEDULER": {"POLICY": "STEP_COSINE", "TOTAL_ITERS": 24, "STEPS": [8, 16], "WARM_UP_ITERS": 4,
                          "PARAMS": [{"PARAM": "weight_decay", "START": 0.0001, "END": 0.001}]},
        },
    }
    cfg_file = write_cfg(tmp_path, job)
    trained = subprocess.run([sys.executable, str(REPO / "tools" / "train_net.py"), "--cfg", str(cfg_file)],
                             cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert trained.returncode == 0, trained.stderr
    with open(tmp_path / "run" / "metrics.json") as f:
        records = [json.loads(line) for line in f]
    trained_lrs = {record["iteration"]: record["lr"] for record in records}
    assert sorted(trained_lrs) == list(range(24))

    result = run_tool("plot_lr", "--cfg", cfg_file, "--csv", "lr.csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    header, rows = read_csv(tmp_path / "lr.csv")
    assert len(rows) == 25  # iterations 0..24: the last is where the schedule ends

    cfg = load_cfg(str(cfg_file))
    model = build_model(cfg)
    groups = Optimizer(model, cfg.SOLVER.OPTIMIZER).build().param_groups
    largest = max(range(len(groups)), key=lambda g: sum(p.numel() for p in groups[g]["params"]))
    rules = group_rules(groups, explain_params(model, grouping_spec(cfg.SOLVER.OPTIMIZER)))[largest]
    column = next(k for k, name in enumerate(header) if set(rules) <= set(name[3:].split("/")))
    assert header[column].startswith("lr:")
    assert len(set(header)) == len(header) > 3  # several distinct curves, so the choice matters
    assert [rows[i][column] for i in range(24)] == [trained_lrs[i] for i in range(24)]
    # The weight decay of the largest group (built with WEIGHT_DECAY 0.0001 = START): cosine up.
    decay = header.index("weight_decay")
    assert [rows[i][decay] for i in range(24)] == [r["weight_decay"] for r in records]
    assert records[0]["weight_decay"] == pytest.approx(0.0001) and rows[24][decay] == pytest.approx(0.001)


def test_plot_lr_takes_iterations_per_epoch_explicitly(tmp_path):
    cfg = write_cfg(tmp_path, EPOCH_CFG)
    result = run_tool("plot_lr", "--cfg", cfg, "--iter-per-epoch", 10, "--csv", "lr.csv",
                      "SOLVER.SCHEDULER.POLICY", "COSINE", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "lr_curve.png").is_file()  # the default --out, in the working directory
    header, rows = read_csv(tmp_path / "lr.csv")
    assert len(rows) == 41 and rows[-1][:2] == [40, 4.0]
    assert rows[-1][2:] == [0.0] * (len(header) - 2)  # cosine down to MIN_LR_FACTOR 0


# ---------------------------------------------------------------------------------------------
# explain_solver
# ---------------------------------------------------------------------------------------------
def test_explain_solver_json_lists_every_parameter_and_group(tmp_path):
    cfg = write_cfg(tmp_path, EPOCH_CFG)
    result = run_tool("explain_solver", "--cfg", cfg, "--json", "--strict", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["optimizer"] == "SGD" and report["warnings"] == []
    params = {p["name"]: p for p in report["params"]}
    assert params["backbone.cls_token"] == {
        "name": "backbone.cls_token", "shape": [1, 1, 16], "rule": "embed+backbone",
        "lr": 0.025, "weight_decay": 0.0, "group": 0,
    }
    assert params["head.bias"]["rule"] == "bias" and params["head.bias"]["lr"] == 0.1
    groups = report["groups"]
    assert sum(g["tensors"] for g in groups) == len(params)
    for p in params.values():
        group = groups[p["group"]]
        assert (group["lr"], group["weight_decay"]) == (p["lr"], p["weight_decay"])
        assert p["rule"] in group["rules"]


def test_explain_solver_text_table(tmp_path):
    cfg = write_cfg(tmp_path, {"MODEL": {"TYPE": "cnn"}})
    result = run_tool("explain_solver", "--cfg", cfg, "SOLVER.OPTIMIZER.TYPE", "ADAMW", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["parameter", "shape", "rule", "lr", "weight_decay", "group"]
    bn_weight = next(line for line in lines if line.startswith("backbone.conv1.bn.weight"))
    assert bn_weight.split()[-4:] == ["norm+backbone", "0.1", "0", "1"]
    assert "param group(s) of AdamW:" in result.stdout
    assert lines[-1] == "0 warning(s)."


def test_explain_solver_reports_each_of_several_optimizers(tmp_path):
    """SOLVER.OPTIMIZERS (the shipped GAN): one report per optimizer over its submodule, with
    its own lr; every parameter of the model in exactly one."""
    result = run_tool("explain_solver", "--cfg", REPO / "cfgs" / "digits_gan_adam.yaml", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    reports = json.loads(result.stdout)["optimizers"]
    assert {name: (r["optimizer"], [g["lr"] for g in r["groups"]]) for name, r in reports.items()} == {
        "generator": ("Adam", [0.0005]), "discriminator": ("Adam", [0.0002])}
    names = [p["name"] for r in reports.values() for p in r["params"]]
    model = build_model(load_cfg(str(REPO / "cfgs" / "digits_gan_adam.yaml")))
    assert sorted(names) == sorted(name for name, _ in model.named_parameters())
    text = run_tool("explain_solver", "--cfg", REPO / "cfgs" / "digits_gan_adam.yaml", cwd=tmp_path).stdout
    assert text.startswith("== SOLVER.OPTIMIZERS.generator (Adam) ==\n")
    assert "== SOLVER.OPTIMIZERS.discriminator (Adam) ==" in text


@pytest.mark.parametrize("tool", ["explain_solver", "check_cfg"])
def test_a_report_read_by_head_ends_without_a_traceback(tmp_path, tool):
    """``tool | head -1`` once head has gone (``| true`` goes before the tool's first write):
    the tool ends by SIGPIPE, as ls does, without a traceback."""
    command = f"{sys.executable} {REPO / 'tools' / f'{tool}.py'} --cfg {REPO / 'cfgs' / 'digits_gan_adam.yaml'} | true"
    result = subprocess.run(["bash", "-c", f"{command}; echo ${{PIPESTATUS[0]}}"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.stdout.split() == [str(128 + signal.SIGPIPE)] and result.stderr == ""


# ---------------------------------------------------------------------------------------------
# check_cfg
# ---------------------------------------------------------------------------------------------
def test_check_cfg_prints_merged_config_and_derived_quantities(tmp_path):
    cfg = write_cfg(tmp_path, EPOCH_CFG)
    result = run_tool("check_cfg", "--cfg", cfg, "SOLVER.SCHEDULER.STEPS", "(1.5, 3)", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "# max_iter: 176 iterations = 4 epochs" in result.stdout
    assert "# warm-up: 44 iterations = 1 epoch (LINEAR from factor 0.333333)" in result.stdout
    assert "# milestones (iterations): 66, 132" in result.stdout
    assert "# iterations per epoch: 44 (data set digits, DATA.BATCH_SIZE 32)" in result.stdout
    assert result.stdout.rstrip().endswith("# OK: the config is valid")
    # The output is the merged config: it loads back as a config and checks the same.
    merged = tmp_path / "merged.yaml"
    merged.write_text(result.stdout)
    assert yaml.safe_load(result.stdout)["SOLVER"]["SCHEDULER"]["STEPS"] == [1.5, 3]
    again = run_tool("check_cfg", "--cfg", merged, "--iter-per-epoch", 10, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "# max_iter: 40 iterations = 4 epochs" in again.stdout
    assert "# iterations per epoch: 10 (--iter-per-epoch)" in again.stdout


def test_check_cfg_validates_with_the_given_iterations_per_epoch(tmp_path):
    """A warm-up of 50 iterations fits a 1-epoch schedule of 100 iterations, not one of the
    data set's 44: --iter-per-epoch decides, both ways."""
    cfg = write_cfg(tmp_path, EPOCH_CFG)
    overrides = ["SOLVER.SCHEDULER.TOTAL_EPOCHS", "1", "SOLVER.SCHEDULER.STEPS", "()",
                 "SOLVER.SCHEDULER.WARM_UP_EPOCHS", "None", "SOLVER.SCHEDULER.WARM_UP_ITERS", "50"]
    given = run_tool("check_cfg", "--cfg", cfg, "--iter-per-epoch", 100, *overrides, cwd=tmp_path)
    assert given.returncode == 0, given.stderr
    assert "# max_iter: 100 iterations = 1 epoch" in given.stdout
    assert_one_line_error(run_tool("check_cfg", "--cfg", cfg, *overrides, cwd=tmp_path),
                          "SOLVER.SCHEDULER.WARM_UP_ITERS=50: the warm-up must be shorter than the "
                          "schedule (1 epoch = 44 iterations)")


def test_check_cfg_passes_the_readme_config():
    result = run_tool("check_cfg", "--cfg", REPO / "cfgs" / "digits_cnn_sgd_step.yaml", cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("# OK: the config is valid")


def test_check_cfg_unknown_yaml_key_suggests_the_closest(tmp_path):
    cfg = write_cfg(tmp_path, {"SOLVER": {"SCHEDULER": {"WARMUP_ITERS": 10}}})
    result = run_tool("check_cfg", "--cfg", cfg, cwd=tmp_path)
    assert_one_line_error(result, "unknown config key SOLVER.SCHEDULER.WARMUP_ITERS",
                          "did you mean SOLVER.SCHEDULER.WARM_UP_ITERS?")
    assert result.stdout == ""


@pytest.mark.parametrize("overrides, fragments", [
    (["SOLVER.SCHEDULER.GAMA", "0.5"], ["did you mean SOLVER.SCHEDULER.GAMMA?"]),
    (["SOLVER.SCHEDULER.POLICY", "LINEAR_DECAY"], ["SOLVER.SCHEDULER.POLICY: unknown value 'LINEAR_DECAY'"]),
    (["MODEL.TYPE", "resnet"], ["MODEL.TYPE: unknown value 'resnet'; allowed: cnn, transformer"]),
    (["SOLVER.SCHEDULER.STEPS", "(3, 5)"],
     ["SOLVER.SCHEDULER.STEPS", "below the schedule's length (4 epochs)"]),
])
def test_check_cfg_bad_override_exits_2_with_one_line(tmp_path, overrides, fragments):
    cfg = write_cfg(tmp_path, EPOCH_CFG)
    assert_one_line_error(run_tool("check_cfg", "--cfg", cfg, *overrides, cwd=tmp_path), *fragments)


# ---------------------------------------------------------------------------------------------
# The same errors from every tool
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tool", ["plot_lr", "explain_solver"])
def test_every_tool_rejects_a_bad_config_like_train_net(tmp_path, tool):
    cfg = write_cfg(tmp_path, EPOCH_CFG)
    result = run_tool(tool, "--cfg", cfg, "SOLVER.SCHEDULER.WARM_UP_ITER", "5", cwd=tmp_path)
    assert_one_line_error(result, "did you mean SOLVER.SCHEDULER.WARM_UP_ITERS?")
    assert not (tmp_path / "lr_curve.png").exists()


# ---------------------------------------------------------------------------------------------
# The schedules beyond Pet's four (issue 13)
# ---------------------------------------------------------------------------------------------
def test_check_cfg_warns_about_keys_the_run_ignores_and_lists_no_milestones_without_them(tmp_path):
    cfg = write_cfg(tmp_path, EPOCH_CFG)
    result = run_tool("check_cfg", "--cfg", cfg, "SOLVER.SCHEDULER.POLICY", "COSINE",
                      "SOLVER.SCHEDULER.TOTAL_ITERS", "5", "TEST.EVAL_EPOCHS", "2", "TEST.EVAL_ITERS", "7",
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "# milestones" not in result.stdout
    for line in ("SOLVER.SCHEDULER.TOTAL_ITERS=5 is ignored: SOLVER.SCHEDULER.TOTAL_EPOCHS is set",
                 "TEST.EVAL_ITERS=7 is ignored: TEST.EVAL_EPOCHS is set",
                 "SOLVER.SCHEDULER.STEPS=(2, 3) is ignored: POLICY COSINE has no milestones"):
        assert f"# warning: {line}" in result.stdout
    assert result.stdout.rstrip().endswith("# OK: the config is valid (3 warning(s): set but ignored)")


def test_check_cfg_warns_about_each_optimizers_ignored_keys(tmp_path):
    # The GAN: generator COSINE (SOLVER.SCHEDULER's), discriminator STEP with its own STEPS and GAMMA.
    result = run_tool("check_cfg", "--cfg", REPO / "cfgs" / "digits_gan_adam.yaml",
                      "SOLVER.OPTIMIZERS.generator.SCHEDULER.STEPS", "(10,)",  # its COSINE has none
                      "SOLVER.SCHEDULER.STEPS", "(5,)",  # COSINE ignores it, the discriminator has its own
                      "SOLVER.SCHEDULER.LR_POW", "2",  # neither schedule is POLY
                      "SOLVER.SCHEDULER.WARM_UP_FACTOR", "0.5",  # both warm up: read
                      "SOLVER.OPTIMIZERS.discriminator.SCHEDULER.COSINE_RESTARTS.T_0", "5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stdout.splitlines() if line.startswith("# warning:")]
    assert warnings == [
        "# warning: SOLVER.OPTIMIZERS.generator.SCHEDULER.STEPS=(10,) is ignored: POLICY COSINE has no milestones",
        "# warning: SOLVER.OPTIMIZERS.discriminator.SCHEDULER.COSINE_RESTARTS.T_0=5 is ignored: POLICY is STEP",
        "# warning: SOLVER.SCHEDULER.STEPS=(5,) is ignored: POLICY COSINE has no milestones",
        "# warning: SOLVER.SCHEDULER.LR_POW=2.0 is ignored: POLICY COSINE is not POLY",
    ]


@pytest.mark.parametrize("overrides, fragment", [
    (["SOLVER.SCHEDULER.POLICY", "WSD", "SOLVER.SCHEDULER.WSD.DECAY_SHAPE", "EXP"],
     "SOLVER.SCHEDULER.WSD.DECAY_SHAPE: unknown value 'EXP'"),
    (["SOLVER.SCHEDULER.MIN_LR", "0.001", "SOLVER.SCHEDULER.MIN_LR_FACTOR", "0.1"],
     "SOLVER.SCHEDULER.MIN_LR=0.001: set MIN_LR (absolute) or MIN_LR_FACTOR"),
    (["SOLVER.SCHEDULER.POLICY", "PHASES", "SOLVER.SCHEDULER.PHASES", "[{'POLICY': 'COSINE', 'LENGTH': 1}]"],
     "SOLVER.SCHEDULER.PHASES: the lengths come to 44 iterations"),
])
def test_check_cfg_bad_new_scheduler_keys_exit_2_with_one_line(tmp_path, overrides, fragment):
    cfg = write_cfg(tmp_path, EPOCH_CFG)
    assert_one_line_error(run_tool("check_cfg", "--cfg", cfg, *overrides, cwd=tmp_path), fragment)


def test_plot_lr_log_scale_and_momentum_panel(tmp_path):
    cfg = write_cfg(tmp_path, EPOCH_CFG)
    result = run_tool("plot_lr", "--cfg", cfg, "--log", "--csv", "lr.csv", "SOLVER.SCHEDULER.POLICY",
                      "ONE_CYCLE", "SOLVER.SCHEDULER.WARM_UP_EPOCHS", "None", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert read_png_size(tmp_path / "lr_curve.png") == (800, 500)


# ---------------------------------------------------------------------------------------------
# Output paths and valid-but-huge values: a result or one line, within seconds
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tool, args, fragment", [
    ("plot_lr", ["--cfg", "job.yaml", "--out", "missing/lr.png"], "--out missing/lr.png: no such directory"),
    ("plot_lr", ["--cfg", "job.yaml", "--csv", "."], "--csv .: is a directory; give a file path"),
    ("plot_metrics", ["--out", "missing/m.png", "."], "--out missing/m.png: no such directory"),
    ("benchmark_solver", ["--cfg", "job.yaml", "--quick", "--json", "."], "--json .: is a directory"),
], ids=["plot_lr-out", "plot_lr-csv", "plot_metrics-out", "benchmark_solver-json"])
def test_an_output_path_that_cannot_be_written_is_one_line_before_any_work(tmp_path, tool, args, fragment):
    write_cfg(tmp_path, EPOCH_CFG)
    result = run_tool(tool, *args, cwd=tmp_path)
    assert_one_line_error(result, fragment)
    assert "Traceback" not in result.stderr


def test_plot_lr_draws_a_huge_schedule_from_samples_within_seconds(tmp_path):
    """440 million iterations: the curve is drawn from 20,001 evenly spread iterations plus the
    warm-up end and the milestones, each with the iteration before it."""
    cfg = write_cfg(tmp_path, EPOCH_CFG)
    started = time.monotonic()
    result = run_tool("plot_lr", "--cfg", cfg, "--csv", "lr.csv", "--iter-per-epoch", "44",
                      "SOLVER.SCHEDULER.TOTAL_EPOCHS", "10000000", "SOLVER.SCHEDULER.STEPS", "(5000000, 9000000)",
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 60
    header, rows = read_csv(tmp_path / "lr.csv")
    # 20,001 spread (the milestones fall on them) and 43, 44, 219,999,999 and 395,999,999.
    assert len(rows) == 20_005 and "over iterations 0..440000000, 20005 of them sampled" in result.stdout
    iterations = [int(row[0]) for row in rows]
    assert iterations[0] == 0 and iterations[-1] == 440_000_000 and iterations == sorted(set(iterations))
    lr = {int(row[0]): row[header.index(next(h for h in header if h.startswith("lr:")))] for row in rows}
    # Around the first milestone (epoch 5,000,000 = iteration 220,000,000): the step is exact.
    assert lr[219_999_999] == pytest.approx(10 * lr[220_000_000])


def test_plot_lr_draws_each_of_several_optimizers(tmp_path):
    """SOLVER.OPTIMIZERS (the shipped GAN: the generator on a cosine from 0.0005, the
    discriminator stepped at epoch 30 from 0.0002, both warmed up over one epoch from 0.1):
    one curve per optimizer, named; a long schedule sampled at the marks of both."""
    gan = REPO / "cfgs" / "digits_gan_adam.yaml"
    result = run_tool("plot_lr", "--cfg", gan, "--csv", "lr.csv", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    header, rows = read_csv(tmp_path / "lr.csv")
    assert header == ["iteration", "epoch", "lr:generator:embed/default/bias", "lr:discriminator:default/bias"]
    lr = {int(row[0]): row[2:] for row in rows}  # 22 iterations per epoch: warm-up 22, step at 660
    assert lr[0] == pytest.approx([0.00005, 0.00002]) and lr[22] == pytest.approx([0.0005, 0.0002])
    assert lr[659][1] == pytest.approx(0.0002) and lr[660][1] == pytest.approx(0.0001)
    assert lr[451][0] == pytest.approx(0.0005 * 0.5 * (1 + math.cos(math.pi * (451 - 22) / (880 - 22))))
    assert lr[880][0] == pytest.approx(0.0, abs=1e-12)
    result = run_tool("plot_lr", "--cfg", gan, "--csv", "long.csv", "SOLVER.SCHEDULER.TOTAL_EPOCHS", "1000",
                      "SOLVER.OPTIMIZERS.discriminator.SCHEDULER.STEPS", "(333,)", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    _, rows = read_csv(tmp_path / "long.csv")
    lr = {int(row[0]): row[2:] for row in rows}  # 22,000 iterations, sampled; the step at 7326
    assert len(rows) < 22_001 and lr[7325][1] == pytest.approx(0.0002) and lr[7326][1] == pytest.approx(0.0001)
    assert lr[21][0] < lr[22][0] == pytest.approx(0.0005)


def test_plot_metrics_answers_a_garbage_metrics_file_with_one_line(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.json").write_bytes(bytes(range(256)) * 10)  # not UTF-8, not JSON
    result = run_tool("plot_metrics", "--out", "m.png", "run", cwd=tmp_path)
    assert_one_line_error(result, "run: metrics.json holds no metrics yet")
    assert "Traceback" not in result.stderr
