"""Non-finite steps in real runs of tools/train_net.py: a model whose training forward pass
returns nan at chosen iterations (on chosen ranks) stops the run before the step, or, with
SOLVER.SKIP_NONFINITE, has those steps skipped; under torchrun every process decides alike."""
import math
import os
from pathlib import Path

import pytest
import torch

from tests.tools.test_train_distributed import torchrun
from tests.tools.test_train_net import TINY_JOB, load, read_metrics, train, write_cfg

pytestmark = pytest.mark.slow  # real training runs

# A user model (registered through CUSTOM_IMPORTS) that poisons the loss of the training
# forward passes numbered in PET_TEST_NAN_STEPS on the ranks in PET_TEST_NAN_RANKS.
NAN_MODEL = '''
import os
import torch
from pet.models import MODELS, build_cnn


class NanAt(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.forwards = 0

    def forward(self, x):
        out = self.inner(x)
        if self.training:
            steps = {int(s) for s in os.environ["PET_TEST_NAN_STEPS"].split(",")}
            ranks = {int(r) for r in os.environ.get("PET_TEST_NAN_RANKS", "0").split(",")}
            if self.forwards in steps and int(os.environ.get("RANK", 0)) in ranks:
                out = out * float("nan")
            self.forwards += 1
        return out


@MODELS.register(name="nan_cnn")
def build(model_cfg):
    return NanAt(build_cnn(model_cfg))
'''


def nan_job(tmp_path: Path, skip: int, output_dir: str = "out") -> Path:
    (tmp_path / "nan_model.py").write_text(NAN_MODEL)
    job = dict(TINY_JOB, OUTPUT_DIR=output_dir, CUSTOM_IMPORTS=["nan_model"],
               MODEL=dict(TINY_JOB["MODEL"], TYPE="nan_cnn"),
               SOLVER=dict(TINY_JOB["SOLVER"], SKIP_NONFINITE=skip))
    return write_cfg(tmp_path, job)


def poison(steps: str, ranks: str = "0") -> None:
    os.environ.update(PYTHONPATH=os.pathsep.join(filter(None, [".", os.environ.get("PYTHONPATH")])),
                      PET_TEST_NAN_STEPS=steps, PET_TEST_NAN_RANKS=ranks)


@pytest.fixture(autouse=True)
def restore_environment():
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


def assert_finite(checkpoint: dict) -> None:
    assert all(torch.isfinite(t).all() for t in checkpoint["model"].values())


def test_a_nan_loss_stops_the_run_before_the_step_naming_the_last_good_checkpoint(tmp_path):
    poison("25")
    result = train(tmp_path, nan_job(tmp_path, skip=0))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: loss became nan at iteration 25; lower SOLVER.OPTIMIZER.BASE_LR, enable "
        "SOLVER.OPTIMIZER.CLIP_GRADIENTS or skip such steps with SOLVER.SKIP_NONFINITE; "
        "last good checkpoint: out/model_0000020.pth"]  # as OUTPUT_DIR names it
    assert_finite(load(tmp_path / "out" / "model_0000020.pth"))
    assert not (tmp_path / "out" / "model_final.pth").exists()


def test_skip_nonfinite_skips_steps_counts_them_and_stops_after_too_many_in_a_row(tmp_path):
    poison("5,6,30")
    result = train(tmp_path, nan_job(tmp_path, skip=2))
    assert result.returncode == 0, result.stderr
    records = {r["iteration"]: r for r in read_metrics(tmp_path / "out")}
    assert [records[i]["nonfinite_steps"] for i in (4, 5, 6, 7, 29, 30, 59)] == [0, 1, 2, 2, 2, 3, 3]
    assert math.isnan(records[5]["loss"]) and math.isfinite(records[7]["loss"])
    assert not math.isfinite(records[5]["grad_norm"])
    assert [records[i]["lr"] for i in (4, 5, 6)] != [records[4]["lr"]] * 3  # the schedule advanced
    assert_finite(load(tmp_path / "out" / "model_final.pth"))

    poison("5,6,7")
    result = train(tmp_path, nan_job(tmp_path, skip=2, output_dir="three"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: loss became nan for 3 steps in a row (SOLVER.SKIP_NONFINITE 2) at iteration 7; "
        "lower SOLVER.OPTIMIZER.BASE_LR, enable SOLVER.OPTIMIZER.CLIP_GRADIENTS or skip such steps "
        "with SOLVER.SKIP_NONFINITE; last good checkpoint: none"]


def test_under_torchrun_a_nan_on_one_rank_is_skipped_or_stops_the_job_on_every_rank(tmp_path):
    poison("5", ranks="1")  # rank 0's loss is finite: DDP's average brings it the nan gradients
    result = torchrun(tmp_path, nan_job(tmp_path, skip=1))
    assert result.returncode == 0, result.stderr
    records = {r["iteration"]: r for r in read_metrics(tmp_path / "out")}
    assert [records[i]["nonfinite_steps"] for i in (4, 5, 59)] == [0, 1, 1]
    assert math.isnan(records[5]["loss"])  # the mean over the processes
    assert_finite(load(tmp_path / "out" / "model_final.pth"))

    result = torchrun(tmp_path, nan_job(tmp_path, skip=0, output_dir="stopped"))
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: gradients became non-finite (norm nan) at iteration 5; lower "
                      "SOLVER.OPTIMIZER.BASE_LR, enable SOLVER.OPTIMIZER.CLIP_GRADIENTS or skip "
                      "such steps with SOLVER.SKIP_NONFINITE; last good checkpoint: none"]
    # The processes stop with that line, no traceback (torchrun's own report follows).
    assert "FloatingPointError" not in result.stderr
