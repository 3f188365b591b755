"""Tests of pet/engine/logger.py: the pacing of the plain progress lines off a terminal, and the
route of MetricsWriter's lines to the console and to log.txt (each line once in the file)."""
import io
import logging
import os
import re
import signal

import pytest

from pet.engine.events import MetricsStorage
from pet.engine.hooks import IterationTimer, MetricsWriter
from pet.engine.logger import (
    PLAIN_LINE_INTERVAL,
    ProgressBar,
    attach_log_file,
    close_logging,
    format_rate,
    setup_logging,
)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_a_line_is_due_first_then_every_interval_and_at_the_end():
    clock = FakeClock()
    bar = ProgressBar(stream=io.StringIO(), line_interval=10.0, clock=clock)
    assert not bar.enabled
    due = []
    for _ in range(25):  # one question every 2 seconds
        due.append(bar.line_due())
        clock.now += 2.0
    assert [i for i, d in enumerate(due) if d] == [0, 5, 10, 15, 20]
    clock.now -= 2.0  # 8 s after the last line
    assert not bar.line_due() and bar.line_due(final=True)  # the last line is never held back
    assert PLAIN_LINE_INTERVAL == 10.0  # the documented default


def test_an_interval_of_zero_shows_every_line():
    bar = ProgressBar(stream=io.StringIO(), line_interval=0.0, clock=FakeClock())
    assert all(bar.line_due() for _ in range(5))


def test_on_a_terminal_no_line_is_due_and_the_bar_draws(monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    terminal = FakeTerminal()
    clock = FakeClock()
    bar = ProgressBar(stream=terminal, line_interval=0.0, clock=clock)
    assert bar.enabled
    assert not bar.line_due() and not bar.line_due(final=True)
    bar.update(lambda: "status 1")
    bar.update(lambda: "status 2")  # within min_interval: not drawn
    clock.now += 1.0
    bar.update(lambda: "status 3")
    assert terminal.getvalue() == "\r\033[Kstatus 1\r\033[Kstatus 3"


def test_a_dumb_terminal_gets_plain_lines(monkeypatch):
    monkeypatch.setenv("TERM", "dumb")
    bar = ProgressBar(stream=FakeTerminal(), clock=FakeClock())
    assert not bar.enabled and bar.line_due()


@pytest.mark.parametrize("rate, text", [(1234.4, "1234"), (10.2, "10"), (9.87, "9.9"), (0.374, "0.37")])
def test_format_rate(rate, text):
    assert format_rate(rate) == text


def run_metrics_writer(tmp_path, console, clock, max_iter=20, period=2, seconds_per_step=3.0):
    """max_iter steps through a MetricsWriter logging every ``period`` iterations, with the
    logging train_net sets up (console and log.txt); the clock moves ``seconds_per_step`` a
    step. Returns log.txt's text."""
    bar = ProgressBar(stream=console, clock=clock)
    setup_logging(bar, console)
    attach_log_file(str(tmp_path / "log.txt"), append=False)
    try:
        timer = IterationTimer(max_iter, 0)
        writer = MetricsWriter(str(tmp_path / "metrics.json"), period, max_iter, timer,
                               progress_bar=bar, iter_per_epoch=8, images_per_iter=32)
        storage = MetricsStorage(0)
        for it in range(max_iter):
            storage.begin_iteration(it)
            timer.before_step(storage)
            storage.put_scalar("loss", 1.0 / (it + 1))
            storage.put_scalar("lr", 0.1, smoothing_hint=False)
            timer.after_step(storage)
            writer.after_step(storage)
            clock.now += seconds_per_step
        storage.iter = max_iter
        writer.after_train(storage)
    finally:
        close_logging()
    return (tmp_path / "log.txt").read_text()


LINE = re.compile(r"ep (\d+)  iter (\d+)/20  lr 0\.1  loss \S+ \(median \S+\)  \S+ it/s "
                  r"\(\S+ images/s\)  eta \d+:\d\d:\d\d$")


def test_off_a_terminal_the_console_gets_a_paced_line_and_log_txt_every_line_once(tmp_path):
    console = io.StringIO()
    log = run_metrics_writer(tmp_path, console, FakeClock())
    # Logged every 2 iterations, 3 s apart: 6 s between logged lines, so one in two reaches the
    # console (10 s interval): iterations 2, 6, 10, 14, 18, and the last one.
    shown = [LINE.match(line) for line in console.getvalue().splitlines()]
    assert all(shown), console.getvalue()
    assert [int(m.group(2)) for m in shown] == [2, 6, 10, 14, 18, 20]
    assert [int(m.group(1)) for m in shown] == [1, 1, 2, 2, 3, 3]
    assert "\r" not in console.getvalue() and "\033" not in console.getvalue()
    # log.txt: every logged iteration exactly once, the console's at INFO, the others at DEBUG.
    # A log.txt line: "[date time LEVEL logger] message".
    logged = [(line.split()[2], int(LINE.search(line).group(2)))
              for line in log.splitlines() if LINE.search(line)]
    assert [it for _, it in logged] == list(range(2, 21, 2))
    assert [it for level, it in logged if level == "INFO"] == [2, 6, 10, 14, 18, 20]


def test_on_a_terminal_the_lines_go_to_log_txt_only(tmp_path, monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    terminal = FakeTerminal()
    log = run_metrics_writer(tmp_path, terminal, FakeClock())
    screen = terminal.getvalue()
    assert "\n" in screen and screen.count("\n") == 1  # the bar, closed by one newline
    assert "iter 20/20" in screen.rsplit("\r", 1)[-1]
    levels = [line.split()[2] for line in log.splitlines() if LINE.search(line)]
    assert levels == ["DEBUG"] * 10


class SignalledStream(io.StringIO):
    """A stream during whose write the process gets SIGUSR1 (as the training process gets
    SIGCHLD when a DataLoader worker dies while a line is being written)."""

    def write(self, text: str) -> int:
        os.kill(os.getpid(), signal.SIGUSR1)
        return super().write(text)


class WorkerDied(RuntimeError):
    pass


def raise_worker_died(signum, frame):
    raise WorkerDied("DataLoader worker (pid 1) is killed by signal: Killed.")


@pytest.mark.parametrize("where", ["console", "log.txt"])
def test_an_error_a_signal_handler_raises_during_a_write_propagates(tmp_path, where, capsys):
    # logging's default prints "--- Logging error ---" with a traceback and goes on; the run
    # must instead see the error (train_net turns a dead worker into its one line).
    previous = signal.signal(signal.SIGUSR1, raise_worker_died)
    try:
        logger = setup_logging(console_stream=SignalledStream() if where == "console" else io.StringIO())
        if where == "log.txt":
            attach_log_file(str(tmp_path / "log.txt"), append=False)
            files = [h for h in logger.handlers if isinstance(h, logging.FileHandler)]
            assert files
            for handler in files:
                handler.stream.close()
                handler.stream = SignalledStream()
        with pytest.raises(WorkerDied):
            logger.info("a line")
    finally:
        close_logging()
        signal.signal(signal.SIGUSR1, previous)
    assert "Logging error" not in capsys.readouterr().err


def test_other_errors_during_a_write_keep_loggings_default(capsys):
    # A record that cannot be formatted is logging's own report, not a reason to stop a run.
    logger = setup_logging(console_stream=io.StringIO())
    try:
        logger.info("%d", "not a number")
    finally:
        close_logging()
    assert "Logging error" in capsys.readouterr().err
