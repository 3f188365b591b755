"""The checkpoint files of a run directory: the ``last_checkpoint`` pointer, reading one
checkpoint, choosing the one ``--resume`` starts from, and removing old periodic checkpoints
(SOLVER.KEEP_CHECKPOINTS).

Resume falls back past a checkpoint that cannot be read (a truncated, empty or foreign file, a
file without the ``model`` or ``iteration`` entry, a pointer to a missing file) to the newest
readable periodic checkpoint, and says so. A readable checkpoint that does not fit the config
(another model or optimizer) is refused by the Checkpointer, never skipped: an older file of the
same run would not fit either.
"""
import logging
import os
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch

from pet.engine.checkpoint_state import CheckpointError
from pet.engine.sharded_checkpoint import (
    SHARDED_SUFFIX,
    is_sharded_checkpoint,
    read_sharded_checkpoint,
    remove_tree,
)
from pet.lib.config.errors import first_line

logger = logging.getLogger("pet.engine.checkpointer")

LAST_CHECKPOINT = "last_checkpoint"
# The checkpoints written every SNAPSHOT_ITERS and on a stop signal: model_<iterations>.pth, or
# the directory model_<iterations>.dcp of a sharded one (pet.engine.sharded_checkpoint).
# model_final.pth and model_best.pth do not match: retention never removes them.
PERIODIC_NAME = re.compile(r"^model_(\d+)\.(?:pth|dcp)$")


def periodic_name(iterations: int) -> str:
    """The name (without .pth) of the checkpoint after ``iterations`` iterations: what
    PERIODIC_NAME matches, zero-padded so the names sort by iteration."""
    return f"model_{iterations:07d}"


class UnreadableCheckpoint(CheckpointError):
    """A checkpoint file that cannot be read as a Pet checkpoint; ``reason`` says why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"checkpoint {path}: {reason}")
        self.path = path
        self.reason = reason


def last_checkpoint_path(save_dir: str) -> Optional[str]:
    """The file named by ``save_dir/last_checkpoint``, or None when there is none.

    Raises CheckpointError when the pointer cannot be read or names anything but a ``.pth``
    file inside ``save_dir`` (a path, ``..``, a symlink)."""
    pointer = os.path.join(save_dir, LAST_CHECKPOINT)
    if not os.path.isfile(pointer):
        return None
    try:
        with open(pointer, "rb") as f:
            name = f.read(256).decode("utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{pointer}: cannot be read ({first_line(e)})") from None
    if not name:
        return None
    # The pointer names a file inside save_dir, nothing else: a planted or edited pointer must
    # not make --resume load a file from elsewhere.
    if (name != os.path.basename(name) or name in (".", "..") or not name.endswith((".pth", SHARDED_SUFFIX))
            or os.path.islink(os.path.join(save_dir, name))):
        raise CheckpointError(f"{pointer} names {name!r}, not a checkpoint file inside "
                              f"{save_dir}; refusing to follow it")
    return os.path.join(save_dir, name)


def _load_failure(path: str, error: BaseException) -> str:
    """Why torch could not load ``path``, in the user's words (torch's messages for a damaged
    file are long and mostly about weights_only)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        return f"cannot be read ({e.strerror or first_line(e)})"
    if not head:
        return "cannot be loaded (empty file)"
    if head != b"PK\x03\x04":  # torch.save writes a zip archive
        return "cannot be loaded (not a torch checkpoint file)"
    return f"cannot be loaded (damaged or truncated: {first_line(error).split('. ')[0]})"


def read_checkpoint(path: str, resume: bool = False) -> Dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``.

    Raises UnreadableCheckpoint (a CheckpointError) when the file is missing, cannot be loaded,
    or has no ``model`` entry, or with ``resume`` no integer ``iteration`` entry. A sharded
    checkpoint (a ``.dcp`` directory) reads as one whose model and optimizer tensors are
    placeholders (``read_sharded_checkpoint``)."""
    if is_sharded_checkpoint(path):
        if not os.path.isdir(path):
            raise UnreadableCheckpoint(path, "no such directory")
        try:
            checkpoint = read_sharded_checkpoint(path)
        except Exception as e:  # noqa: BLE001  (a missing part, a damaged index or state file)
            raise UnreadableCheckpoint(path, f"cannot be loaded ({first_line(e)})") from None
    elif not os.path.isfile(path):
        raise UnreadableCheckpoint(path, "no such file")
    else:
        try:
            with warnings.catch_warnings():  # torch warns about the pickle protocol of some garbage
                warnings.simplefilter("ignore", UserWarning)
                checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises several types for a truncated or foreign file
            raise UnreadableCheckpoint(path, _load_failure(path, e)) from None
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise UnreadableCheckpoint(path, "not a Pet checkpoint (no 'model' key)")
    if resume and not isinstance(checkpoint.get("iteration"), int):
        raise UnreadableCheckpoint(path, "has no 'iteration' entry, which this run needs to resume "
                                         "(written by another program or an older Pet)")
    return checkpoint


# The final checkpoint's file (train_net's FINAL_NAME), and a sharded run's directory.
FINAL_FILE = "model_final.pth"
FINAL_FILES = (FINAL_FILE, "model_final" + SHARDED_SUFFIX)


def periodic_iterations(path: str) -> int:
    """The iterations in a periodic checkpoint's name (model_<iterations>.pth)."""
    return int(PERIODIC_NAME.match(os.path.basename(path)).group(1))


def periodic_checkpoints(save_dir: str) -> List[str]:
    """The names of the periodic checkpoints (``model_<iterations>.pth``) in ``save_dir``,
    newest (most iterations) first; none when the directory cannot be listed."""
    try:
        names = os.listdir(save_dir)
    except OSError:
        return []
    found = [(int(match.group(1)), name) for name in names
             for match in [PERIODIC_NAME.match(name)] if match]
    return [name for _, name in sorted(found, reverse=True)]


@dataclass
class ResumeChoice:
    """The checkpoint ``--resume`` starts from, and the files passed over to reach it
    (``skipped``: one "name: reason" text each)."""

    path: str
    checkpoint: Dict[str, Any]
    skipped: List[str] = field(default_factory=list)
    # The periodic checkpoints passed over because they could not be read (damaged files).
    damaged: List[str] = field(default_factory=list)


def choose_resume_checkpoint(save_dir: str) -> ResumeChoice:
    """The checkpoint to resume from: the one ``last_checkpoint`` names, or, when that cannot
    be read (or the pointer is missing), the newest readable periodic checkpoint or
    model_final.pth (placed by its iterations among them).

    The choice depends on the directory's files alone, so every process of a job that reads
    the same directory makes the same one. Raises CheckpointError when the pointer is hostile
    or unreadable, or no checkpoint can be read (listing every file tried).
    """
    pointer = os.path.join(save_dir, LAST_CHECKPOINT)
    named = last_checkpoint_path(save_dir)
    candidates = [os.path.join(save_dir, name) for name in periodic_checkpoints(save_dir)]
    finals = [os.path.join(save_dir, name) for name in FINAL_FILES]
    finals = [final for final in finals if os.path.exists(final) and not os.path.islink(final) and final != named]
    if named is None and not candidates and not finals:
        raise CheckpointError(f"--resume: {pointer} does not exist, nothing to resume; drop "
                              f"--resume to start a new run")
    skipped = [] if named is not None else [f"{LAST_CHECKPOINT}: missing or empty"]
    damaged: List[str] = []
    readable = {}
    for final in finals:  # a kill between model_final and its pointer: it is a candidate too
        try:
            readable[final] = read_checkpoint(final, resume=True)
        except UnreadableCheckpoint as e:
            skipped.append(f"{os.path.basename(final)}: {e.reason}")
        else:  # in its place by iterations among the periodic ones
            iterations = int(readable[final]["iteration"])
            candidates.insert(sum(1 for p in candidates if p not in finals and periodic_iterations(p) > iterations),
                              final)
    for path in ([named] if named else []) + [p for p in candidates if p != named]:
        if os.path.islink(path):  # as for the pointer: nothing outside save_dir is loaded
            skipped.append(f"{os.path.basename(path)}: a symbolic link, not followed")
            continue
        try:
            return ResumeChoice(path, readable.get(path) or read_checkpoint(path, resume=True), skipped, damaged)
        except UnreadableCheckpoint as e:
            skipped.append(f"{os.path.basename(path)}: {e.reason}")
            if PERIODIC_NAME.match(os.path.basename(path)):
                damaged.append(path)
    raise CheckpointError(f"--resume: no readable checkpoint in {save_dir}; tried "
                          f"{'; '.join(skipped)}; start a new run in another OUTPUT_DIR")


def remove_old_checkpoints(save_dir: str, keep: int, newest: str) -> List[str]:
    """Delete the periodic checkpoints of ``save_dir`` but ``newest`` (the file just written,
    which ``last_checkpoint`` names) and the ``keep - 1`` others with the most iterations;
    return the names deleted. model_final.pth and model_best.pth are never touched. A file that
    cannot be deleted is logged and kept: retention never fails a run."""
    others = [name for name in periodic_checkpoints(save_dir) if name != newest]
    removed = []
    for name in others[max(keep - 1, 0):]:
        try:
            remove_tree(os.path.join(save_dir, name))
            removed.append(name)
        except FileNotFoundError:
            pass
        except OSError as e:
            logger.warning("warning: SOLVER.KEEP_CHECKPOINTS: cannot delete %s (%s); it is kept",
                           os.path.join(save_dir, name), e.strerror or first_line(e))
    if removed:
        logger.debug("Deleted %s (SOLVER.KEEP_CHECKPOINTS %d)", ", ".join(removed), keep)
    return removed
