"""Checkpoint writes that fail, non-finite state, hostile pointers, another optimizer type."""
import errno

import pytest
import torch
from torch import nn

from pet.engine.checkpointer import (
    CheckpointError,
    Checkpointer,
    CheckpointWriteError,
    NonFiniteStateError,
    atomic_write,
    last_checkpoint_path,
)


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
