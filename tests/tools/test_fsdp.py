"""SOLVER.DISTRIBUTED.STRATEGY fsdp through real ``torchrun`` jobs of 2 gloo processes: the same
weights and gradient norms as ddp, sharded checkpoints (bit-identical resume after SIGKILL, in
the background, never a half-written one), resume across strategies and world sizes, the
converter to plain weights, and every class of bad input."""
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from pet.engine.sharded_checkpoint import read_whole
from tests.tools.test_train_distributed import free_port, sigkill_job, torchrun, torchrun_command
from tests.tools.test_train_net import REPO, assert_bad_input, load, read_metrics, train, write_cfg

pytestmark = pytest.mark.slow

CONVERT = REPO / "tools" / "convert_checkpoint.py"
PROBE = REPO / "tests" / "tools" / "fsdp_probe.py"

# A small transformer (its encoder layers are the blocks), SGD with momentum and full_model
# clipping that binds: 20 iterations, a checkpoint every 10, evaluations at 10 and 20.
FSDP_JOB = {
    "LOG_PERIOD": 1,
    "MODEL": {"TYPE": "transformer", "TRANSFORMER": {"EMBED_DIM": 32, "DEPTH": 2, "NUM_HEADS": 2}},
    "DATA": {"BATCH_SIZE": 32},
    "SOLVER": {
        "OPTIMIZER": {"TYPE": "SGD", "BASE_LR": 0.2, "MOMENTUM": 0.9,
                      "CLIP_GRADIENTS": {"ENABLED": True, "CLIP_TYPE": "full_model", "CLIP_VALUE": 0.5}},
        "SCHEDULER": {"POLICY": "COSINE", "TOTAL_ITERS": 20, "STEPS": [], "WARM_UP_ITERS": 0},
        "SNAPSHOT_ITERS": 10,
    },
    "TEST": {"EVAL_ITERS": 10},
}
FSDP = ("SOLVER.DISTRIBUTED.STRATEGY", "fsdp")


def whole_final(output_dir) -> dict:
    """The final checkpoint of a run of either strategy, every tensor whole."""
    sharded = output_dir / "model_final.dcp"
    return read_whole(str(sharded)) if sharded.exists() else load(output_dir / "model_final.pth")


def assert_same_weights(a: dict, b: dict, rtol: float) -> None:
    assert a["iteration"] == b["iteration"] and a["model"].keys() == b["model"].keys()
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, rtol=rtol, atol=rtol * 1e-2, msg=name)


def assert_bit_identical(a: dict, b: dict) -> None:
    """Weights and optimizer state equal bit for bit."""
    assert_same_weights(a, b, rtol=0)
    for index, state in a["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(b["optimizer"]["state"][index][key], value), f"optimizer {index}.{key}"


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """The same job run uninterrupted under ddp and under fsdp (2 processes each)."""
    cwd = tmp_path_factory.mktemp("fsdp")
    cfg_file = write_cfg(cwd, FSDP_JOB)
    for name, extra in (("ddp", ()), ("fsdp", FSDP)):
        result = torchrun(cwd, cfg_file, "OUTPUT_DIR", name, *extra)
        assert result.returncode == 0, result.stderr
    return cwd, cfg_file


def test_the_step_seam_on_shards_matches_torch_on_the_whole_model():
    """Clips (full_model p=2, 1, inf; norm; value), the total norm, the non-finite flag and the
    GradScaler on FSDP2 shards, each against torch's function on the same whole gradients."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
               "--master_port", str(free_port()), str(PROBE)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("OK ") == 10, result.stdout


def test_fsdp_trains_to_ddps_weights_with_the_same_clipped_norms(references):
    cwd, _ = references
    ddp, fsdp = whole_final(cwd / "ddp"), whole_final(cwd / "fsdp")
    assert_same_weights(ddp, fsdp, rtol=1e-5)
    # The clip bound 0.5 binds: the logged (global, unclipped) norms are above it, and equal.
    ddp_norms = [r["grad_norm"] for r in read_metrics(cwd / "ddp")]
    fsdp_norms = [r["grad_norm"] for r in read_metrics(cwd / "fsdp")]
    assert len(fsdp_norms) == 20 and min(fsdp_norms) > 0.5
    torch.testing.assert_close(fsdp_norms, ddp_norms, rtol=1e-5, atol=0)
    # The checkpoints are directories of shards; model_best.pth holds whole weights.
    assert sorted(p.name for p in (cwd / "fsdp").glob("model_*")) == [
        "model_0000010.dcp", "model_best.pth", "model_final.dcp"]
    assert (cwd / "fsdp" / "last_checkpoint").read_text() == "model_final.dcp"
    best = load(cwd / "fsdp" / "model_best.pth")["model"]
    assert best.keys() == fsdp["model"].keys() and all(not hasattr(t, "placements") for t in best.values())


def test_compile_under_fsdp_compiles_each_block_and_the_step_and_trains_as_eager(references, tmp_path):
    """MODEL.COMPILE under fsdp: each block compiled in place after fully_shard (torchtitan's
    way), the root eager; SOLVER.OPTIMIZER.COMPILE: the step on the shards (SGD with momentum
    and full_model clipping over the shards). The run follows the eager fsdp run and saves the
    same keys."""
    cwd, cfg_file = references
    if shutil.which(os.environ.get("CXX", "g++")) is None:
        pytest.skip("torch.compile on the CPU needs a C++ compiler")
    command = torchrun_command(cfg_file, "OUTPUT_DIR", "compiled", *FSDP, "MODEL.COMPILE.ENABLED", "True",
                               "SOLVER.OPTIMIZER.COMPILE", "True")
    result = subprocess.run(command, cwd=cwd, env=dict(os.environ, TORCH_LOGS="graph_code"), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "TRACED GRAPH" in result.stderr  # dynamo traced the blocks
    eager, compiled = whole_final(cwd / "fsdp"), whole_final(cwd / "compiled")
    assert compiled["model"].keys() == eager["model"].keys()
    assert isinstance(compiled["optimizer"]["param_groups"][0]["momentum"], torch.Tensor)  # the compiled form
    assert_same_weights(eager, compiled, rtol=1e-4)
    losses = [r["loss"] for r in read_metrics(cwd / "compiled")]
    assert losses == pytest.approx([r["loss"] for r in read_metrics(cwd / "fsdp")], rel=1e-4)


def test_adamw_with_accumulation_and_norm_clipping_matches_ddp(tmp_path):
    """AdamW (its fused kernel steps the shards), per-parameter norm clipping and 2 micro-batches
    (FSDP2 skips the first micro-batch's reduce-scatter). The key projection's bias has an
    exactly zero gradient (softmax ignores a shift of every score): Adam turns its rounding
    noise, which differs between an all-reduce and a reduce-scatter, into full-size steps, so
    that slice alone is left out of the comparison."""
    job = {**FSDP_JOB, "SOLVER": {**FSDP_JOB["SOLVER"], "ACCUMULATION_STEPS": 2, "OPTIMIZER": {
        "TYPE": "ADAMW", "BASE_LR": 0.003, "CLIP_GRADIENTS": {"ENABLED": True, "CLIP_TYPE": "norm",
                                                              "CLIP_VALUE": 0.05}}}}
    cfg_file = write_cfg(tmp_path, job)
    for name, extra in (("ddp", ()), ("fsdp", FSDP)):
        result = torchrun(tmp_path, cfg_file, "OUTPUT_DIR", name, *extra)
        assert result.returncode == 0, result.stderr
    ddp, fsdp = whole_final(tmp_path / "ddp"), whole_final(tmp_path / "fsdp")
    for final in (ddp, fsdp):
        for name, tensor in final["model"].items():
            if name.endswith("in_proj_bias"):
                third = tensor.shape[0] // 3
                tensor[third:2 * third] = 0
    assert_same_weights(ddp, fsdp, rtol=1e-4)
    assert fsdp["optimizer"]["param_groups"][0]["fused"] is True


def sigkill_job_when(cwd, command: list, appeared) -> None:
    """Start the torchrun job ``command`` and SIGKILL it, its workers at once (torchrun starts
    them in sessions of their own: a node that dies takes them all), the moment ``appeared()``."""
    process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 240
    while not appeared():
        assert process.poll() is None and time.monotonic() < deadline, "the run ended first"
        time.sleep(0.001)
    sigkill_job(process)


def test_sigkill_and_resume_under_fsdp_is_bit_identical(references, tmp_path):
    cwd, cfg_file = references
    sigkill_job_when(tmp_path, torchrun_command(cfg_file, "OUTPUT_DIR", "out", *FSDP),
                     (tmp_path / "out" / "model_0000010.dcp").exists)
    assert not (tmp_path / "out" / "model_final.dcp").exists()
    result = torchrun(tmp_path, cfg_file, "OUTPUT_DIR", "out", *FSDP, "--resume")
    assert result.returncode == 0, result.stderr
    assert "Resuming from out/model_0000010.dcp at iteration 10" in result.stdout
    assert_bit_identical(whole_final(cwd / "fsdp"), whole_final(tmp_path / "out"))
    assert [r["iteration"] for r in read_metrics(tmp_path / "out")] == list(range(20))


def test_float16_under_fsdp_scales_losses_and_resumes_bit_identical(tmp_path):
    """float16: parameters cast for compute by FSDP2's MixedPrecisionPolicy, losses scaled by
    the sharded GradScaler (its state in the checkpoint); resumed from its periodic checkpoint,
    the run ends bit-identical to itself."""
    cfg_file = write_cfg(tmp_path, FSDP_JOB)
    args = (*FSDP, "SOLVER.AMP.ENABLED", True, "SOLVER.AMP.DTYPE", "float16")
    result = torchrun(tmp_path, cfg_file, "OUTPUT_DIR", "reference", *args)
    assert result.returncode == 0, result.stderr
    assert "float16 parameters" in result.stdout
    records = read_metrics(tmp_path / "reference")
    assert records[-1]["loss"] < records[0]["loss"] and all(r["loss_scale"] > 0 for r in records)
    resume_from(tmp_path / "reference", "model_0000010.dcp", tmp_path / "out")
    result = torchrun(tmp_path, cfg_file, "OUTPUT_DIR", "out", *args, "--resume")
    assert result.returncode == 0, result.stderr
    assert_bit_identical(whole_final(tmp_path / "reference"), whole_final(tmp_path / "out"))


def test_the_ema_is_sharded_alike_and_resumes_bit_identical(tmp_path):
    """MODEL.EMA under fsdp: the average is a second sharded copy (FSDP2 cannot deep-copy),
    updated shard by shard; it ends equal to ddp's average, is evaluated (ema_accuracy), saved
    in the sharded checkpoint and resumed bit for bit."""
    cfg_file = write_cfg(tmp_path, FSDP_JOB)
    ema = ("MODEL.EMA.ENABLED", True, "MODEL.EMA.DECAY", 0.9)
    for name, extra in (("ddp", ()), ("fsdp", FSDP)):
        result = torchrun(tmp_path, cfg_file, "OUTPUT_DIR", name, *ema, *extra)
        assert result.returncode == 0, result.stderr
    ddp, fsdp = whole_final(tmp_path / "ddp"), whole_final(tmp_path / "fsdp")
    assert_same_weights({"iteration": 20, "model": ddp["ema"]}, {"iteration": 20, "model": fsdp["ema"]}, rtol=1e-5)
    assert not all(torch.equal(fsdp["ema"][k], fsdp["model"][k]) for k in fsdp["model"])  # an average
    evaluated = [r for r in read_metrics(tmp_path / "fsdp") if "ema_accuracy" in r]
    assert [r["iteration"] for r in evaluated] == [9, 19]
    resume_from(tmp_path / "fsdp", "model_0000010.dcp", tmp_path / "out")
    result = torchrun(tmp_path, cfg_file, "OUTPUT_DIR", "out", *ema, *FSDP, "--resume")
    assert result.returncode == 0, result.stderr
    resumed = whole_final(tmp_path / "out")
    assert_bit_identical(fsdp, resumed)
    assert all(torch.equal(resumed["ema"][k], t) for k, t in fsdp["ema"].items())


def test_batchnorm_under_fsdp_keeps_rank_0s_statistics_as_ddp_and_resumes_exactly(tmp_path):
    """BatchNorm's running statistics are buffers: FSDP2 neither shards nor syncs them, so each
    process updates its own, and DCP saved one process's copy, not necessarily rank 0's, whose
    statistics the logged evaluation uses: a resumed run evaluated differently (test loss
    1.567979 -> 1.567790). At each checkpoint every process now takes rank 0's: the
    evaluations equal ddp's, and a resumed run's equal the uninterrupted one's bit for bit."""
    job = dict(FSDP_JOB, MODEL={"TYPE": "cnn"}, SOLVER=dict(FSDP_JOB["SOLVER"], OPTIMIZER={
        "TYPE": "SGD", "BASE_LR": 0.05, "MOMENTUM": 0.9}))
    cfg_file = write_cfg(tmp_path, job)
    blocks = ("SOLVER.DISTRIBUTED.FSDP_BLOCKS", "['backbone.conv*']")
    for name, extra in (("ddp", ()), ("fsdp", (*FSDP, *blocks))):
        result = torchrun(tmp_path, cfg_file, "OUTPUT_DIR", name, *extra)
        assert result.returncode == 0, result.stderr

    def evaluations(run):
        return [(r["iteration"], r["test_loss"], r["accuracy"]) for r in read_metrics(tmp_path / run) if "test_loss" in r]
    fsdp = evaluations("fsdp")
    assert [e[0] for e in fsdp] == [9, 19]
    for (_, ddp_loss, ddp_accuracy), (_, fsdp_loss, fsdp_accuracy) in zip(evaluations("ddp"), fsdp):
        assert fsdp_loss == pytest.approx(ddp_loss, rel=1e-5) and fsdp_accuracy == ddp_accuracy
    resume_from(tmp_path / "fsdp", "model_0000010.dcp", tmp_path / "out")
    result = torchrun(tmp_path, cfg_file, "OUTPUT_DIR", "out", *FSDP, *blocks, "--resume")
    assert result.returncode == 0, result.stderr
    assert evaluations("out")[-1] == fsdp[-1]
    final, resumed = whole_final(tmp_path / "fsdp"), whole_final(tmp_path / "out")
    assert_bit_identical(final, resumed)
    assert any("running_mean" in name for name in final["model"])


def resume_from(source, checkpoint: str, destination):
    """``destination``: a copy of the run ``source`` as it was when ``checkpoint`` was its last."""
    shutil.copytree(source, destination)
    for path in destination.glob("model_*"):
        if path.name != checkpoint:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    (destination / "last_checkpoint").write_text(checkpoint)


@pytest.mark.parametrize("source, checkpoint, layout", [
    ("fsdp", "model_0000010.dcp", ("ddp", 2)),
    ("fsdp", "model_0000010.dcp", ("ddp", 1)),
    ("ddp", "model_0000010.pth", ("fsdp", 2)),
])
def test_resume_across_strategies_and_world_sizes(references, tmp_path, source, checkpoint, layout):
    """A sharded checkpoint resumed by ddp on 2 processes and by one plain process, a one-file
    ddp checkpoint resumed sharded: each ends on the uninterrupted run's weights."""
    cwd, cfg_file = references
    resume_from(cwd / source, checkpoint, tmp_path / "out")
    strategy, processes = layout
    args = ("OUTPUT_DIR", "out", "SOLVER.DISTRIBUTED.STRATEGY", strategy, "--resume")
    if processes == 1:
        result = train(tmp_path, cfg_file, *args)
    else:
        result = torchrun(tmp_path, cfg_file, *args)
    assert result.returncode == 0, result.stderr
    assert f"Resuming from out/{checkpoint} at iteration 10" in result.stdout
    assert_same_weights(whole_final(cwd / source), whole_final(tmp_path / "out"), rtol=1e-5)


def test_async_checkpoints_equal_sync_ones_and_a_kill_mid_write_resumes(references, tmp_path):
    """SOLVER.ASYNC_CHECKPOINT: the run (checkpoints every 2 iterations, written while the next
    steps run) ends bit-identical to the reference, every periodic checkpoint complete; a job
    killed while one is being written resumes from a complete one, bit-identical too."""
    cwd, cfg_file = references
    args = ("OUTPUT_DIR", "async", *FSDP, "SOLVER.ASYNC_CHECKPOINT", True, "SOLVER.SNAPSHOT_ITERS", 2)
    result = torchrun(tmp_path, cfg_file, *args)
    assert result.returncode == 0, result.stderr
    assert_bit_identical(whole_final(cwd / "fsdp"), whole_final(tmp_path / "async"))
    periodic = sorted(p.name for p in (tmp_path / "async").glob("model_0*"))
    assert periodic == [f"model_{i:07d}.dcp" for i in range(2, 20, 2)]
    assert read_whole(str(tmp_path / "async" / "model_0000018.dcp"))["iteration"] == 18
    assert not list((tmp_path / "async").glob(".*tmp*"))
    # Killed the moment a checkpoint's temporary directory appears (mid-write); retention
    # (KEEP_CHECKPOINTS 2) deletes older directories as new ones are published.
    args = (*args, "SOLVER.KEEP_CHECKPOINTS", 2)
    sigkill_job_when(tmp_path, torchrun_command(cfg_file, args[0], "killed", *args[2:]),
                     (tmp_path / "killed" / ".model_0000006.dcp.tmp").exists)
    result = torchrun(tmp_path, cfg_file, "OUTPUT_DIR", "killed", *args[2:], "--resume")
    assert result.returncode == 0, result.stderr
    assert "Resuming from killed/model_000000" in result.stdout
    assert_bit_identical(whole_final(cwd / "fsdp"), whole_final(tmp_path / "killed"))
    assert sorted(p.name for p in (tmp_path / "killed").glob("model_0*")) == ["model_0000016.dcp",
                                                                             "model_0000018.dcp"]


def test_sigterm_to_an_async_fsdp_job_writes_its_stop_checkpoint_before_exiting(tmp_path):
    """The stop's checkpoint is written before the processes leave, background writes or not
    (it was written in the background once, and lost with the process)."""
    cfg_file = write_cfg(tmp_path, FSDP_JOB)
    process = subprocess.Popen(torchrun_command(cfg_file, "OUTPUT_DIR", "out", *FSDP, "SOLVER.ASYNC_CHECKPOINT", True,
                                                "SOLVER.SNAPSHOT_ITERS", 7, "SOLVER.SCHEDULER.TOTAL_ITERS", 100000),
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    deadline = time.monotonic() + 240
    while not (tmp_path / "out" / "model_0000021.dcp").exists():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1]
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    line = next(line for line in err.splitlines() if line.startswith("stopped by SIGTERM after "))
    done = int(line.split()[4])
    name = (tmp_path / "out" / "last_checkpoint").read_text()
    assert f"saved out/{name};" in line and name == f"model_{done:07d}.dcp"
    assert read_whole(str(tmp_path / "out" / name))["iteration"] == done
    assert not list((tmp_path / "out").glob(".*tmp*"))


def test_a_half_written_sharded_checkpoint_is_never_resumed(references, tmp_path):
    """A directory without DCP's index (a crash before it was complete), named by
    last_checkpoint, is skipped with a warning; a temporary directory is never a candidate."""
    cwd, cfg_file = references
    out = tmp_path / "out"
    resume_from(cwd / "fsdp", "model_0000010.dcp", out)
    shutil.copytree(out / "model_0000010.dcp", out / "model_0000015.dcp")
    (out / "model_0000015.dcp" / ".metadata").unlink()
    shutil.copytree(out / "model_0000010.dcp", out / ".model_0000018.dcp.tmp")
    (out / "last_checkpoint").write_text("model_0000015.dcp")
    result = torchrun(tmp_path, cfg_file, "OUTPUT_DIR", "out", *FSDP, "--resume")
    assert result.returncode == 0, result.stderr
    assert "skipped model_0000015.dcp: cannot be loaded (no .metadata" in result.stderr + result.stdout
    assert "Resuming from out/model_0000010.dcp at iteration 10" in result.stdout
    assert_bit_identical(whole_final(cwd / "fsdp"), whole_final(out))
    assert not (out / "model_0000015.dcp").exists() and not (out / ".model_0000018.dcp.tmp").exists()


def test_convert_checkpoint_writes_plain_weights_that_evaluate_alike(references, tmp_path):
    cwd, cfg_file = references
    out = tmp_path / "weights.pth"
    result = subprocess.run([sys.executable, str(CONVERT), str(cwd / "fsdp" / "model_final.dcp"), "--out", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    weights = load(out)
    assert weights["iteration"] == 20 and all(type(t) is torch.Tensor for t in weights["model"].values())
    assert_same_weights(read_whole(str(cwd / "fsdp" / "model_final.dcp")), weights, rtol=0)
    evaluated = train(tmp_path, cfg_file, "--eval-only", "MODEL.WEIGHTS", out)
    assert evaluated.returncode == 0, evaluated.stderr
    accuracy = [r for r in read_metrics(cwd / "fsdp") if "accuracy" in r][-1]["accuracy"]
    assert f"held-out accuracy {accuracy:.2f}%" in evaluated.stdout
    # MODEL.WEIGHTS may name the sharded directory itself; the fsdp run's own config evaluates
    # its last checkpoint in one plain process.
    direct = train(tmp_path, cfg_file, "--eval-only", "MODEL.WEIGHTS", cwd / "fsdp" / "model_final.dcp")
    assert direct.returncode == 0 and f"held-out accuracy {accuracy:.2f}%" in direct.stdout, direct.stderr
    resumed = train(cwd, cfg_file, "--eval-only", "--resume", "OUTPUT_DIR", "fsdp", *FSDP)
    assert resumed.returncode == 0 and f"held-out accuracy {accuracy:.2f}%" in resumed.stdout, resumed.stderr
    # Bad input: an existing output, something that is no sharded checkpoint, a half one.
    for args, fragment in (([str(cwd / "fsdp" / "model_final.dcp"), "--out", str(out)], "exists"),
                           ([str(cwd / "ddp" / "model_final.pth")], "is not a sharded checkpoint"),
                           ([str(tmp_path / "none.dcp")], "no such directory")):
        assert_bad_input(subprocess.run([sys.executable, str(CONVERT), *args], capture_output=True,
                                        text=True, timeout=120), fragment)


@pytest.mark.parametrize("overrides, fragment", [
    ([*FSDP], "fsdp shards the model over the processes of a torchrun job, and this run has 1"),
    (["SOLVER.DISTRIBUTED.STRATEGY", "zero3"], "SOLVER.DISTRIBUTED.STRATEGY: unknown value 'zero3'; allowed: ddp, fsdp"),
    (["SOLVER.ASYNC_CHECKPOINT", True], "SOLVER.ASYNC_CHECKPOINT: True needs SOLVER.DISTRIBUTED.STRATEGY fsdp"),
])
def test_bad_strategy_input_is_one_line_and_exit_2(tmp_path, overrides, fragment):
    """Through train_net (every other refusal of the strategy's keys: tests/engine/test_job.py)."""
    cfg_file = write_cfg(tmp_path, FSDP_JOB)
    result = train(tmp_path, cfg_file, "OUTPUT_DIR", "out", *overrides)
    assert_bad_input(result, fragment)
    assert not (tmp_path / "out").exists()


def test_a_model_fsdp_cannot_shard_is_refused_by_every_process(tmp_path):
    """Checked before the processes meet (tests/engine/test_job.py has each such refusal)."""
    fragment = "MODEL.TYPE cnn names no blocks; set SOLVER.DISTRIBUTED.FSDP_BLOCKS"
    cfg_file = write_cfg(tmp_path, FSDP_JOB)
    result = torchrun(tmp_path, cfg_file, "OUTPUT_DIR", "out", *FSDP, "MODEL.TYPE", "cnn")
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and fragment in lines[0], result.stderr
    # Every worker exits 2 (torchrun then prints its own report); none with a traceback.
    assert "exitcode: 2" in result.stderr and "[rank" not in result.stderr
    assert not (tmp_path / "out").exists()


def two_node_jobs(cwd, cfg_file, node_args) -> list:
    """Two torchrun launches of one process each, meeting at a c10d rendezvous on localhost:
    the commands of a two-machine job (``--nnodes 2``), run side by side; ``node_args``: each
    launch's train_net arguments. Returns their finished processes."""
    port, launches = free_port(), []
    for args in node_args:
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                   "--rdzv-backend", "c10d", "--rdzv-endpoint", f"localhost:{port}", "--rdzv-id", "pet-job",
                   str(REPO / "tools" / "train_net.py"), "--cfg", str(cfg_file), *map(str, args)]
        launches.append(subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True))
    for launch in launches:
        launch.stdout_text, launch.stderr_text = launch.communicate(timeout=240)
    return launches


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_nodes_train_as_one_machine_does(references, tmp_path, strategy):
    """Two one-process "nodes" (global ranks 0 and 1, each LOCAL_RANK 0) end bit-identical to
    the two processes of one machine; global rank 0 alone writes."""
    cwd, cfg_file = references
    args = ("OUTPUT_DIR", "out", "SOLVER.DISTRIBUTED.STRATEGY", strategy)
    for launch in two_node_jobs(tmp_path, cfg_file, [args, args]):
        assert launch.returncode == 0, launch.stderr_text
    assert_same_weights(whole_final(cwd / strategy), whole_final(tmp_path / "out"), rtol=0)
    assert [r["iteration"] for r in read_metrics(tmp_path / "out")] == list(range(20))


def test_a_node_that_cannot_see_the_checkpoint_stops_every_process_with_one_line(references, tmp_path):
    """--resume where one node reads the run's directory and the other an empty one (a
    node-local disk): every process stops with exit 2 before training, each node's console
    shows the reason once, nothing hangs."""
    cwd, cfg_file = references
    resume_from(cwd / "fsdp", "model_0000010.dcp", tmp_path / "seen")
    (tmp_path / "blind").mkdir()
    launches = two_node_jobs(tmp_path, cfg_file, [("OUTPUT_DIR", directory, *FSDP, "--resume")
                                                  for directory in ("seen", "blind")])
    for launch in launches:
        assert "exitcode: 2" in launch.stderr_text and "[rank" not in launch.stderr_text, launch.stderr_text
        lines = [line for line in launch.stderr_text.splitlines() if line.startswith("error: ")]
        assert len(lines) == 1 and "process 1 of this job cannot resume (--resume: " in lines[0], launch.stderr_text
        assert "OUTPUT_DIR must be on a file system every node sees" in lines[0]
    assert not (tmp_path / "blind" / "log.txt").exists()
