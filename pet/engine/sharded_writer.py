"""Writing a sharded checkpoint directory (``pet.engine.sharded_checkpoint`` has its layout):
rank 0 writes the rest of the state into the temporary directory, every process its shards
with torch.distributed.checkpoint, then rank 0 renames the directory into place and the
checkpointer points at it. With ``async_save`` (SOLVER.ASYNC_CHECKPOINT) a periodic
checkpoint's shards are staged to memory and written in the background over a gloo group of
their own; rank 0 publishes it once written (``poll``), and the next checkpoint or the end of
the run waits for it first (``wait``)."""
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

import torch
import torch.distributed as dist

from pet.engine.checkpoint_io import CheckpointWriteError, atomic_write, write_on_main
from pet.engine.distributed import ProcessInfo, all_gather_objects
from pet.engine.logger import raise_if_from_signal_handler
from pet.engine.sharded_checkpoint import STATE_FILE, publish, tmp_dir
from pet.lib.config.errors import first_line


def _write_error(path: str, reason: str) -> CheckpointWriteError:
    """The one line of a failed write of the sharded checkpoint ``path``."""
    return CheckpointWriteError(f"cannot write {path} ({reason}); the previous checkpoint is kept")


@dataclass
class PendingSave:
    """A sharded checkpoint being written in the background."""

    future: Any
    tmp: str
    path: str
    iteration: int
    published: bool = False


class ShardedWriter:
    """Writes the sharded checkpoints of ``save_dir``; ``point_to(path, iteration)`` (rank 0)
    moves ``last_checkpoint`` to a complete one and applies retention."""

    def __init__(self, save_dir: str, process: ProcessInfo, async_save: bool,
                 point_to: Callable[[str, int], None]) -> None:
        self.save_dir = save_dir
        self.process = process
        self.async_save = async_save
        self.point_to = point_to
        # Background writes talk over a group of their own, beside the training's collectives.
        self._group = dist.new_group(backend="gloo") if async_save and dist.is_initialized() else None
        self._pending: Optional[PendingSave] = None

    def save(self, path: str, iteration: int, tensors: Dict[str, torch.Tensor], rest: Dict[str, Any],
             background: bool = False) -> str:
        """Write ``tensors`` (every process its shards) and ``rest`` (rank 0) as the directory
        ``path``; in the background with ``background`` and ``async_save`` (a periodic
        checkpoint: the run goes on; a stop's or the last one is written before returning)."""
        self.wait()
        tmp = tmp_dir(path)

        def prepare() -> None:
            try:  # a crash's leftovers went at the start (output_dir.remove_leftovers)
                os.makedirs(tmp)
            except OSError as e:
                raise _write_error(path, e.strerror or first_line(e)) from None
            atomic_write(os.path.join(tmp, STATE_FILE), lambda f: torch.save(rest, f))
        write_on_main(self.process, prepare)
        import torch.distributed.checkpoint as dcp  # here: see pet.lib.utils.shards

        writer = dcp.FileSystemWriter(tmp)
        if self.async_save and background:
            future = dcp.async_save(tensors, storage_writer=writer, process_group=self._group)
            self._pending = PendingSave(future, tmp, path, iteration)
            return path
        try:
            dcp.save(tensors, storage_writer=writer)
        except Exception as e:  # noqa: BLE001  (DCP gathers every process's failure into one)
            raise_if_from_signal_handler(e)
            raise _write_error(path, first_line(e)) from None
        write_on_main(self.process, lambda: self._publish(tmp, path, iteration))
        return path

    def _publish(self, tmp: str, path: str, iteration: int) -> None:
        """Rename the complete directory ``tmp`` to ``path`` and point at it (rank 0)."""
        try:
            publish(tmp, path)
        except OSError as e:
            raise _write_error(path, e.strerror or first_line(e)) from None
        self.point_to(path, iteration)

    def poll(self) -> None:
        """Publish the background checkpoint once it is written (rank 0; DCP's coordinator
        finishes last, after every process's shards). Call it every iteration."""
        pending = self._pending
        if pending is None or pending.published or not self.process.is_main or not pending.future.done():
            return
        if pending.future.exception() is None:  # a failure is raised by wait(), everywhere
            self._publish(pending.tmp, pending.path, pending.iteration)
            pending.published = True

    def wait(self) -> None:
        """Wait for the background checkpoint, if any, and publish it; CheckpointWriteError on
        every process when a process's write failed (the previous checkpoint stays)."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        error = None
        try:
            pending.future.result()
        except Exception as e:  # noqa: BLE001
            error = str(_write_error(pending.path, first_line(e)))
        errors = [e for e in all_gather_objects(error) if e]
        if errors:
            raise CheckpointWriteError(errors[0])
        write_on_main(self.process, lambda: pending.published or self._publish(
            pending.tmp, pending.path, pending.iteration))
