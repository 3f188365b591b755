"""tools/train_net.py with MODEL.COMPILE (torch.compile of the trained model), run as a user
runs it: equal to the eager run to float tolerance, checkpoints interchangeable with eager
runs, a SIGKILL resume bit-identical, and each bad input one line before training. Inductor
compiles with the machine's C++ compiler: these tests skip where there is none."""
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
from test_train_net import (
    TRAIN_NET,
    assert_bad_input,
    load,
    read_metrics,
    sigkill_resume_matches_reference,
    train,
    write_cfg,
)

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None,
                                 reason="torch.compile on the CPU needs a C++ compiler")]


@pytest.fixture(scope="module", autouse=True)
def inductor_builds_code():
    """A compiler may run and still not build inductor's code (no Python.h): train_net then
    refuses MODEL.COMPILE with one line, and these tests have nothing to run."""
    try:
        torch.compile(lambda x: x * 2 + 1)(torch.ones(2))
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"torch.compile cannot build code here: {str(e).splitlines()[0]}")
    finally:
        torch._dynamo.reset()

HERE = Path(__file__).resolve().parent
# No dropout: inductor draws its own dropout masks, so only a model without dropout can equal
# its eager run.
COMPILE_JOB = {
    "LOG_PERIOD": 1,
    "MODEL": {"TYPE": "cnn", "CNN": {"CHANNELS": [4, 8, 8], "HIDDEN_DIM": 16, "DROPOUT": 0.0}},
    "SOLVER": {
        "OPTIMIZER": {"TYPE": "SGD", "BASE_LR": 0.05, "MOMENTUM": 0.9},
        "SCHEDULER": {"POLICY": "STEP", "TOTAL_ITERS": 20, "STEPS": [15], "WARM_UP_ITERS": 3},
        "SNAPSHOT_ITERS": 10,
    },
}
COMPILED = ["MODEL.COMPILE.ENABLED", "True"]


def test_a_compiled_run_equals_the_eager_run_and_their_checkpoints_are_interchangeable(tmp_path):
    cfg_file = write_cfg(tmp_path, COMPILE_JOB)
    assert train(tmp_path, cfg_file, "OUTPUT_DIR", "eager").returncode == 0
    result = train(tmp_path, cfg_file, "OUTPUT_DIR", "compiled", *COMPILED)
    assert result.returncode == 0, result.stderr
    eager, compiled = read_metrics(tmp_path / "eager"), read_metrics(tmp_path / "compiled")
    assert [r["loss"] for r in compiled] == pytest.approx([r["loss"] for r in eager], rel=1e-4)
    final, expected = load(tmp_path / "compiled" / "model_final.pth"), load(tmp_path / "eager" / "model_final.pth")
    assert final["model"].keys() == expected["model"].keys()  # no "_orig_mod." prefixes
    for name, tensor in expected["model"].items():
        torch.testing.assert_close(final["model"][name], tensor, rtol=1e-4, atol=1e-5, msg=name)
    # Each resumes with the other setting, for a longer schedule.
    longer = ["SOLVER.SCHEDULER.TOTAL_ITERS", "30"]
    result = train(tmp_path, cfg_file, "--resume", "OUTPUT_DIR", "compiled", *longer)
    assert result.returncode == 0 and "Resuming from" in result.stdout, result.stderr
    result = train(tmp_path, cfg_file, "--resume", "OUTPUT_DIR", "eager", *longer, *COMPILED)
    assert result.returncode == 0 and "Resuming from" in result.stdout, result.stderr
    for run in ("compiled", "eager"):
        assert load(tmp_path / run / "model_final.pth")["iteration"] == 30


def test_graph_breaks_are_logged_once_and_refused_under_fullgraph(tmp_path):
    job = dict(COMPILE_JOB, CUSTOM_IMPORTS=["compile_probe"], MODEL=dict(COMPILE_JOB["MODEL"], TYPE="breaking_net"))
    job["SOLVER"] = dict(COMPILE_JOB["SOLVER"], SCHEDULER=dict(COMPILE_JOB["SOLVER"]["SCHEDULER"], TOTAL_ITERS=4, STEPS=[2], WARM_UP_ITERS=0))
    cfg_file = write_cfg(tmp_path, job)
    env = dict(os.environ, PYTHONPATH=str(HERE))
    import subprocess

    def run(*args):
        return subprocess.run([sys.executable, str(TRAIN_NET), "--cfg", str(cfg_file), *args], cwd=tmp_path,
                              env=env, capture_output=True, text=True, timeout=300)
    result = run("OUTPUT_DIR", "full", *COMPILED, "MODEL.COMPILE.FULLGRAPH", "True")
    assert_bad_input(result, "MODEL.COMPILE.FULLGRAPH: MODEL.TYPE breaking_net cannot be traced as one graph "
                             "(1 graph break(s); first: ", "compile_probe.py:16); set MODEL.COMPILE.FULLGRAPH False")
    assert not (tmp_path / "full").exists()
    result = run("OUTPUT_DIR", "broken", *COMPILED)
    assert result.returncode == 0, result.stderr
    log = (tmp_path / "broken" / "log.txt").read_text()
    assert log.count("graph break(s):") == 1 and "compile_probe.py:16" in log


def test_no_compiler_is_refused_before_training(tmp_path):
    cfg_file = write_cfg(tmp_path, COMPILE_JOB)
    import subprocess

    env = dict(os.environ, CXX="/nonexistent/g++")
    result = subprocess.run([sys.executable, str(TRAIN_NET), "--cfg", str(cfg_file), "OUTPUT_DIR", "out",
                             *COMPILED], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert_bad_input(result, "MODEL.COMPILE.ENABLED: torch.compile on the CPU needs a C++ compiler and "
                             "/nonexistent/g++ does not run; install one (e.g. g++) or point CXX at it")
    assert not (tmp_path / "out").exists()


GAN = Path(__file__).resolve().parents[2] / "cfgs" / "digits_gan_adam.yaml"
SHORT_GAN = ["SOLVER.SCHEDULER.TOTAL_EPOCHS", "None", "SOLVER.SCHEDULER.TOTAL_ITERS", "12",
             "SOLVER.SCHEDULER.WARM_UP_EPOCHS", "None", "SOLVER.SCHEDULER.WARM_UP_ITERS", "2",
             "SOLVER.OPTIMIZERS.discriminator.SCHEDULER.STEPS", "(8,)", "LOG_PERIOD", "1"]


def test_several_optimizers_compile_each_submodule_and_their_steps(tmp_path):
    """With SOLVER.OPTIMIZERS each optimizer's submodule is compiled (the model's train_step
    calls them) and so is each optimizer's step; the run follows the eager one. FULLGRAPH
    cannot be checked before such a run: refused with one line."""
    assert train(tmp_path, GAN, "OUTPUT_DIR", "eager", *SHORT_GAN).returncode == 0
    result = train(tmp_path, GAN, "OUTPUT_DIR", "compiled", *SHORT_GAN, *COMPILED, "SOLVER.OPTIMIZER.COMPILE", "True")
    assert result.returncode == 0, result.stderr
    eager, compiled = read_metrics(tmp_path / "eager"), read_metrics(tmp_path / "compiled")
    for key in ("loss_disc", "loss_gen"):
        assert [r[key] for r in compiled] == pytest.approx([r[key] for r in eager], rel=1e-3), key
    final = load(tmp_path / "compiled" / "model_final.pth")
    assert not any("_orig_mod" in name for name in final["model"])
    assert isinstance(final["optimizer.generator"]["param_groups"][0]["weight_decay"], torch.Tensor)
    result = train(tmp_path, GAN, "OUTPUT_DIR", "full", *SHORT_GAN, *COMPILED, "MODEL.COMPILE.FULLGRAPH", "True")
    assert_bad_input(result, "MODEL.COMPILE.FULLGRAPH: cannot be checked before training with SOLVER.OPTIMIZERS")
    assert not (tmp_path / "full").exists()


def test_a_compiled_model_inside_ddp_trains_as_the_eager_one(tmp_path):
    """Under torchrun the compiled module wraps DistributedDataParallel (torch's advice)."""
    from test_train_distributed import torchrun

    cfg_file = write_cfg(tmp_path, COMPILE_JOB)
    for run, extra in (("eager", []), ("compiled", COMPILED)):
        result = torchrun(tmp_path, cfg_file, "OUTPUT_DIR", run, *extra)
        assert result.returncode == 0, result.stderr
    final, expected = load(tmp_path / "compiled" / "model_final.pth"), load(tmp_path / "eager" / "model_final.pth")
    for name, tensor in expected["model"].items():
        torch.testing.assert_close(final["model"][name], tensor, rtol=1e-4, atol=1e-5, msg=name)


def test_a_compiled_run_killed_and_resumed_ends_bit_identical_and_its_step_resumes_across_settings(tmp_path):
    """MODEL.COMPILE and SOLVER.OPTIMIZER.COMPILE (whose checkpoints hold the lr as tensors): a
    killed run resumes bit-identical, and a finished one continues with an eager step (and an
    eager step's run with a compiled one)."""
    job = dict(COMPILE_JOB, LOG_PERIOD=10, MODEL=dict(COMPILE_JOB["MODEL"], COMPILE={"ENABLED": True}))
    job["SOLVER"] = dict(COMPILE_JOB["SOLVER"], SNAPSHOT_ITERS=100,
                         OPTIMIZER=dict(COMPILE_JOB["SOLVER"]["OPTIMIZER"], COMPILE=True),
                         SCHEDULER={"POLICY": "STEP", "TOTAL_ITERS": 400, "STEPS": [300], "WARM_UP_ITERS": 10})
    sigkill_resume_matches_reference(tmp_path, job)
    longer = ["SOLVER.SCHEDULER.TOTAL_ITERS", "420"]
    cfg_file = tmp_path / "reference.yaml"
    eager_model = ["MODEL.COMPILE.ENABLED", "False"]  # the model's own switch is tested above
    result = train(tmp_path, cfg_file, "--resume", *longer, *eager_model, "SOLVER.OPTIMIZER.COMPILE", "False")
    assert result.returncode == 0 and "Resuming from" in result.stdout, result.stderr
    checkpoint = load(tmp_path / "reference" / "model_final.pth")
    assert checkpoint["iteration"] == 420 and isinstance(checkpoint["optimizer"]["param_groups"][0]["lr"], float)
    result = train(tmp_path, cfg_file, "--resume", "SOLVER.SCHEDULER.TOTAL_ITERS", "440", *eager_model)
    assert result.returncode == 0, result.stderr
    checkpoint = load(tmp_path / "reference" / "model_final.pth")
    group = checkpoint["optimizer"]["param_groups"][0]
    assert all(isinstance(group[key], torch.Tensor) for key in ("lr", "momentum", "weight_decay"))


def test_compiled_model_and_step_with_bfloat16_accumulation_and_ema(tmp_path):
    """Both compiles together on the step path that has the most parts: bfloat16 autocast,
    k = 2 micro-batches, the EMA; the losses follow the eager run's to bfloat16's precision."""
    cfg_file = write_cfg(tmp_path, COMPILE_JOB)
    keys = ["SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.DTYPE", "bfloat16", "SOLVER.ACCUMULATION_STEPS", "2",
            "MODEL.EMA.ENABLED", "True", "SOLVER.OPTIMIZER.TYPE", "ADAMW", "SOLVER.OPTIMIZER.BASE_LR", "0.003"]
    assert train(tmp_path, cfg_file, "OUTPUT_DIR", "eager", *keys).returncode == 0
    result = train(tmp_path, cfg_file, "OUTPUT_DIR", "compiled", *keys, *COMPILED, "SOLVER.OPTIMIZER.COMPILE", "True")
    assert result.returncode == 0, result.stderr
    eager, compiled = read_metrics(tmp_path / "eager"), read_metrics(tmp_path / "compiled")
    assert [r["loss"] for r in compiled] == pytest.approx([r["loss"] for r in eager], rel=2e-2)
    assert "ema" in load(tmp_path / "compiled" / "model_final.pth")
