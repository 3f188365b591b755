"""Checkpoint writes that fail, non-finite state, hostile pointers, another optimizer type,
the fallback of --resume past unreadable checkpoints, and retention (SOLVER.KEEP_CHECKPOINTS)."""
import errno
import logging
import os
import signal

import pytest
import torch
from torch import nn

import pet.engine.checkpoint_io as checkpoint_io
import pet.engine.checkpointer as checkpointer_module
from pet.engine.checkpointer import (
    LAST_CHECKPOINT,
    CheckpointError,
    Checkpointer,
    CheckpointWriteError,
    NonFiniteStateError,
    atomic_write,
    last_checkpoint_path,
)
from pet.engine.distributed import ProcessInfo


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "model.pth"
    path.write_bytes(b"old")

    def write_half_then_fail(f):
        f.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(CheckpointWriteError, match="No space left on device"):
        atomic_write(str(path), write_half_then_fail)
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pth"]


def test_an_interrupted_write_leaves_no_temporary_file(tmp_path):
    def interrupted(f):
        f.write(b"x")
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        atomic_write(str(tmp_path / "a.pth"), interrupted)
    assert not list(tmp_path.iterdir())


def test_a_dead_workers_report_during_a_write_is_not_called_a_failed_write(tmp_path):
    # torch's SIGCHLD handler raises RuntimeError("DataLoader worker ... is killed") wherever the
    # training process is: during a checkpoint write it must stay that error (train_net turns it
    # into its one line), not "cannot write model.pth (write failed: DataLoader worker ...)".
    def worker_died(signum, frame):
        raise RuntimeError("DataLoader worker (pid 1) is killed by signal: Killed.")

    def signalled(f):
        f.write(b"x")
        os.kill(os.getpid(), signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, worker_died)
    try:
        with pytest.raises(RuntimeError, match="^DataLoader worker"):
            atomic_write(str(tmp_path / "a.pth"), signalled)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_never_saved(tmp_path, value):
    model = nn.Linear(2, 2)
    checkpointer = Checkpointer(str(tmp_path), model=model)
    checkpointer.save("model_0000001", 1)
    with torch.no_grad():
        model.weight[0, 0] = value
    with pytest.raises(NonFiniteStateError, match=r"model.weight holds NaN or inf.*model_0000001.pth"):
        checkpointer.save("model_0000002", 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_0000001.pth"]


@pytest.mark.parametrize("pointer", ["../x.pth", "/etc/passwd", "sub/x.pth", "..", "x.txt"])
def test_the_pointer_is_confined_to_the_directory(tmp_path, pointer):
    (tmp_path / "last_checkpoint").write_text(pointer)
    with pytest.raises(CheckpointError, match="refusing to follow it"):
        last_checkpoint_path(str(tmp_path))


def test_resume_with_another_optimizer_type_names_it(tmp_path):
    model = nn.Linear(2, 2)
    sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    Checkpointer(str(tmp_path), model=model, optimizer=sgd).save("model_0000001", 1)
    adamw = torch.optim.AdamW(model.parameters(), lr=0.1)
    checkpointer = Checkpointer(str(tmp_path), resume=True, model=model, optimizer=adamw)
    with pytest.raises(CheckpointError, match="another optimizer type.*AdamW"):
        checkpointer.load()


# ---------------------------------------------------------------------------------------------
# Resume falls back past an unreadable checkpoint; retention (SOLVER.KEEP_CHECKPOINTS)
# ---------------------------------------------------------------------------------------------
def write_run(save_dir, iterations, keep=0, process=ProcessInfo()):
    """Checkpoints of a small SGD run after each of ``iterations``; returns the model."""
    model = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    checkpointer = Checkpointer(str(save_dir), process=process, keep_checkpoints=keep,
                                model=model, optimizer=optimizer)
    for iteration in iterations:
        with torch.no_grad():
            model.weight.add_(1.0)
        checkpointer.save(f"model_{iteration:07d}", iteration)
    return model


DAMAGES = {
    "truncated": lambda path: path.write_bytes(path.read_bytes()[:300]),
    "empty": lambda path: path.write_bytes(b""),
    "garbage": lambda path: path.write_bytes(b"\x80\x04not a checkpoint" * 50),
    "weights_only": lambda path: torch.save(torch.load(path, weights_only=True)["model"], path),
    "no_iteration": lambda path: torch.save(
        {k: v for k, v in torch.load(path, weights_only=True).items() if k != "iteration"}, path),
    "missing": lambda path: path.unlink(),
}


@pytest.mark.parametrize("damage, reason", [
    ("truncated", "cannot be loaded (damaged or truncated"),
    ("empty", "cannot be loaded (empty file)"),
    ("garbage", "cannot be loaded (not a torch checkpoint file)"),
    ("weights_only", "not a Pet checkpoint (no 'model' key)"),
    ("no_iteration", "has no 'iteration' entry"),
    ("missing", "no such file"),
])
def test_resume_falls_back_past_an_unreadable_newest_checkpoint(tmp_path, caplog, damage, reason):
    write_run(tmp_path, [2, 4, 6])
    DAMAGES[damage](tmp_path / "model_0000006.pth")
    with caplog.at_level(logging.WARNING, logger="pet.engine.checkpointer"):
        checkpointer = Checkpointer(str(tmp_path), resume=True, model=nn.Linear(2, 2))
    assert checkpointer.source == str(tmp_path / "model_0000004.pth") and checkpointer.start_iter == 4
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"skipped model_0000006.pth: {reason}" in warnings[0]
    assert "resuming from" in warnings[0] and "model_0000004.pth (iteration 4)" in warnings[0]
    checkpointer.load()


def test_resume_walks_back_to_the_newest_readable_one_and_lists_what_it_skipped(tmp_path, caplog):
    write_run(tmp_path, [2, 4, 10, 12])  # the number decides, not the name's order
    DAMAGES["garbage"](tmp_path / "model_0000012.pth")
    DAMAGES["empty"](tmp_path / "model_0000010.pth")
    with caplog.at_level(logging.WARNING, logger="pet.engine.checkpointer"):
        assert Checkpointer(str(tmp_path), resume=True).start_iter == 4
    assert "skipped model_0000012.pth: cannot be loaded (not a torch checkpoint file); " \
           "model_0000010.pth: cannot be loaded (empty file); resuming from" in caplog.text


def test_a_missing_pointer_falls_back_to_the_checkpoint_written_before_it(tmp_path, caplog):
    # A kill between the first checkpoint and its pointer: without a fallback the run could
    # neither resume (no pointer) nor start again (the directory holds a checkpoint).
    write_run(tmp_path, [2])
    (tmp_path / LAST_CHECKPOINT).unlink()
    with caplog.at_level(logging.WARNING, logger="pet.engine.checkpointer"):
        assert Checkpointer(str(tmp_path), resume=True).start_iter == 2
    assert "skipped last_checkpoint: missing or empty" in caplog.text


def test_the_fallback_follows_no_symbolic_link(tmp_path, caplog):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "run").mkdir()
    write_run(tmp_path / "elsewhere", [8])
    write_run(tmp_path / "run", [2, 4])
    DAMAGES["garbage"](tmp_path / "run" / "model_0000004.pth")
    (tmp_path / "run" / "model_0000009.pth").symlink_to(tmp_path / "elsewhere" / "model_0000008.pth")
    with caplog.at_level(logging.WARNING, logger="pet.engine.checkpointer"):
        assert Checkpointer(str(tmp_path / "run"), resume=True).start_iter == 2
    assert "model_0000009.pth: a symbolic link, not followed" in caplog.text


def test_no_readable_checkpoint_is_one_line_listing_every_file_tried(tmp_path):
    write_run(tmp_path, [2, 4])
    (tmp_path / "model_final.pth").write_bytes(b"")
    (tmp_path / LAST_CHECKPOINT).write_text("model_final.pth")
    DAMAGES["truncated"](tmp_path / "model_0000004.pth")
    DAMAGES["weights_only"](tmp_path / "model_0000002.pth")
    with pytest.raises(CheckpointError) as refused:
        Checkpointer(str(tmp_path), resume=True)
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"--resume: no readable checkpoint in {tmp_path}")
    assert ("tried model_final.pth: cannot be loaded (empty file); model_0000004.pth: cannot be "
            "loaded (damaged or truncated: ") in message
    assert "model_0000002.pth: not a Pet checkpoint" in message


def test_an_incompatible_newest_checkpoint_is_refused_not_skipped(tmp_path):
    write_run(tmp_path, [2, 4])  # SGD checkpoints; this run uses AdamW
    model = nn.Linear(2, 2)
    checkpointer = Checkpointer(str(tmp_path), resume=True, model=model,
                                optimizer=torch.optim.AdamW(model.parameters()))
    with pytest.raises(CheckpointError, match="model_0000004.pth was saved by another optimizer type"):
        checkpointer.load()


def fake_gather(outcomes):
    """all_gather_objects of a 2-process job whose other process hands in ``outcomes`` (one
    per call, in order; None: the same as this process)."""
    pending = list(outcomes)

    def gather(obj):
        other = pending.pop(0)
        return [obj, obj if other is None else other]
    return gather


def test_every_process_resumes_from_the_same_checkpoint_or_none_does(tmp_path, monkeypatch):
    write_run(tmp_path, [2, 4])
    chosen = str(tmp_path / "model_0000004.pth")
    monkeypatch.setattr(checkpointer_module, "all_gather_objects",
                        fake_gather([(None, str(tmp_path / "model_0000002.pth"))]))
    with pytest.raises(CheckpointError, match="the processes of this job chose different checkpoints"):
        Checkpointer(str(tmp_path), resume=True)
    # Another process that finds nothing readable refuses for the whole job, saying that it
    # sees other files than this one (a node whose OUTPUT_DIR is not the shared one).
    monkeypatch.setattr(checkpointer_module, "all_gather_objects",
                        fake_gather([("--resume: no readable checkpoint in x", None)]))
    with pytest.raises(CheckpointError, match=r"^--resume: process 1 of this job cannot resume \(--resume: no "
                       r"readable checkpoint in x\) while process 0 resumes from .*model_0000004.pth; "
                       r"OUTPUT_DIR must be on a file system every node sees$"):
        Checkpointer(str(tmp_path), resume=True)
    monkeypatch.setattr(checkpointer_module, "all_gather_objects", fake_gather([None]))
    assert Checkpointer(str(tmp_path), resume=True).source == chosen


def test_a_failed_write_of_rank_0_fails_every_process_alike(tmp_path, monkeypatch):
    error = f"cannot write {tmp_path}/model_0000002.pth (No space left on device); the previous file is kept"
    # Rank 1 writes nothing; it learns rank 0's failure from the gather after the write.
    monkeypatch.setattr(checkpoint_io, "all_gather_objects",  # write_on_main's gather
                        lambda obj: [error if obj is None else obj, obj])
    checkpointer = Checkpointer(str(tmp_path), process=ProcessInfo(rank=1, world_size=2),
                                model=nn.Linear(2, 2))
    with pytest.raises(CheckpointWriteError) as failed:
        checkpointer.save("model_0000002", 2)
    assert str(failed.value) == error
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("keep, kept", [(0, [1, 2, 3, 4, 5]), (1, [5]), (2, [4, 5]), (9, [1, 2, 3, 4, 5])])
def test_retention_keeps_the_newest_periodic_checkpoints(tmp_path, keep, kept):
    (tmp_path / "model_best.pth").write_bytes(b"best")
    write_run(tmp_path, [1, 2, 3, 4, 5], keep=keep)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([LAST_CHECKPOINT, "model_best.pth"] + [f"model_{i:07d}.pth" for i in kept])
    assert (tmp_path / LAST_CHECKPOINT).read_text() == "model_0000005.pth"


def test_retention_never_deletes_the_final_model_and_counts_by_iteration(tmp_path):
    model = write_run(tmp_path, [9999998, 9999999, 10000000], keep=2)  # 8 digits sort before 7
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["model_10000000.pth", "model_9999999.pth"]
    checkpointer = Checkpointer(str(tmp_path), keep_checkpoints=1, model=model)
    checkpointer.save("model_final", 10000001)
    checkpointer.save("model_10000002", 10000002)
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["model_10000002.pth", "model_final.pth"]


def test_retention_and_fallback_together(tmp_path, caplog):
    write_run(tmp_path, [2, 4, 6, 8], keep=2)
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["model_0000006.pth", "model_0000008.pth"]
    DAMAGES["truncated"](tmp_path / "model_0000008.pth")
    with caplog.at_level(logging.WARNING, logger="pet.engine.checkpointer"):
        assert Checkpointer(str(tmp_path), resume=True).start_iter == 6
    assert "skipped model_0000008.pth" in caplog.text


def test_only_rank_0_writes_and_deletes(tmp_path):
    (tmp_path / "model_0000001.pth").write_bytes(b"old")
    write_run(tmp_path, [2, 3], keep=1, process=ProcessInfo(rank=1, world_size=2))
    assert [p.name for p in tmp_path.iterdir()] == ["model_0000001.pth"]


def test_a_checkpoint_that_cannot_be_deleted_is_kept_and_the_run_goes_on(tmp_path, caplog):
    (tmp_path / "model_0000001.pth").mkdir()  # os.remove fails on it
    with caplog.at_level(logging.WARNING, logger="pet.engine.checkpointer"):
        write_run(tmp_path, [2, 3], keep=1)
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["model_0000001.pth", "model_0000003.pth"]
    assert "SOLVER.KEEP_CHECKPOINTS: cannot delete" in caplog.text and "it is kept" in caplog.text
