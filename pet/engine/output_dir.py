"""The run directory (OUTPUT_DIR): refusing an unusable path or another run's directory up
front, one writer at a time (a lock), and preparing it for writing."""
import errno
import fcntl
import logging
import os
import shutil
from typing import Any, Dict, List

from yacs.config import CfgNode

from pet.lib.config.errors import ConfigError
from pet.lib.config.loader import flatten
from pet.engine.sharded_checkpoint import remove_tree
from pet.engine.checkpointer import (
    TMP_SUFFIX,
    atomic_write,
    cfg_to_dict,
    find_checkpoints,
)
from pet.engine.logger import attach_log_file

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
LOG_FILE = "log.txt"


# Open directory descriptors that hold the single-writer locks of this process (released at
# exit, however the process ends: a killed run leaves no stale lock).
_LOCKS = {}


def _release_in_child() -> None:
    """A forked child (a DataLoader worker) closes its copies of the lock descriptors: the lock
    stays this process's, and dies with it even while an orphaned worker lives on (a run killed
    with SIGKILL can be resumed at once)."""
    for fd in _LOCKS.values():
        os.close(fd)
    _LOCKS.clear()


os.register_at_fork(after_in_child=_release_in_child)


def check_output_dir(output_dir: str, resume: bool) -> None:
    """Refuse a path that cannot become a writable directory (a file or device, a path below a
    file, no permission, a name too long), and a new run over an old run's checkpoints
    (``--resume`` with nothing to resume is refused by ``Checkpointer``, also before anything
    is written).

    Raises ConfigError (exit status 2 in the tools); writes nothing.
    """
    check_output_path(output_dir)
    existing = find_checkpoints(output_dir)
    if not resume and existing:
        shown = ", ".join(existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
        raise ConfigError(
            f"OUTPUT_DIR {output_dir} already holds checkpoints ({shown}); add --resume to continue "
            f"that run, or set another OUTPUT_DIR"
        )


def check_output_path(output_dir: str) -> None:
    """ConfigError unless ``output_dir`` is, or can be created as, a writable directory."""
    key = f"OUTPUT_DIR {output_dir}"
    path = os.path.abspath(output_dir)
    if "\0" in output_dir or len(os.fsencode(path)) >= 4096:
        raise ConfigError(f"{key}: not a usable path (a NUL byte, or longer than 4095 bytes)")
    too_long = [part for part in path.split(os.sep) if len(os.fsencode(part)) > 255]
    if too_long:
        raise ConfigError(f"{key}: the name {too_long[0][:40]}... is longer than 255 bytes")
    existing = path
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        what = "is not a directory" if existing == path else f"lies below {existing}, which is not a directory"
        raise ConfigError(f"{key}: {what}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{key}: no permission to write in {existing}")


def check_free_space(output_dir: str, needed_bytes: int) -> None:
    """ConfigError when the file system of ``output_dir`` has less than ``needed_bytes`` free
    (a run that cannot write one checkpoint should not start)."""
    existing = os.path.abspath(output_dir)
    while not os.path.isdir(existing):
        existing = os.path.dirname(existing)
    free = shutil.disk_usage(existing).free
    if free < needed_bytes:
        raise ConfigError(f"OUTPUT_DIR {output_dir}: {free / 2**20:.1f} MiB free, a checkpoint of "
                          f"this run needs about {needed_bytes / 2**20:.1f} MiB; free space or set "
                          f"another OUTPUT_DIR")


def lock_output_dir(output_dir: str) -> None:
    """Create ``output_dir`` and take its single-writer lock for the rest of this process
    (an ``flock`` on the directory itself: no lock file, and the lock dies with the process).

    Raises ConfigError when another process holds it, or the directory cannot be created.
    """
    try:
        os.makedirs(output_dir, exist_ok=True)
        fd = os.open(output_dir, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        raise ConfigError(f"OUTPUT_DIR {output_dir}: cannot be created ({e.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise ConfigError(f"OUTPUT_DIR {output_dir}: another run is writing to it (it holds "
                              f"the directory's lock); wait for it or set another OUTPUT_DIR") from None
        raise ConfigError(f"OUTPUT_DIR {output_dir}: cannot be locked ({e.strerror})") from None
    _LOCKS[os.path.abspath(output_dir)] = fd


def remove_leftovers(output_dir: str) -> List[str]:
    """Delete the temporary files (``.NAME.tmp``) that an interrupted write left; return their
    names. Call it holding the lock: no other writer can be using them."""
    removed = []
    for name in sorted(os.listdir(output_dir)):
        if name.startswith(".") and name.endswith(TMP_SUFFIX):
            remove_tree(os.path.join(output_dir, name))  # a file, or a sharded checkpoint's directory
            removed.append(name)
    return removed


def prepare_output_dir(cfg: CfgNode, resume: bool) -> None:
    """Create and lock OUTPUT_DIR, remove an interrupted write's temporary files, write the
    merged config to ``config.yaml`` and start ``log.txt`` (appended to when resuming). The
    first write of a run: call it after every check.

    Raises ConfigError when another run holds the directory or it cannot be written.
    """
    lock_output_dir(cfg.OUTPUT_DIR)
    path = cfg.OUTPUT_DIR
    try:
        removed = remove_leftovers(cfg.OUTPUT_DIR)
        path = os.path.join(cfg.OUTPUT_DIR, CONFIG_FILE)
        atomic_write(path, lambda f: f.write(cfg.dump().encode()))
        path = os.path.join(cfg.OUTPUT_DIR, LOG_FILE)
        attach_log_file(path, append=resume)
    except OSError as e:  # a refusal before training: every process of a job ends alike (exit 2)
        reason = str(e) if e.strerror is None else f"cannot write {path} ({e.strerror})"
        raise ConfigError(f"OUTPUT_DIR {cfg.OUTPUT_DIR}: {reason}") from None
    if removed:
        logger.info("Removed %d temporary file(s) of an interrupted write: %s", len(removed),
                    ", ".join(removed))


def log_config_changes(saved_config: Dict[str, Any], cfg: CfgNode) -> None:
    """Log every key whose value differs between the checkpoint's config and this run's
    (this run's values are the ones used)."""
    saved = dict(flatten(saved_config))
    for key, value in flatten(cfg_to_dict(cfg)):
        if key in saved and saved[key] != value:
            logger.info("resume: %s was %r in the checkpoint's run, is %r now (used)",
                        key, saved[key], value)
