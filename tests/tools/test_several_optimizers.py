"""Several optimizers (SOLVER.OPTIMIZERS) through real train_net runs of the shipped AC-GAN on the
digits: each optimizer with its own lr and schedule, every optimizer, scheduler and wrapper in
the checkpoint under its name, SIGKILL + resume bit-exact, 2 torchrun processes, bad input."""
import math

import pytest
import torch

from tests.tools.test_train_distributed import torchrun
from tests.tools.test_train_net import (
    assert_bad_input, load, read_metrics, sigkill_resume_matches_reference, train, write_cfg,
)

pytestmark = pytest.mark.slow  # real training runs

# cfgs/digits_gan_adam.yaml cut short: 300 iterations, a checkpoint every 50, evaluations at 150, 300.
SHORT = {"LOG_PERIOD": 1, "MODEL": {"TYPE": "digits_gan"}, "DATA": {"BATCH_SIZE": 64},
         "SOLVER": {"OPTIMIZER": {"TYPE": "ADAM", "BASE_LR": 0.0002, "BETAS": [0.5, 0.999], "WEIGHT_DECAY": 0.0},
                    "SCHEDULER": {"POLICY": "COSINE", "TOTAL_ITERS": 300, "WARM_UP_ITERS": 20,
                                  "WARM_UP_FACTOR": 0.1},
                    "OPTIMIZERS": {"generator": {"BASE_LR": 0.0005},
                                   "discriminator": {"BASE_LR": 0.0002,
                                                     "SCHEDULER": {"POLICY": "STEP", "STEPS": [200], "GAMMA": 0.5}}},
                    "SNAPSHOT_ITERS": 50},
         "TEST": {"EVAL_ITERS": 150}}


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("gan")
    result = train(tmp_path, write_cfg(tmp_path, dict(SHORT, OUTPUT_DIR="out")))
    assert result.returncode == 0, result.stderr
    return tmp_path / "out"


def test_each_optimizer_follows_its_own_lr_and_schedule(gan_run):
    records = {r["iteration"]: r for r in read_metrics(gan_run)}
    for i in (0, 10, 150, 299):
        warm = 0.1 + 0.9 * i / 20 if i < 20 else None
        cos = 0.5 * (1 + math.cos(math.pi * (i - 20) / 280)) if i >= 20 else None
        assert records[i]["generator.lr"] == pytest.approx(0.0005 * (warm if warm is not None else cos))
        step = 0.5 if i >= 200 else 1.0
        assert records[i]["discriminator.lr"] == pytest.approx(0.0002 * (warm if warm is not None else step))
    last = records[299]
    assert {"loss_gen", "loss_disc", "loss", "generator.grad_norm", "discriminator.grad_norm"} <= set(last)
    assert last["loss"] == pytest.approx(last["loss_gen"] + last["loss_disc"], rel=1e-6)
    assert last["accuracy"] > 50  # the discriminator's classifier learns the digits


def test_the_checkpoint_holds_every_optimizer_scheduler_and_wrapper_under_its_name(gan_run):
    checkpoint = load(gan_run / "model_0000050.pth")
    assert {"optimizer.generator", "optimizer.discriminator", "scheduler.generator",
            "scheduler.discriminator", "optim_wrapper"} <= set(checkpoint)
    assert "optimizer" not in checkpoint and "scheduler" not in checkpoint
    assert checkpoint["scheduler.generator"]["iteration"] == 50 == checkpoint["scheduler.discriminator"]["iteration"]
    assert set(checkpoint["optim_wrapper"]) == {"generator", "discriminator"}
    generator_params = {n for g in checkpoint["optimizer.generator"]["param_groups"] for n in g["param_names"]}
    assert generator_params and all(not n.startswith("discriminator") for n in generator_params)
    assert all(torch.isfinite(t).all() for t in checkpoint["model"].values())


@pytest.mark.parametrize("amp", [None, "float16"])
def test_sigkill_and_resume_is_bit_identical(tmp_path, amp):
    job = dict(SHORT)
    if amp:
        job["SOLVER"] = dict(SHORT["SOLVER"], AMP={"ENABLED": True, "DTYPE": amp})
    sigkill_resume_matches_reference(tmp_path, job)


def test_two_torchrun_processes_train_each_submodule_with_its_own_ddp(tmp_path):
    optimizers = {"generator": {"BASE_LR": 0.0005},
                  "discriminator": {"SCHEDULER": {"POLICY": "STEP", "STEPS": [40], "GAMMA": 0.5}}}
    job = dict(SHORT, SOLVER=dict(SHORT["SOLVER"], SCHEDULER=dict(SHORT["SOLVER"]["SCHEDULER"], TOTAL_ITERS=60),
                                  SNAPSHOT_ITERS=30, OPTIMIZERS=optimizers), TEST={"EVAL_ITERS": 30}, OUTPUT_DIR="out")
    result = torchrun(tmp_path, write_cfg(tmp_path, job))
    assert result.returncode == 0, result.stderr
    records = read_metrics(tmp_path / "out")
    assert [r["iteration"] for r in records] == list(range(60))
    assert all(math.isfinite(r["loss"]) for r in records)
    resumed = torchrun(tmp_path, write_cfg(tmp_path, job), "--resume", "SOLVER.SCHEDULER.TOTAL_ITERS", "70")
    assert resumed.returncode == 0, resumed.stderr
    assert load(tmp_path / "out" / "model_final.pth")["iteration"] == 70


@pytest.mark.parametrize("overrides, fragments", [
    (["MODEL.TYPE", "cnn"], ["SOLVER.OPTIMIZERS: DigitsCNN (MODEL.TYPE cnn) has no train_step(batch, optim_wrappers)"]),
    (["SOLVER.OPTIMIZERS.critic.BASE_LR", "0.1"],
     ["SOLVER.OPTIMIZERS.critic: DigitsGAN has no top-level submodule 'critic'; its submodules: generator, discriminator"]),
    (["SOLVER.OPTIMIZERS.generator.BASE_LR", "-1.0"], ["SOLVER.OPTIMIZERS.generator.BASE_LR: must be >= 0"]),
    (["SOLVER.OPTIMIZERS.generator.BASE_RL", "0.1"], ["unknown config key SOLVER.OPTIMIZERS.generator.BASE_RL",
                                                     "did you mean"]),
    (["SOLVER.OPTIMIZERS.generator.SCHEDULER.TOTAL_ITERS", "10"],
     ["SOLVER.OPTIMIZERS.generator.SCHEDULER.TOTAL_ITERS: the run's length is SOLVER.SCHEDULER's"]),
], ids=["model-without-train_step", "no-such-submodule", "bad-value", "unknown-key", "own-length"])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, overrides, fragments):
    cfg_file = write_cfg(tmp_path, dict(SHORT, OUTPUT_DIR="out"))
    assert_bad_input(train(tmp_path, cfg_file, *overrides), *fragments)
    assert not (tmp_path / "out").exists()


def test_a_parameter_in_no_optimizer_is_one_line_naming_it(tmp_path):
    job = dict(SHORT, OUTPUT_DIR="out", SOLVER=dict(SHORT["SOLVER"], OPTIMIZERS={"generator": {"BASE_LR": 0.0005}}))
    assert_bad_input(train(tmp_path, write_cfg(tmp_path, job)),
                     "SOLVER.OPTIMIZERS: parameter 'discriminator.body.1.weight' is in no optimizer; add its "
                     "top-level submodule 'discriminator' to SOLVER.OPTIMIZERS")
