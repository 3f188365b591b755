"""A hostile user's start-up and console (reliability, third round), through real train_net runs:
Ctrl-C or SIGTERM at any moment of the start-up, while the modules load included, is one line
and the shell's status; a console whose reader goes away (``| head``) never gets a traceback:
the run goes on and writes its files."""
import signal
import subprocess
import time

import pytest

from tests.tools.test_train_net import TINY_JOB, read_metrics, train_command, write_cfg

pytestmark = pytest.mark.slow  # real runs


def wait_until_handled(pid: int, signum: int) -> None:
    """Until ``pid`` catches ``signum`` (its handler is set: /proc's SigCgt mask): the earliest
    moment its own code can answer a signal; before, the interpreter is still starting."""
    deadline = time.monotonic() + 30
    while True:
        with open(f"/proc/{pid}/status") as f:
            caught = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
        if caught >> (signum - 1) & 1:
            return
        assert time.monotonic() < deadline, "the handler was never set"
        time.sleep(0.0005)


@pytest.mark.parametrize("signum, status, line", [
    (signal.SIGINT, 130, "interrupted before training started"),
    (signal.SIGTERM, 143, "terminated before training started"),
])
@pytest.mark.parametrize("delay", [0.0, 0.15, 0.5], ids=["handlers-set", "imports", "later-imports"])
def test_a_signal_while_starting_is_one_line_and_the_shells_status(tmp_path, signum, status, line, delay):
    cfg_file = write_cfg(tmp_path, dict(TINY_JOB, OUTPUT_DIR="out"))
    process = subprocess.Popen(train_command(cfg_file), cwd=tmp_path, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    wait_until_handled(process.pid, signal.SIGTERM)  # set right after SIGINT's
    time.sleep(delay)
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == status, err
    assert err.strip().splitlines() == [line]
    assert not (tmp_path / "out").exists()  # nothing was written yet


def test_a_closed_stdout_pipe_gives_no_traceback_and_the_run_writes_its_files(tmp_path):
    cfg_file = write_cfg(tmp_path, dict(TINY_JOB, OUTPUT_DIR="out"))  # LOG_PERIOD 1: many lines
    process = subprocess.Popen(train_command(cfg_file), cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    process.stdout.readline()  # as `| head -1` would, then the reader goes away
    process.stdout.close()
    err = process.stderr.read()
    assert process.wait(timeout=120) == 0, err
    assert err == ""  # no "--- Logging error ---", no BrokenPipeError
    assert [r["iteration"] for r in read_metrics(tmp_path / "out")] == list(range(60))
    assert (tmp_path / "out" / "model_final.pth").exists()
    assert "Done: held-out accuracy" in (tmp_path / "out" / "log.txt").read_text()
