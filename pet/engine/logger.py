"""Logging of a training run: a human log file, the console, and a progress bar on terminals.

The console shows INFO and above. ``log.txt`` also gets DEBUG, the level of the per-iteration
metrics lines and checkpoint saves. On a terminal the progress bar stands for the metrics lines;
elsewhere (a pipe, ``| tee``, a cluster job's log) one of them is logged at INFO every
``PLAIN_LINE_INTERVAL`` seconds (``ProgressBar.line_due``), so the output shows progress without
flooding. Either way log.txt gets each line once.

Records are buffered until the run's OUTPUT_DIR may be written (after every check passed), then
flushed into ``log.txt``; a run refused for bad input writes nothing.
"""
import errno
import logging
import logging.handlers
import os
import shutil
import signal
import sys
import time
from typing import Callable, Optional, TextIO

LOG_FORMAT = "[%(asctime)s %(levelname)s %(name)s] %(message)s"
_BUFFER_NAME = "pet-log-buffer"
_BUFFER_CAPACITY = 100_000


def is_terminal(stream: TextIO = None) -> bool:
    """Whether ``stream`` (stdout by default) is an interactive terminal."""
    stream = stream or sys.stdout
    return hasattr(stream, "isatty") and stream.isatty() and os.environ.get("TERM") != "dumb"


def format_seconds(seconds: float) -> str:
    """``3725`` -> ``"1:02:05"``."""
    seconds = int(round(max(seconds, 0)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def format_rate(per_second: float) -> str:
    """A speed for the status line: whole units from 10 on, two figures below (``0.37``)."""
    return f"{per_second:.0f}" if per_second >= 10 else f"{per_second:.2g}"


# The widest the progress line gets, whatever the terminal: a classic terminal's width.
MAX_STATUS_WIDTH = 80
# Off a terminal, the fewest seconds between two progress lines on the console (the first logged
# iteration and the last one always get theirs).
PLAIN_LINE_INTERVAL = 10.0


def fit_status(text: str, fraction: float, width: int) -> str:
    """``[####......] text``, the bar as wide as fits in ``width - 1`` columns (at most 20,
    none when the text alone fills the line); the text cut to fit. A line one column short of
    the width never wraps, so each redraw replaces the last."""
    room = width - 1 - len(text)
    bar_width = min(20, room - 3)
    if bar_width >= 5:
        filled = int(bar_width * min(max(fraction, 0.0), 1.0))
        text = f"[{'#' * filled}{'.' * (bar_width - filled)}] {text}"
    return text[:max(width - 1, 0)]


class ProgressBar:
    """The console's view of the progress. On a terminal (``enabled``): one self-rewriting status
    line, redrawn at most every ``min_interval`` seconds. Elsewhere nothing is drawn and
    ``line_due`` paces the plain progress lines the caller logs instead, at most one every
    ``line_interval`` seconds. ``clock`` (seconds) is injectable for tests."""

    def __init__(self, stream: TextIO = None, min_interval: float = 0.1,
                 line_interval: float = PLAIN_LINE_INTERVAL,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.stream = stream or sys.stdout
        self.enabled = is_terminal(self.stream)
        self.min_interval = min_interval
        self.line_interval = line_interval
        self.clock = clock
        self._last_draw = 0.0
        self._last_line = None
        self._visible = False

    def line_due(self, final: bool = False) -> bool:
        """Off a terminal, whether the console should get a plain progress line now: the first
        time asked, then once ``line_interval`` seconds have passed since the last one, and
        always when ``final`` (the last iteration). Never on a terminal: the bar stands for
        the lines. A True answer counts as a line shown."""
        if self.enabled:
            return False
        now = self.clock()
        if not final and self._last_line is not None and now - self._last_line < self.line_interval:
            return False
        self._last_line = now
        return True

    def update(self, text: Callable[[], str], force: bool = False) -> None:
        """Show ``text()`` (at most every ``min_interval`` seconds unless ``force``); the text
        is only built when drawn."""
        if not self.enabled:
            return
        now = self.clock()
        if not force and now - self._last_draw < self.min_interval:
            return
        self._last_draw = now
        self._write("\r\033[K" + text())
        self._visible = self.enabled

    def width(self) -> int:
        """Columns the status line may take: the terminal's, at most MAX_STATUS_WIDTH."""
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            columns = shutil.get_terminal_size((MAX_STATUS_WIDTH, 24)).columns
        return min(columns or MAX_STATUS_WIDTH, MAX_STATUS_WIDTH)

    def clear(self) -> None:
        """Erase the line, so that a log message starts on a clean line."""
        if self._visible:
            self._write("\r\033[K")
            self._visible = False

    def close(self) -> None:
        """Leave the last status on screen and move to the next line."""
        if self._visible:
            self._write("\n")
            self._visible = False

    def _write(self, text: str) -> None:
        """Write and flush; a console whose reader went away ends the bar, silently."""
        try:
            self.stream.write(text)
            self.stream.flush()
        except OSError as e:
            if not is_closed_pipe(e):
                raise
            self.enabled = False
            silence_closed_stream(self.stream)


def raise_if_from_signal_handler(error: Optional[BaseException]) -> None:
    """Re-raise ``error`` when a signal handler raised it while a record or a file was being
    written (torch's SIGCHLD handler reports a dead DataLoader worker so): logging would print
    it as a "Logging error" traceback and go on, a checkpoint write would call it a failed
    write; the run must stop with the error's own line."""
    if error is None:
        return
    handlers = {getattr(signal.getsignal(number), "__code__", None) for number in signal.valid_signals()}
    frame = error.__traceback__
    while frame is not None:
        if frame.tb_frame.f_code in handlers:
            raise error
        frame = frame.tb_next


class OutputWriteError(Exception):
    """A file of the run's output (log.txt, metrics.json, the CSV, the TensorBoard events)
    could not be written (a full disk, a read-only directory): the message names the file."""


def output_write_error(path: str, error: OSError) -> OutputWriteError:
    """The one line of a failed write of ``path``."""
    return OutputWriteError(f"cannot write {path} ({error.strerror or type(error).__name__})")


class _LogFileHandler(logging.FileHandler):
    """log.txt: a record that cannot be written stops the run with one line naming the file
    (logging's default prints a traceback per record and goes on)."""

    def __init__(self, path: str, mode: str) -> None:
        super().__init__(path, mode=mode)
        self.path = path  # as OUTPUT_DIR names it (baseFilename is absolute)

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        raise_if_from_signal_handler(error)
        if isinstance(error, OSError):
            raise output_write_error(self.path, error) from None
        super().handleError(record)


def silence_closed_stream(stream: TextIO) -> None:
    """Point a stream whose reader went away (``| head``) at /dev/null, so every later write
    (and the interpreter's last flush) succeeds silently instead of raising BrokenPipeError."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a file (a StringIO): nothing to redirect
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def is_closed_pipe(error: BaseException) -> bool:
    """Whether ``error`` says the reader of a pipe went away."""
    return isinstance(error, BrokenPipeError) or (isinstance(error, OSError) and error.errno == errno.EPIPE)


class _ConsoleHandler(logging.StreamHandler):
    """Clears the progress bar before each message. A console whose reader went away (a
    closed pipe) is silenced: the run goes on writing its files, log.txt included."""

    def __init__(self, stream: TextIO, progress_bar: ProgressBar) -> None:
        super().__init__(stream)
        self.progress_bar = progress_bar

    def emit(self, record: logging.LogRecord) -> None:
        self.progress_bar.clear()
        super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        raise_if_from_signal_handler(error)
        if error is not None and is_closed_pipe(error):
            silence_closed_stream(self.stream)
            return
        super().handleError(record)


class _BelowWarning(logging.Filter):
    """Lets through what is less than a warning (those go to standard error)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING


def setup_logging(progress_bar: Optional[ProgressBar] = None,
                  console_stream: TextIO = None, main_process: bool = True) -> logging.Logger:
    """Configure the ``pet`` logger: INFO to ``console_stream`` (by default stdout, and warnings
    and errors to stderr), and every record kept in memory for ``log.txt`` until
    ``attach_log_file``. Returns the ``pet`` logger.

    The other processes of a torchrun job (``main_process`` False) show warnings only and keep
    nothing for a log file: rank 0 speaks for the job."""
    logger = close_logging()
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    progress_bar = progress_bar or ProgressBar()
    console = _ConsoleHandler(console_stream or sys.stdout, progress_bar)
    console.setLevel(logging.INFO if main_process else logging.WARNING)
    console.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(console)
    if console_stream is None:  # warnings and errors belong on standard error
        console.addFilter(_BelowWarning())
        warnings_handler = _ConsoleHandler(sys.stderr, progress_bar)
        warnings_handler.setLevel(logging.WARNING)
        warnings_handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(warnings_handler)
    if not main_process:
        return logger
    # A MemoryHandler without a target never writes: nothing reaches the disk before
    # attach_log_file, and nothing at all if the run is refused.
    buffer = logging.handlers.MemoryHandler(_BUFFER_CAPACITY, flushLevel=logging.CRITICAL + 1)
    buffer.set_name(_BUFFER_NAME)
    logger.addHandler(buffer)
    return logger


def close_logging() -> logging.Logger:
    """Remove and close every handler of the ``pet`` logger (its log file among them)."""
    logger = logging.getLogger("pet")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    return logger


def attach_log_file(path: str, append: bool) -> None:
    """Write every ``pet`` record (the buffered ones first) to ``path`` from now on."""
    logger = logging.getLogger("pet")
    file_handler = _LogFileHandler(path, mode="a" if append else "w")
    file_handler.setLevel(logging.DEBUG)
    file_handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    for handler in list(logger.handlers):
        if handler.get_name() == _BUFFER_NAME:
            handler.setTarget(file_handler)
            handler.flush()
            logger.removeHandler(handler)
            handler.close()
    logger.addHandler(file_handler)


def run_header(argv, device, num_threads: int, world_size: int, cfg_file: str) -> str:
    """The first lines of log.txt: how the run was started and on what (command, config path,
    python and torch versions, device, CPU threads, processes)."""
    import platform
    import shlex

    import torch

    command = " ".join(shlex.quote(arg) for arg in [sys.executable, *argv])
    return (f"Command: {command}\n"
            f"Config file: {os.path.abspath(cfg_file)}\n"
            f"Versions: python {platform.python_version()}, torch {torch.__version__}\n"
            f"Device: {device}; CPU threads: {num_threads}; world size: {world_size}")
