"""What tools/train_net.py shows its user: on a real pseudo-terminal of 80 columns, one progress
line redrawn in place that never wraps; through a pipe (``| tee``, a cluster job's log), plain
progress lines every few seconds; and the header of log.txt."""
import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time

import pytest

from tests.tools.test_train_net import TINY_JOB, train_command, write_cfg

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# The progress bar's text: "[####......] ep 2 iter 60/60 lr 0.0005 loss 0.1234 1234 it/s eta 0:00:00".
BAR_TEXT = re.compile(r"ep \d+ iter (\d+)/60 lr \S+ loss \d+\.\d{4} [\d.]+ it/s eta \d+:\d\d:\d\d")
# The plain line off a terminal: "ep 1  iter 1/60  lr ...  loss ... (median ...)  ... it/s ...  eta ...".
PLAIN_LINE = re.compile(r"^ep (\d+)  iter (\d+)/60  lr \S+  loss \S+ \(median \S+\)  [\d.]+ it/s "
                        r"\([\d.]+ images/s\)  eta \d+:\d\d:\d\d")
LOG_RECORD = re.compile(r"^\[\S+ \S+ (\w+) [\w.]+\] (.*)$")

# The tiny job without periodic checkpoints, a line logged every iteration.
JOB = dict(TINY_JOB, OUTPUT_DIR="out", SOLVER=dict(TINY_JOB["SOLVER"], SNAPSHOT_ITERS=0))


def run_on_a_terminal(cwd, cfg_file, columns: int) -> str:
    """Run train_net with stdout and stderr on a pseudo-terminal of ``columns`` columns; return
    every byte it wrote there, decoded."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    process = subprocess.Popen(train_command(cfg_file), cwd=cwd, stdout=follower, stderr=follower,
                               env=dict(env, TERM="xterm"))
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the terminal closes when the process exits
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    assert process.wait(timeout=300) == 0, output.decode(errors="replace")[-2000:]
    return output.decode()


def screen_lines(output: str) -> list:
    """The lines left on screen: each '\\n'-terminated line replayed as a terminal does ('\\r'
    back to column 0, ESC[K erases to the end of the line, text overwrites), escapes removed."""
    lines = []
    for raw in output.split("\n")[:-1]:
        screen = ""
        for segment in raw.split("\r"):
            if segment.startswith("\x1b[K"):
                screen = ""
            text = ANSI_ESCAPE.sub("", segment)
            screen = text + screen[len(text):]
        lines.append(screen)
    return lines


def info_messages(log: str) -> list:
    """The messages of log.txt's INFO (and higher) records: what the console shows."""
    records = [LOG_RECORD.match(line) for line in log.splitlines()]
    return [m.group(2) for m in records if m and m.group(1) != "DEBUG"]


@pytest.mark.slow
def test_on_an_80_column_terminal_the_progress_line_is_redrawn_in_place(tmp_path):
    cfg_file = write_cfg(tmp_path, JOB)
    output = run_on_a_terminal(tmp_path, cfg_file, columns=80)
    # Every redraw of the progress line fits in 79 printable columns: it never wraps.
    pieces = [ANSI_ESCAPE.sub("", piece) for piece in re.split(r"[\r\n]", output)]
    redraws = [piece for piece in pieces if BAR_TEXT.search(piece)]
    assert len(redraws) >= 2, output
    assert all(len(piece) <= 79 for piece in redraws), max(redraws, key=len)
    assert all(re.match(r"\[[#.]{5,20}\] ep ", piece) for piece in redraws)  # the bar fits too
    # The screen: the console's log messages, and one progress line (the last, at 60/60) left
    # by the bar when training ended, before "Done": no stacked progress lines.
    log = (tmp_path / "out" / "log.txt").read_text()
    screen = screen_lines(output)
    progress = [i for i, line in enumerate(screen) if BAR_TEXT.search(line)]
    assert len(progress) == 1, "\n".join(screen)
    assert BAR_TEXT.search(screen[progress[0]]).group(1) == "60"
    assert screen[progress[0] + 1].startswith("Done: held-out accuracy")
    assert [line for line in screen if not BAR_TEXT.search(line)] == info_messages(log)
    assert len(screen) == len(info_messages(log)) + 1 < 15
    # The line shows the epoch, the iteration, the lr, the loss, the speed and the ETA.
    final = screen[progress[0]]
    for field in ("ep 2 ", "iter 60/60", "lr ", "loss ", " it/s", "eta 0:00:00"):
        assert field in final, final


@pytest.fixture(scope="module")
def piped_run(tmp_path_factory):
    """The tiny job with its output through a pipe, as under ``| tee`` or a batch system."""
    cwd = tmp_path_factory.mktemp("piped")
    cfg_file = write_cfg(cwd, JOB)
    started = time.perf_counter()
    result = subprocess.run(train_command(cfg_file), cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return cwd, result, time.perf_counter() - started


@pytest.mark.slow
def test_through_a_pipe_plain_progress_lines_appear_every_few_seconds(piped_run):
    cwd, result, seconds = piped_run
    assert "\r" not in result.stdout and "\x1b" not in result.stdout
    shown = [PLAIN_LINE.match(line) for line in result.stdout.splitlines() if PLAIN_LINE.match(line)]
    iterations = [int(m.group(2)) for m in shown]
    # The first logged iteration, then at most one every 10 s, and the last one.
    assert iterations[0] == 1 and iterations[-1] == 60 and iterations == sorted(set(iterations))
    assert len(iterations) <= 2 + seconds / 10, result.stdout
    assert "eta 0:00:00" in result.stdout.splitlines()[-2]  # the last line, before "Done"
    # log.txt holds every logged iteration exactly once: the shown lines are not repeated.
    log = (cwd / "out" / "log.txt").read_text()
    logged = [int(m.group(2)) for m in (PLAIN_LINE.match(LOG_RECORD.match(line).group(2))
                                        for line in log.splitlines() if LOG_RECORD.match(line)) if m]
    assert logged == list(range(1, 61))
    assert info_messages(log) == result.stdout.splitlines()  # the console saw the INFO records


@pytest.mark.slow
def test_log_txt_starts_with_the_command_versions_device_threads_and_config(piped_run):
    import platform

    import torch

    cwd, _, _ = piped_run
    head = (cwd / "out" / "log.txt").read_text().splitlines()[:4]
    command = " ".join([sys.executable, *train_command(cwd / "job.yaml")[1:]])
    assert LOG_RECORD.match(head[0]).group(1) == "DEBUG"
    assert head[0].endswith(f"Command: {command}")
    assert head[1] == f"Config file: {cwd / 'job.yaml'}"
    assert head[2] == f"Versions: python {platform.python_version()}, torch {torch.__version__}"
    assert head[3] == "Device: cpu; CPU threads: 1; world size: 1"
