"""Writing a run's files safely: atomically (a temporary file, fsynced, renamed), from rank 0
with every process learning the outcome, and configs as plain containers."""
import contextlib
import os
from typing import Any, Callable, Dict

from yacs.config import CfgNode

from pet.engine.distributed import ProcessInfo, all_gather_objects
from pet.engine.logger import raise_if_from_signal_handler
from pet.lib.config.errors import first_line

TMP_SUFFIX = ".tmp"


class CheckpointWriteError(OSError):
    """A file of the run could not be written (a full disk, a failed device); the file it was
    to replace is intact and no temporary file is left."""


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------
def write_on_main(process: ProcessInfo, write: Callable[[], None]) -> None:
    """``write()`` on rank 0 alone; when it fails there (CheckpointWriteError: a full disk),
    every process raises it, so all of them stop at the same point with the same error instead
    of waiting for rank 0 at the next collective. Every process must call it at the same point.
    """
    failure = None
    if process.is_main:
        try:
            write()
        except CheckpointWriteError as e:
            failure = str(e)
    failures = [f for f in all_gather_objects(failure) if f]
    if failures:
        raise CheckpointWriteError(failures[0])


def atomic_write(path: str, write) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, flush and fsync it, then
    rename it over ``path``: a crash at any moment leaves either the old file or the new one.

    Raises CheckpointWriteError (one line: the path and the reason) when any of it fails, a
    full disk included; the temporary file is then removed and ``path`` is untouched.
    """
    directory = os.path.dirname(os.path.abspath(path))
    tmp_path = os.path.join(directory, f".{os.path.basename(path)}{TMP_SUFFIX}")
    try:
        with open(tmp_path, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.remove(tmp_path)
        raise_if_from_signal_handler(e)  # a dead DataLoader worker's report is not a failed write
        if isinstance(e, OSError) or (isinstance(e, RuntimeError) and not isinstance(e, NotImplementedError)):
            # torch.save reports a failed write of its zip writer as a RuntimeError.
            reason = (e.strerror if isinstance(e, OSError) and e.strerror
                      else f"write failed: {first_line(e)}")
            raise CheckpointWriteError(f"cannot write {path} ({reason}); the previous file is "
                                       f"kept and no temporary file is left") from None
        raise
    fsync_dir(directory)


def fsync_dir(directory: str) -> None:
    """Make the renames in ``directory`` durable: a rename is on disk only once the
    directory's entry is."""
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def cfg_to_dict(cfg: CfgNode) -> Dict[str, Any]:
    """A CfgNode as nested plain dicts (what ``weights_only`` loading accepts)."""
    return {key: cfg_to_dict(value) if isinstance(value, CfgNode) else value
            for key, value in cfg.items()}
