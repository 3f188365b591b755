"""tools/benchmark_solver.py --quick runs end to end and writes every figure: a smoke test, with
no assertion on speed (the figures belong in the README, measured on a quiet machine)."""
import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.slow  # every test here runs a tool in a subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOL = os.path.join(ROOT, "tools", "benchmark_solver.py")
JOB = os.path.join(ROOT, "cfgs", "digits_cnn_sgd_step.yaml")
ROW_KEYS = {"name", "ms", "ratio", "bytes", "gb_per_s", "of_copy", "all_ms"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    done = subprocess.run([sys.executable, TOOL, "--cfg", JOB, "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout, json.loads(out.read_text())


def positive(value):
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_every_model_optimizer_and_row_is_timed(quick_run):
    _, result = quick_run
    assert positive(result["copy_gb_per_s"])
    assert set(result["models"]) == {"vit_tiny", "resnet_tiny"}
    for model in result["models"].values():
        assert model["groups"] > 1, "the grouping rules must make several groups"
        for optimizer_type in ("ADAMW", "SGD"):
            block = model["steps"][optimizer_type]
            names = [row["name"] for row in block["rows"]]
            assert block["reference"] == "torch fused, 1 group" == names[0]
            assert {"solver", "solver + value", "solver + norm", "solver + full_model",
                    "1 group/tensor, torch default"} <= set(names)
            for row in block["rows"]:
                assert set(row) == ROW_KEYS
                assert all(positive(row[key]) for key in ROW_KEYS - {"name", "all_ms"})
                assert len(row["all_ms"]) == result["repeats"] and all(map(positive, row["all_ms"]))
            assert block["rows"][0]["ratio"] == 1.0
    assert [r["name"] for r in result["models"]["vit_tiny"]["steps"]["RMSPROP"]["rows"]] == [
        "RMSPROP foreach", "RMSPROP loop", "RMSPROP auto"]


def test_scheduler_loop_and_targets_are_reported(quick_run):
    stdout, result = quick_run
    assert positive(result["scheduler_step_us"])
    loop = result["training_loop"]
    assert loop["iterations"] == 30
    assert list(loop["median_s"]) == [
        "solver + hooks (train_net)", "bare loop, torch default", "bare loop, fused"]
    assert all(positive(s) for s in loop["median_s"].values())
    bare = ["bare loop, torch default", "bare loop, fused"]
    assert list(loop["overhead"]) == list(loop["overhead_over_training_alone"]) == bare
    assert all(math.isfinite(v) for v in loop["overhead"].values())
    # The bare loops evaluate as the job does (3 times in 30 iterations), inside their time.
    assert all(0 < loop["eval_median_s"][name] < loop["median_s"][name] for name in bare)
    assert all(loop["overhead_over_training_alone"][name] > loop["overhead"][name] for name in bare)
    assert len(result["targets"]) == 2 * 10 + 2
    assert all(isinstance(t["met"], bool) for t in result["targets"])
    assert "targets:" in stdout and "vit_tiny: " in stdout and result["machine"]["cpu"] in stdout


def test_a_bad_config_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("SOLVER:\n  OPTIMIZER:\n    BASE_LR: -1.0\n")
    done = subprocess.run([sys.executable, TOOL, "--cfg", str(bad), "--quick"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "SOLVER.OPTIMIZER.BASE_LR" in done.stderr


@pytest.mark.parametrize("device, message", [
    ("gpu", "--device: unknown value 'gpu'; allowed: auto, cpu, cuda, cuda:N"),
    pytest.param("cuda", "--device: 'cuda' needs CUDA", marks=pytest.mark.skipif(
        torch.cuda.is_available(), reason="this machine has CUDA")),
])
def test_a_device_the_machine_lacks_exits_2_with_one_line(device, message):
    done = subprocess.run([sys.executable, TOOL, "--cfg", JOB, "--quick", "--device", device],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and done.stderr.startswith(f"error: {message}")


def test_build_cost_is_an_opt_in_section_that_runs_without_mmengine(tmp_path):
    out = tmp_path / "build.json"
    done = subprocess.run([sys.executable, TOOL, "--cfg", JOB, "--quick", "--build-cost",
                           "--json", str(out)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    section = json.loads(out.read_text())["build_cost"]
    assert [row["tensors"] for row in section["rows"]] == [100, 1000]
    for row in section["rows"]:
        assert positive(row["pet_s"]) and row["pet_groups"] == 4  # default, bias, norm, head
    if importlib.util.find_spec("mmengine") is None:
        assert section["mmengine"] is None
        assert all(row["mmengine_s"] is None and row["mmengine_note"].startswith("not installed")
                   for row in section["rows"])
    else:
        assert all(row["same_hyperparameters"] for row in section["rows"])
    assert "optimizer build time" in done.stdout and "tensors" in done.stdout


def test_a_huge_job_is_timed_over_its_first_iterations_only():
    """A valid schedule of 440 million iterations would take days: the loop section cuts it."""
    spec = importlib.util.spec_from_file_location("benchmark_solver", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    from pet.bench.loop_benchmark import job_iterations
    from pet.lib.config import load_cfg

    huge = load_cfg(JOB, ["SOLVER.SCHEDULER.TOTAL_EPOCHS", "10000000", "SOLVER.SCHEDULER.STEPS", "(5000000, 9000000)"])
    assert job_iterations(tool.loop_job(huge, quick=False)) == tool.MAX_LOOP_ITERATIONS
    default = load_cfg(JOB)
    assert job_iterations(tool.loop_job(default, quick=False)) == job_iterations(default) == 1320
