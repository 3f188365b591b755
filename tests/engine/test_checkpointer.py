"""Tests of pet/lib/utils/checkpointer.py: atomic files, weights_only loading, exact state
round trips, config-over-checkpoint hyper-parameters and clear layout errors."""
import logging
import os
import random

import numpy as np
import pytest
import torch
from torch import nn

from pet.lib.config import get_cfg
from pet.engine.checkpointer import (
    LAST_CHECKPOINT,
    CheckpointError,
    Checkpointer,
    atomic_write,
    last_checkpoint_path,
    rng_state,
    set_rng_state,
)
from pet.lib.utils.lr_scheduler import LearningRateScheduler
from pet.lib.utils.optimizer import Optimizer
from pet.models import build_model


def small_cfg(model_type="cnn", optimizer_type="SGD"):
    cfg = get_cfg()
    cfg.MODEL.TYPE = model_type
    cfg.MODEL.CNN.CHANNELS = (4, 8, 8)
    cfg.MODEL.CNN.HIDDEN_DIM = 16
    cfg.MODEL.TRANSFORMER.EMBED_DIM = 16
    cfg.SOLVER.OPTIMIZER.TYPE = optimizer_type
    return cfg


def build_run(cfg, seed=0):
    torch.manual_seed(seed)
    model = build_model(cfg)
    optimizer = Optimizer(model, cfg.SOLVER.OPTIMIZER).build()
    scheduler = LearningRateScheduler(optimizer, cfg.SOLVER)
    return model, optimizer, scheduler


def train_steps(model, optimizer, scheduler, steps):
    for _ in range(steps):
        levels = torch.randint(0, 17, (8, 1, 8, 8))
        loss = nn.functional.cross_entropy(model(levels), torch.randint(0, 10, (8,)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path):
    path = tmp_path / "file.bin"
    path.write_bytes(b"old")

    def crash(f):
        f.write(b"half of the new")
        raise KeyboardInterrupt  # as a kill in the middle of torch.save

    with pytest.raises(KeyboardInterrupt):
        atomic_write(str(path), crash)
    assert path.read_bytes() == b"old"
    atomic_write(str(path), lambda f: f.write(b"new"))
    assert path.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["file.bin"]  # the temporary file was renamed over it


def test_save_writes_plain_state_loadable_with_weights_only(tmp_path):
    cfg = small_cfg()
    model, optimizer, scheduler = build_run(cfg)
    train_steps(model, optimizer, scheduler, 3)
    path = Checkpointer(str(tmp_path)).save("model_0000003", model, optimizer, scheduler, 3, config=cfg,
                                            data={"epoch": 0, "batch": 3})
    assert last_checkpoint_path(str(tmp_path)) == path
    assert (tmp_path / LAST_CHECKPOINT).read_text() == "model_0000003.pth"
    checkpoint = torch.load(path, weights_only=True)
    assert {"model", "optimizer", "scheduler", "iteration", "rng", "config", "data"} <= set(checkpoint)
    assert checkpoint["iteration"] == 3 and checkpoint["scheduler"]["iteration"] == 3
    assert checkpoint["config"]["SOLVER"]["OPTIMIZER"]["TYPE"] == "SGD"  # a plain dict, not a CfgNode
    assert type(checkpoint["config"]) is dict


@pytest.mark.parametrize("model_type, optimizer_type", [("cnn", "SGD"), ("transformer", "ADAMW")])
def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path, model_type, optimizer_type):
    cfg = small_cfg(model_type, optimizer_type)
    model, optimizer, scheduler = build_run(cfg)
    train_steps(model, optimizer, scheduler, 5)
    Checkpointer(str(tmp_path)).save("model_0000005", model, optimizer, scheduler, 5)
    train_steps(model, optimizer, scheduler, 5)

    resumed = build_run(cfg, seed=123)  # another init: everything must come from the checkpoint
    checkpointer = Checkpointer(str(tmp_path), resume=True)
    assert checkpointer.resume(*resumed) == 5
    train_steps(*resumed, 5)
    for (name, expected), actual in zip(model.state_dict().items(), resumed[0].state_dict().values()):
        assert torch.equal(expected, actual), name
    assert resumed[2].iteration == scheduler.iteration == 10
    assert resumed[1].param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]


def test_rng_state_round_trip():
    state = rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(7), np.random.seed(7), random.seed(7)
    set_rng_state(state)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]


def test_load_optimizer_keeps_the_config_hyperparameters_and_logs_changes(tmp_path, caplog):
    cfg = small_cfg()
    model, optimizer, scheduler = build_run(cfg)
    train_steps(model, optimizer, scheduler, 2)
    Checkpointer(str(tmp_path)).save("model_0000002", model, optimizer, scheduler, 2)

    cfg.SOLVER.OPTIMIZER.BASE_LR = 0.01
    cfg.SOLVER.OPTIMIZER.MOMENTUM = 0.5
    cfg.SOLVER.OPTIMIZER.WEIGHT_DECAY = 0.001
    model, optimizer, _ = build_run(cfg)
    checkpointer = Checkpointer(str(tmp_path), resume=True)
    with caplog.at_level(logging.INFO, logger="pet"):
        checkpointer.load_model(model)
        optimizer = checkpointer.load_optimizer(optimizer)
    assert {g["momentum"] for g in optimizer.param_groups} == {0.5}
    assert {g["initial_lr"] for g in optimizer.param_groups} == {0.01}
    assert optimizer.param_groups[0]["weight_decay"] == 0.001
    assert "param group 0 weight_decay: 0.0001 in the checkpoint, 0.001 from the config (used)" in caplog.text
    assert "param group 0 initial_lr: 0.1 in the checkpoint, 0.01 from the config (used)" in caplog.text
    assert "momentum: 0.9 in the checkpoint, 0.5 from the config (used)" in caplog.text
    # The progress does come from the checkpoint.
    assert all("momentum_buffer" in optimizer.state[p] for g in optimizer.param_groups for p in g["params"])


def test_a_checkpoint_of_another_model_is_refused_with_the_first_difference(tmp_path):
    model, optimizer, scheduler = build_run(small_cfg("cnn"))
    Checkpointer(str(tmp_path)).save("model_final", model, optimizer, scheduler, 0)
    other = build_model(small_cfg("transformer"))
    with pytest.raises(CheckpointError, match=r"different model \(missing backbone\.cls_token and \d+ more; "
                                              r"unexpected backbone\.conv1\.conv\.weight and \d+ more\)"):
        Checkpointer(str(tmp_path), resume=True).load_model(other)


def test_a_checkpoint_with_another_param_group_layout_is_refused(tmp_path):
    cfg = small_cfg()
    model, optimizer, scheduler = build_run(cfg)
    Checkpointer(str(tmp_path)).save("model_final", model, optimizer, scheduler, 0)
    # Norm parameters now decay like the weights: they move into the weights' group.
    cfg.SOLVER.OPTIMIZER.WEIGHT_DECAY_NORM = cfg.SOLVER.OPTIMIZER.WEIGHT_DECAY
    model, optimizer, _ = build_run(cfg)
    with pytest.raises(CheckpointError, match="optimizer param group 0 differs at parameter 1: "
                                              "backbone.conv2.conv.weight in the checkpoint, "
                                              "backbone.conv1.bn.weight here"):
        Checkpointer(str(tmp_path), resume=True).load_optimizer(optimizer)


def test_resume_without_a_checkpoint_and_unreadable_files_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="last_checkpoint does not exist, nothing to resume"):
        Checkpointer(str(tmp_path), resume=True)
    (tmp_path / "model_0000010.pth").write_bytes(b"not a checkpoint")
    (tmp_path / LAST_CHECKPOINT).write_text("model_0000010.pth")
    with pytest.raises(CheckpointError, match="model_0000010.pth: cannot be loaded"):
        Checkpointer(str(tmp_path), resume=True)
    with pytest.raises(CheckpointError, match="nowhere.pth: no such file"):
        Checkpointer(str(tmp_path), weights=str(tmp_path / "nowhere.pth"))


def test_weights_initialize_the_model_only(tmp_path):
    model, optimizer, scheduler = build_run(small_cfg())
    train_steps(model, optimizer, scheduler, 2)
    path = Checkpointer(str(tmp_path)).save("model_final", model, optimizer, scheduler, 2)
    fresh, fresh_optimizer, fresh_scheduler = build_run(small_cfg(), seed=1)
    checkpointer = Checkpointer(str(tmp_path / "new_run"), weights=path)
    assert checkpointer.resume(fresh, fresh_optimizer, fresh_scheduler) == 0
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    assert not fresh_optimizer.state and fresh_scheduler.iteration == 0
