"""The fault suite on the other layouts: a real ``torchrun`` job of 2 processes (gloo) stopped
by SIGTERM, resumed from an intact and from a damaged checkpoint, and failing a checkpoint
write on rank 0; a float16 (GradScaler) run killed inside checkpoint writes. Every resume must
end bit-identical to the uninterrupted run of the same layout."""
import os
import shutil
import signal
import subprocess
import time

import pytest

from tests.tools.test_faults import SHORT_JOB, limit_file_size, sigkill_during_checkpoint_writes
from tests.tools.test_train_distributed import torchrun, torchrun_command
from tests.tools.test_train_net import assert_same_final_state, load, read_metrics, train, write_cfg

pytestmark = pytest.mark.slow

# BatchNorm and dropout, each process with its own RNG stream. A stop lands where the processes
# agree on it (StopOnSignal: after 10 iterations, then every 1 s or 100 iterations, whichever
# comes first); checkpoints every 15.
DDP_JOB = {**SHORT_JOB, "SOLVER": {**SHORT_JOB["SOLVER"], "SNAPSHOT_ITERS": 15,
                                   "SCHEDULER": {**SHORT_JOB["SOLVER"]["SCHEDULER"], "TOTAL_ITERS": 150}}}


@pytest.fixture(scope="module")
def stopped_job(tmp_path_factory):
    """An uninterrupted 2-process run ("reference") and the same run stopped by SIGTERM to the
    whole job (torchrun and its workers, as a cluster's scheduler sends it) after its first
    periodic checkpoint ("stopped"). Returns (cwd, cfg_file, the stop's result)."""
    cwd = tmp_path_factory.mktemp("ddp")
    cfg_file = write_cfg(cwd, DDP_JOB)
    result = torchrun(cwd, cfg_file, "OUTPUT_DIR", "reference")
    assert result.returncode == 0, result.stderr
    process = subprocess.Popen(torchrun_command(cfg_file, "OUTPUT_DIR", "stopped"), cwd=cwd,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    deadline = time.monotonic() + 240
    while not (cwd / "stopped" / "model_0000015.pth").exists():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    return cwd, cfg_file, process.returncode, err


def test_sigterm_to_a_torchrun_job_checkpoints_and_resumes_bit_identical(stopped_job, tmp_path):
    cwd, cfg_file, status, err = stopped_job
    # Each worker stops at the same agreed iteration and exits 143; torchrun itself, which
    # forwarded the signal, ends with its own SignalException (status 1).
    assert status == 1, err
    lines = [line for line in err.splitlines() if line.startswith("stopped by SIGTERM after ")]
    assert len(lines) == 1 and "--resume" in lines[0], err
    assert "Traceback" not in err.split("Received 15 death signal")[0]  # none from the workers
    done = load(cwd / "stopped" / (cwd / "stopped" / "last_checkpoint").read_text())["iteration"]
    assert 15 < done < 150 and f"saved stopped/model_{done:07d}.pth" in lines[0]
    shutil.copytree(cwd / "stopped", tmp_path / "out")
    result = torchrun(tmp_path, cfg_file, "OUTPUT_DIR", "out", "--resume")
    assert result.returncode == 0, result.stderr
    assert f"Resuming from out/model_{done:07d}.pth at iteration {done}" in result.stdout
    assert_same_final_state(tmp_path / "out", cwd / "reference")
    assert [r["iteration"] for r in read_metrics(tmp_path / "out")] == list(range(150))


def test_a_damaged_checkpoint_under_torchrun_falls_back_on_every_rank(stopped_job, tmp_path):
    cwd, cfg_file, _, _ = stopped_job
    shutil.copytree(cwd / "stopped", tmp_path / "out")
    newest = tmp_path / "out" / (tmp_path / "out" / "last_checkpoint").read_text()
    newest.write_bytes(newest.read_bytes()[:2000])  # truncated
    previous = sorted(p.name for p in (tmp_path / "out").glob("model_0*.pth") if p != newest)[-1]
    result = torchrun(tmp_path, cfg_file, "OUTPUT_DIR", "out", "--resume")
    assert result.returncode == 0, result.stderr
    # Rank 0 says it once; every rank resumed from the same file (they compare their choices,
    # and any other file would not end on the reference's weights).
    warnings = [line for line in (result.stdout + result.stderr).splitlines() if "warning: --resume" in line]
    assert len(warnings) == 1 and f"skipped {newest.name}: cannot be loaded (damaged or truncated" in warnings[0]
    assert f"resuming from out/{previous}" in warnings[0]
    assert_same_final_state(tmp_path / "out", cwd / "reference")


@pytest.mark.parametrize("keys, failed_file", [
    ({"SOLVER": {**DDP_JOB["SOLVER"], "SNAPSHOT_ITERS": 2}}, "model_0000002.pth"),
    # No periodic checkpoint: the first file too large for the limit is model_best.pth (about
    # 14 kB), written after the evaluation at iteration 3.
    ({"SOLVER": {**DDP_JOB["SOLVER"], "SNAPSHOT_ITERS": 0}, "TEST": {"EVAL_ITERS": 3}}, "model_best.pth"),
], ids=["periodic", "best"])
def test_a_failed_write_on_rank_0_ends_every_process_with_one_line(tmp_path, keys, failed_file):
    cfg_file = write_cfg(tmp_path, {**DDP_JOB, **keys})
    started = time.monotonic()
    result = subprocess.run(torchrun_command(cfg_file, "OUTPUT_DIR", "out"), cwd=tmp_path,
                            capture_output=True, text=True, timeout=300,
                            preexec_fn=limit_file_size(12_000))
    assert time.monotonic() - started < 120  # no process waits for rank 0
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"error: cannot write out/{failed_file} ("), result.stderr
    assert "exitcode  : 1 " in result.stderr  # torchrun's summary: the first worker to end
    assert 'train_net.py", line' not in result.stderr  # no worker's traceback
    assert not list((tmp_path / "out").glob(".*.tmp"))
    assert not (tmp_path / "out" / failed_file).exists()


def test_a_full_disk_hitting_metrics_json_on_rank_0_ends_every_process_without_a_traceback(tmp_path):
    """Rank 0 alone writes metrics.json; when it cannot, rank 0 stops with one line and the
    other process, whose next collective then fails, leaves quietly instead of a traceback."""
    job = {**DDP_JOB, "WRITERS": ["json"],
           "SOLVER": {**DDP_JOB["SOLVER"], "SNAPSHOT_ITERS": 0,
                      "SCHEDULER": {**DDP_JOB["SOLVER"]["SCHEDULER"], "TOTAL_ITERS": 3000}}}
    cfg_file = write_cfg(tmp_path, job)
    started = time.monotonic()
    result = subprocess.run(torchrun_command(cfg_file, "OUTPUT_DIR", "out"), cwd=tmp_path,
                            capture_output=True, text=True, timeout=300,
                            preexec_fn=limit_file_size(40_000))
    assert time.monotonic() - started < 120
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == ["error: cannot write out/metrics.json (File too large); last good checkpoint: none"]
    assert 'train_net.py", line' not in result.stderr and "[rank1]" not in result.stderr


def test_float16_sigkill_inside_checkpoint_writes_resumes_bit_identical(tmp_path):
    job = {**SHORT_JOB, "SOLVER": {**SHORT_JOB["SOLVER"], "SNAPSHOT_ITERS": 1,
                                   "AMP": {"ENABLED": True, "DTYPE": "float16"},
                                   "SCHEDULER": {**SHORT_JOB["SOLVER"]["SCHEDULER"], "TOTAL_ITERS": 40}}}
    cfg_file = write_cfg(tmp_path, job)
    result = train(tmp_path, cfg_file, "OUTPUT_DIR", "reference")
    assert result.returncode == 0 and "float16 autocast" in result.stdout, result.stderr
    sigkill_during_checkpoint_writes(tmp_path, cfg_file, kills=3)
    result = train(tmp_path, cfg_file, "OUTPUT_DIR", "out", "--resume")
    assert result.returncode == 0, result.stderr
    assert not list((tmp_path / "out").glob(".*.tmp"))
    # Weights, moments, the GradScaler's state, the loss history and every metrics line.
    assert_same_final_state(tmp_path / "out", tmp_path / "reference")
    final = load(tmp_path / "out" / "model_final.pth")
    assert final["iteration"] == 40 and final["optim_wrapper"]["scaler"]["scale"] > 0
