"""Where the metrics of a logged iteration go: ``metrics.json``, ``metrics.csv`` and
TensorBoard event files, chosen by the ``WRITERS`` key (the ``MetricsWriter`` hook builds the
record and hands it to each writer).

The fields of a record (the keys of a metrics.json line; CSV and TensorBoard get the same
numbers):

- ``iteration``: the index of the step, from 0 (the lr schedule's and tools/plot_lr.py's count);
- ``iterations_done``: iteration + 1, the count the log uses ("Evaluation after iteration 30" is
  the record with iterations_done 30) and the step of the CSV rows and TensorBoard events;
- ``epoch``: the epoch the iteration belongs to, from 1 (as the log's "(epoch 2)");
- ``loss``: the loss of this step's batch (under torchrun, the mean over the processes of
  their shares); ``loss_smoothed``: the median over the last LOG_PERIOD steps (at least 20),
  the value the progress line shows (its history is checkpointed: a resumed run logs the same
  values as an uninterrupted one);
- ``grad_norm``: the total 2-norm of the step's gradients before clipping (the value
  ``torch.nn.utils.clip_grad_norm_`` returns; unscaled under float16 AMP), measured every
  LOG_PERIOD iterations, at the last one and, by the step's non-finite guard, whenever the
  gradients were not finite (the other steps only check finiteness, a cheaper pass, so a line
  written only for an evaluation has none);
- ``nonfinite_steps``: steps skipped so far for non-finite gradients or loss (with
  SOLVER.SKIP_NONFINITE > 0 only);
- ``lr``: the lr of the largest param group; ``lr_group<i>``: the lr of param group i, for each
  group whose lr differs from every earlier group's (only when there are several);
- ``loss_scale``, ``skipped_steps``: the AMP loss scale and the optimizer steps skipped so far
  for non-finite gradients (AMP with a GradScaler only);
- ``time``: seconds of this step; ``data_time``: seconds of it spent waiting for the data
  loader (about 0 while its workers keep up); ``images_per_s``: training images per second over the steady
  steps (the batch size over the average step time); ``eta_seconds``: the time left;
- at an evaluation: ``accuracy`` (%), ``test_loss``, ``best_accuracy``, and with MODEL.EMA the
  same of the averaged weights as ``ema_accuracy``, ``ema_test_loss``.

On resume every writer first drops what the interrupted run wrote after its last checkpoint
(iterations at or after the resumed one), so each iteration appears once.
"""
import csv
import json
import math
import os
import threading
from typing import Dict, List

from pet.engine.checkpointer import atomic_write
from pet.lib.utils.registry import Registry

# Writer classes by the names WRITERS may list.
WRITERS = Registry("writer")
JSON_FILE = "metrics.json"
CSV_FILE = "metrics.csv"
# Fields that say where a record is, not what was measured: not TensorBoard scalars.
_POSITION_FIELDS = ("iteration", "iterations_done", "epoch")


class MetricsFileWriter:
    """A writer takes one record per logged iteration (``write``) and closes its file once.
    ``FILE`` is the name of its file in OUTPUT_DIR ("": OUTPUT_DIR itself); ``path`` where it
    writes."""

    FILE = ""
    path = ""

    def write(self, record: Dict[str, float]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


@WRITERS.register(name="json")
class JSONWriter(MetricsFileWriter):
    """``metrics.json``: one JSON object per line."""

    FILE = JSON_FILE

    def __init__(self, path: str, start_iter: int = 0) -> None:
        self.path = path
        truncate_metrics(self.path, start_iter)
        self._file = open(self.path, "a")

    def write(self, record: Dict[str, float]) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


@WRITERS.register(name="csv")
class CSVWriter(MetricsFileWriter):
    """``metrics.csv``: one ``iterations_done,epoch,name,value`` row per scalar (a long table:
    the fields differ between iterations; ``pandas.read_csv(...).pivot(index="iterations_done",
    columns="name", values="value")`` makes it wide)."""

    HEADER = ("iterations_done", "epoch", "name", "value")

    FILE = CSV_FILE

    def __init__(self, path: str, start_iter: int = 0) -> None:
        self.path = path
        self._truncate(start_iter)
        new = not os.path.exists(self.path)
        self._file = open(self.path, "a", newline="")
        self._csv = csv.writer(self._file)
        if new:
            self._csv.writerow(self.HEADER)
            self._file.flush()

    def _truncate(self, start_iter: int) -> None:
        if not os.path.exists(self.path):
            return
        with open(self.path, newline="") as f:
            rows = list(csv.reader(f))
        kept = [rows[0]] if rows else [list(self.HEADER)]
        for row in rows[1:]:
            if len(row) == len(self.HEADER) and _is_int(row[0]) and int(row[0]) <= start_iter:
                kept.append(row)

        def write(f) -> None:
            text = "".join(",".join(row) + "\r\n" for row in kept)
            f.write(text.encode())
        atomic_write(self.path, write)

    def write(self, record: Dict[str, float]) -> None:
        done, epoch = record["iterations_done"], record["epoch"]
        for name, value in record.items():
            if name not in _POSITION_FIELDS:
                self._csv.writerow((done, epoch, name, repr(float(value))))
        self._file.flush()

    def close(self) -> None:
        self._file.close()


# TensorBoard's own thread writes the events and flushes them this often (and at the end): a
# flush per logged iteration made the training thread wait for it, and an event per field
# (add_scalar) cost about 1 ms per logged iteration, together 2% of the default job; one event
# per record, flushed by the thread, costs about 0.5%. metrics.json, the run's record, is
# flushed at every line.
FLUSH_SECONDS = 5


@WRITERS.register(name="tensorboard")
class TensorBoardWriter(MetricsFileWriter):
    """TensorBoard event files in ``output_dir`` (``tensorboard --logdir OUTPUT_DIR``): one
    scalar per field, at step ``iterations_done``. A resumed run purges the steps after its
    checkpoint, so the curves show each iteration once."""

    FILE = ""  # a directory of event files: OUTPUT_DIR itself

    def __init__(self, output_dir: str, start_iter: int = 0) -> None:
        from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: seconds

        _quiet_tensorboard_thread_errors()
        self.path = os.path.join(output_dir, "events.out.tfevents.*")  # for messages
        self._writer = SummaryWriter(output_dir, purge_step=start_iter + 1 if start_iter else None,
                                     flush_secs=FLUSH_SECONDS)

    def write(self, record: Dict[str, float]) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary

        # One event holding every field (what add_scalar writes one event each for), through the
        # writer's file writer (_get_file_writer: it also writes the resume's purge_step).
        values = [Summary.Value(tag=name, simple_value=float(value)) for name, value in record.items()
                  if name not in _POSITION_FIELDS]
        values.append(Summary.Value(tag="epoch", simple_value=float(record["epoch"])))
        self._writer._get_file_writer().add_summary(Summary(value=values), int(record["iterations_done"]))

    def close(self) -> None:
        self._writer.close()


def _quiet_tensorboard_thread_errors() -> None:
    """TensorBoard's writer thread re-raises a failed write (a full disk) and the next write of
    the training thread raises it again, where MetricsWriter turns it into one line: the thread's
    own traceback (threading.excepthook) is dropped. Other threads' errors are printed as ever."""
    from tensorboard.summary.writer.event_file_writer import _AsyncWriterThread

    previous = threading.excepthook
    if getattr(previous, "quiets_tensorboard", False):
        return

    def hook(args):
        if not (isinstance(args.thread, _AsyncWriterThread) and isinstance(args.exc_value, OSError)):
            previous(args)
    hook.quiets_tensorboard = True
    threading.excepthook = hook


def build_writers(names, output_dir: str, start_iter: int = 0) -> List[MetricsFileWriter]:
    """The writers named by ``names`` (WRITERS), writing to ``output_dir`` from ``start_iter``."""
    writers = []
    for name in names:
        writer_class = WRITERS.get(name)
        writers.append(writer_class(os.path.join(output_dir, writer_class.FILE), start_iter))
    return writers


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def truncate_metrics(path: str, start_iter: int) -> None:
    """Keep only the complete lines of ``path`` whose iteration is before ``start_iter``."""
    if not os.path.exists(path):
        return
    kept: List[str] = []
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
            if record.get("iteration", math.inf) < start_iter:
                kept.append(json.dumps(record) + "\n")
    # Atomic: a kill while truncating must not lose the lines of the iterations kept.
    atomic_write(path, lambda f: f.write("".join(kept).encode()))
