"""Tests of pet/engine/checkpointer.py: atomic files, weights_only loading, exact state round
trips, progress stored once, config-over-checkpoint hyper-parameters and clear layout and
missing-entry errors."""
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
from pet.lib.utils.optim_wrapper import OptimWrapper
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


class Run:
    """A model, its optimizer, step seam and scheduler, built as train_net builds them."""

    def __init__(self, cfg, seed=0, start_iter=0):
        torch.manual_seed(seed)
        self.model = build_model(cfg)
        self.optimizer = Optimizer(self.model, cfg.SOLVER.OPTIMIZER).build()
        self.optim_wrapper = OptimWrapper(self.optimizer)
        self.scheduler = LearningRateScheduler(self.optimizer, cfg.SOLVER, start_iter=start_iter)

    def checkpointables(self):
        return dict(model=self.model, optimizer=self.optimizer, optim_wrapper=self.optim_wrapper)

    def checkpointer(self, save_dir, **kwargs):
        return Checkpointer(str(save_dir), **kwargs, **self.checkpointables())

    def train_steps(self, steps):
        for _ in range(steps):
            levels = torch.randint(0, 17, (8, 1, 8, 8))
            loss = nn.functional.cross_entropy(self.model(levels), torch.randint(0, 10, (8,)))
            self.optim_wrapper.update_params(loss)
            self.scheduler.step()


def resumed_run(cfg, save_dir, seed=123):
    """A run resumed from ``save_dir`` as train_net resumes: another init (everything must come
    from the checkpoint), the scheduler built at the checkpoint's iteration, then ``load``."""
    checkpointer = Checkpointer(str(save_dir), resume=True)
    run = Run(cfg, seed=seed, start_iter=checkpointer.start_iter)
    for name, checkpointable in run.checkpointables().items():
        checkpointer.add_checkpointable(name, checkpointable)
    return run, checkpointer


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


def test_save_writes_each_state_once_loadable_with_weights_only(tmp_path):
    cfg = small_cfg()
    run = Run(cfg)
    run.train_steps(3)
    path = run.checkpointer(tmp_path).save("model_0000003", 3, config=cfg)
    assert last_checkpoint_path(str(tmp_path)) == path
    assert (tmp_path / LAST_CHECKPOINT).read_text() == "model_0000003.pth"
    checkpoint = torch.load(path, weights_only=True)
    # The progress is the iteration, stored once: no scheduler state, no data position.
    assert set(checkpoint) == {"model", "optimizer", "optim_wrapper", "iteration", "rng", "config"}
    assert checkpoint["iteration"] == 3
    assert checkpoint["optim_wrapper"] == run.optim_wrapper.state_dict()  # the wrapper's own counters
    assert checkpoint["optim_wrapper"]["micro_batches"] == 0
    assert checkpoint["config"]["SOLVER"]["OPTIMIZER"]["TYPE"] == "SGD"  # a plain dict, not a CfgNode
    assert type(checkpoint["config"]) is dict


@pytest.mark.parametrize("model_type, optimizer_type", [("cnn", "SGD"), ("transformer", "ADAMW")])
def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path, model_type, optimizer_type):
    cfg = small_cfg(model_type, optimizer_type)
    run = Run(cfg)
    run.train_steps(5)
    run.checkpointer(tmp_path).save("model_0000005", 5)
    run.train_steps(5)

    resumed, checkpointer = resumed_run(cfg, tmp_path)
    assert checkpointer.load() == 5
    checkpointer.load_rng()  # the batches are drawn from the global RNG
    resumed.train_steps(5)
    for (name, expected), actual in zip(run.model.state_dict().items(),
                                        resumed.model.state_dict().values()):
        assert torch.equal(expected, actual), name
    assert resumed.scheduler.iteration == run.scheduler.iteration == 10
    assert resumed.optimizer.param_groups[0]["lr"] == run.optimizer.param_groups[0]["lr"]


def test_rng_state_round_trip():
    state = rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(7), np.random.seed(7), random.seed(7)
    set_rng_state(state)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]


def test_resume_keeps_the_config_hyperparameters_and_logs_changes(tmp_path, caplog):
    cfg = small_cfg()
    run = Run(cfg)
    run.train_steps(2)
    run.checkpointer(tmp_path).save("model_0000002", 2)

    cfg.SOLVER.OPTIMIZER.BASE_LR = 0.01
    cfg.SOLVER.OPTIMIZER.MOMENTUM = 0.5
    cfg.SOLVER.OPTIMIZER.WEIGHT_DECAY = 0.001
    resumed, checkpointer = resumed_run(cfg, tmp_path)
    with caplog.at_level(logging.INFO, logger="pet"):
        checkpointer.load()
    optimizer = resumed.optimizer
    assert {g["momentum"] for g in optimizer.param_groups} == {0.5}
    assert {g["initial_lr"] for g in optimizer.param_groups} == {0.01}
    assert {g["lr"] for g in optimizer.param_groups} == {0.01 * resumed.scheduler.lr_factor}
    assert optimizer.param_groups[0]["weight_decay"] == 0.001
    assert "param group 0 weight_decay: 0.0001 in the checkpoint, 0.001 from the config (used)" in caplog.text
    assert "param group 0 initial_lr: 0.1 in the checkpoint, 0.01 from the config (used)" in caplog.text
    assert "momentum: 0.9 in the checkpoint, 0.5 from the config (used)" in caplog.text
    assert " lr: " not in caplog.text  # the scheduler sets the lr: a difference is not news
    # The progress does come from the checkpoint.
    for group, saved_group in zip(optimizer.param_groups, run.optimizer.param_groups):
        for p, saved_p in zip(group["params"], saved_group["params"]):
            assert torch.equal(optimizer.state[p]["momentum_buffer"],
                               run.optimizer.state[saved_p]["momentum_buffer"])


def test_a_checkpoint_of_another_model_is_refused_with_the_first_difference(tmp_path):
    Run(small_cfg("cnn")).checkpointer(tmp_path).save("model_final", 0)
    other = build_model(small_cfg("transformer"))
    with pytest.raises(CheckpointError, match=r"different model \(missing backbone\.cls_token and \d+ more; "
                                              r"unexpected backbone\.conv1\.conv\.weight and \d+ more\)"):
        Checkpointer(str(tmp_path), resume=True, model=other).load()


def test_a_checkpoint_with_another_param_group_layout_is_refused_before_anything_loads(tmp_path):
    cfg = small_cfg()
    run = Run(cfg)
    run.train_steps(1)
    run.checkpointer(tmp_path).save("model_final", 1)
    # Norm parameters now decay like the weights: they move into the weights' group.
    cfg.SOLVER.OPTIMIZER.WEIGHT_DECAY_NORM = cfg.SOLVER.OPTIMIZER.WEIGHT_DECAY
    resumed, checkpointer = resumed_run(cfg, tmp_path)
    weights = {k: v.clone() for k, v in resumed.model.state_dict().items()}
    with pytest.raises(CheckpointError, match="optimizer param group 0 differs at parameter 1: "
                                              "backbone.conv2.conv.weight in the checkpoint, "
                                              "backbone.conv1.bn.weight here"):
        checkpointer.load()
    assert all(torch.equal(weights[k], v) for k, v in resumed.model.state_dict().items())


@pytest.mark.parametrize("entry", ["optim_wrapper", "iteration", "optimizer"])
def test_a_checkpoint_without_an_entry_the_run_needs_names_it(tmp_path, entry):
    cfg = small_cfg()
    path = Run(cfg).checkpointer(tmp_path).save("model_final", 0)
    checkpoint = torch.load(path, weights_only=True)
    del checkpoint[entry]
    torch.save(checkpoint, path)
    # Without its iteration the file is unreadable for a resume (and nothing else is there).
    fragment = "model_final.pth: has no 'iteration' entry" if entry == "iteration" else \
        f"model_final.pth has no '{entry}' entry"
    with pytest.raises(CheckpointError, match=fragment):
        resumed_run(cfg, tmp_path)[1].load()


def test_an_entry_without_a_value_its_checkpointable_needs_names_both(tmp_path):
    cfg = small_cfg()
    path = Run(cfg).checkpointer(tmp_path).save("model_final", 0)
    checkpoint = torch.load(path, weights_only=True)
    del checkpoint["optim_wrapper"]["skipped_steps"]
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match="entry 'optim_wrapper' has no 'skipped_steps' value"):
        resumed_run(cfg, tmp_path)[1].load()


def test_checkpointable_names_are_unique_and_not_reserved(tmp_path):
    checkpointer = Checkpointer(str(tmp_path), model=nn.Linear(1, 1))
    for name in ("model", "iteration", "rng", "config"):
        with pytest.raises(ValueError, match=f"checkpointable name '{name}' is taken"):
            checkpointer.add_checkpointable(name, nn.Linear(1, 1))


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
    run = Run(small_cfg())
    run.train_steps(2)
    path = run.checkpointer(tmp_path).save("model_final", 2)
    fresh = Run(small_cfg(), seed=1)
    checkpointer = fresh.checkpointer(tmp_path / "new_run", weights=path)
    assert checkpointer.start_iter == 0 and checkpointer.load() == 0
    assert all(torch.equal(a, b) for a, b in zip(run.model.state_dict().values(),
                                                 fresh.model.state_dict().values()))
    assert not fresh.optimizer.state and fresh.scheduler.iteration == 0
