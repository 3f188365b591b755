"""Saving and loading the whole training state, atomically, for exact resume.

A checkpoint is a dict of plain containers, tensors and numbers (loadable with
``torch.load(weights_only=True)``) with the keys ``model``, ``optimizer``, ``scheduler``,
``iteration`` (iterations completed), ``rng`` (torch, numpy and python RNG states) and whatever
extra state the caller adds. ``last_checkpoint`` in the same directory names the newest one.

On resume the checkpoint decides the progress (weights, optimizer moments, iteration, RNG) and
the current config decides the hyper-parameters (lr, weight decay, momentum, schedule).
"""
import logging
import os
import random
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from torch import nn
from yacs.config import CfgNode

from pet.lib.config.errors import ConfigError

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "last_checkpoint"
FINAL_NAME = "model_final"
# Param-group keys that the scheduler rewrites every iteration: a difference is not news.
_SCHEDULED_KEYS = ("lr",)


class CheckpointError(ConfigError):
    """A checkpoint that cannot be used with this config: missing, unreadable, or made for a
    different model or param-group layout. Tools exit with status 2 on it, as on a bad config."""


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------
def atomic_write(path: str, write) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, flush and fsync it, then
    rename it over ``path``: a crash at any moment leaves either the old file or the new one."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp_path = os.path.join(directory, f".{os.path.basename(path)}.tmp")
    with open(tmp_path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp_path, path)
    # The rename itself is durable only once the directory entry is on disk.
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def find_checkpoints(save_dir: str) -> List[str]:
    """Names of the checkpoint files (``*.pth``) and of ``last_checkpoint`` in ``save_dir``."""
    if not os.path.isdir(save_dir):
        return []
    return sorted(
        name for name in os.listdir(save_dir) if name.endswith(".pth") or name == LAST_CHECKPOINT
    )


def last_checkpoint_path(save_dir: str) -> Optional[str]:
    """The file named by ``save_dir/last_checkpoint``, or None when there is none."""
    pointer = os.path.join(save_dir, LAST_CHECKPOINT)
    if not os.path.isfile(pointer):
        return None
    with open(pointer) as f:
        name = f.read().strip()
    return os.path.join(save_dir, name) if name else None


def read_checkpoint(path: str) -> Dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; CheckpointError when it is missing or
    unreadable."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a truncated or foreign file
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint {path}: cannot be loaded ({first_line})") from None
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise CheckpointError(f"checkpoint {path}: not a Pet checkpoint (no 'model' key)")
    return checkpoint


def cfg_to_dict(cfg: CfgNode) -> Dict[str, Any]:
    """A CfgNode as nested plain dicts (what ``weights_only`` loading accepts)."""
    return {key: cfg_to_dict(value) if isinstance(value, CfgNode) else value
            for key, value in cfg.items()}


# ---------------------------------------------------------------------------------------------
# RNG states as plain containers
# ---------------------------------------------------------------------------------------------
def rng_state() -> Dict[str, Any]:
    """The torch, numpy and python global RNG states, as tensors, lists and numbers."""
    bit_generator, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "bit_generator": bit_generator,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore the states saved by ``rng_state``."""
    torch.set_rng_state(state["torch"])
    saved = state["numpy"]
    np.random.set_state((
        saved["bit_generator"],
        saved["keys"].numpy().astype(np.uint32),
        saved["pos"],
        saved["has_gauss"],
        saved["cached_gaussian"],
    ))
    saved = state["python"]
    random.setstate((saved["version"], tuple(saved["internal"]), saved["gauss_next"]))


# ---------------------------------------------------------------------------------------------
# Layout checks
# ---------------------------------------------------------------------------------------------
def _first_and_count(keys: List[str]) -> str:
    return keys[0] + (f" and {len(keys) - 1} more" if len(keys) > 1 else "")


def check_model_layout(saved: Dict[str, torch.Tensor], model: nn.Module, source: str) -> None:
    """Raise CheckpointError naming the first missing, unexpected or reshaped tensor."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in saved]
    unexpected = [key for key in saved if key not in expected]
    if missing or unexpected:
        parts = [f"{what} {_first_and_count(keys)}"
                 for what, keys in (("missing", missing), ("unexpected", unexpected)) if keys]
        raise CheckpointError(
            f"checkpoint {source} was saved from a different model ({'; '.join(parts)}); "
            f"check MODEL.TYPE and the MODEL section"
        )
    for key, tensor in expected.items():
        if saved[key].shape != tensor.shape:
            raise CheckpointError(
                f"checkpoint {source} was saved from a different model: {key} has shape "
                f"{tuple(saved[key].shape)} there and {tuple(tensor.shape)} here; "
                f"check the MODEL section"
            )


def check_param_group_layout(saved_groups: List[Dict], optimizer: torch.optim.Optimizer,
                             source: str) -> None:
    """Raise CheckpointError naming the first param group or parameter that differs."""
    groups = optimizer.param_groups
    hint = ("the model or the SOLVER.OPTIMIZER keys that decide the grouping (lr factors, "
            "weight decays, EMBED_KEYWORDS) changed")
    if len(saved_groups) != len(groups):
        raise CheckpointError(
            f"checkpoint {source} has {len(saved_groups)} optimizer param groups, this config builds "
            f"{len(groups)}: {hint}"
        )
    for index, (saved, group) in enumerate(zip(saved_groups, groups)):
        saved_names = list(saved.get("param_names", ()))
        names = list(group.get("param_names", ()))
        if saved_names and names and saved_names != names:
            position = next((k for k, (a, b) in enumerate(zip(saved_names, names)) if a != b),
                            min(len(saved_names), len(names)))
            there = saved_names[position] if position < len(saved_names) else "(end of group)"
            here = names[position] if position < len(names) else "(end of group)"
            raise CheckpointError(
                f"checkpoint {source}: optimizer param group {index} differs at parameter {position}: "
                f"{there} in the checkpoint, {here} here: {hint}"
            )
        if len(saved["params"]) != len(group["params"]):
            raise CheckpointError(
                f"checkpoint {source}: optimizer param group {index} holds {len(saved['params'])} "
                f"parameters there and {len(group['params'])} here: {hint}"
            )


def restore_config_hyperparams(optimizer: torch.optim.Optimizer, wanted: List[Dict[str, Any]]) -> None:
    """Write the config's value of every param-group key back after ``load_state_dict``, and log
    each one the checkpoint had changed (except the lr, which the scheduler sets anyway)."""
    for index, (group, config_values) in enumerate(zip(optimizer.param_groups, wanted)):
        for key, value in config_values.items():
            old = group.get(key)
            if key not in _SCHEDULED_KEYS and old != value:
                logger.info("resume: param group %d %s: %r in the checkpoint, %r from the config (used)",
                            index, key, old, value)
            group[key] = value


class Checkpointer:
    """Saves checkpoints to ``save_dir`` and loads the one to start from.

    Args:
        save_dir: the run's OUTPUT_DIR.
        resume: start from ``save_dir/last_checkpoint`` (the whole state).
        weights: otherwise, a checkpoint whose model weights only initialize the model
            (fine-tuning, evaluation); "" for none.

    Raises:
        CheckpointError when ``resume`` finds no checkpoint or the file cannot be read.

    Use it as the training script does: ``model = checkpointer.load_model(model)``, then
    ``load_optimizer``, ``load_scheduler`` and ``load_rng``; or ``resume(...)`` for all at once.
    Each is a no-op when there is nothing to load.
    """

    def __init__(self, save_dir: str, resume: bool = False, weights: str = "") -> None:
        self.save_dir = save_dir
        self.source: Optional[str] = None
        self.checkpoint: Dict[str, Any] = {}
        self.resuming = resume
        if resume:
            self.source = last_checkpoint_path(save_dir)
            if self.source is None:
                raise CheckpointError(
                    f"--resume: {os.path.join(save_dir, LAST_CHECKPOINT)} does not exist, nothing to "
                    f"resume; drop --resume to start a new run"
                )
            self.checkpoint = read_checkpoint(self.source)
        elif weights:
            self.source = weights
            self.checkpoint = {"model": read_checkpoint(weights)["model"]}

    @property
    def start_iter(self) -> int:
        """The iteration to run next: the checkpoint's when resuming, else 0."""
        return int(self.checkpoint.get("iteration", 0)) if self.resuming else 0

    def load_model(self, model: nn.Module) -> nn.Module:
        """Load the checkpoint's weights into ``model`` (CheckpointError on a layout mismatch)."""
        if "model" in self.checkpoint:
            check_model_layout(self.checkpoint["model"], model, self.source)
            model.load_state_dict(self.checkpoint["model"])
            logger.info("Loaded model weights from %s", self.source)
        return model

    def load_optimizer(self, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """Load the optimizer's progress (moments, step counts) and keep the config's
        hyper-parameters: torch's ``load_state_dict`` restores the checkpoint's group values, so
        the freshly built ones are written back and every change is logged."""
        if not self.resuming:
            return optimizer
        saved = self.checkpoint["optimizer"]
        check_param_group_layout(saved["param_groups"], optimizer, self.source)
        wanted = [{k: v for k, v in group.items() if k not in ("params", "param_names")}
                  for group in optimizer.param_groups]
        optimizer.load_state_dict(saved)
        restore_config_hyperparams(optimizer, wanted)
        return optimizer

    def load_scheduler(self, scheduler):
        """Move ``scheduler`` to the checkpoint's iteration (its schedule stays the config's)."""
        if self.resuming:
            scheduler.load_state_dict(self.checkpoint["scheduler"])
            logger.info("Resuming from %s at iteration %d", self.source, scheduler.iteration)
        return scheduler

    def load_rng(self) -> None:
        """Restore the RNG states saved with the checkpoint (call it last, right before the
        loop, so nothing drawn while building the run changes them)."""
        if self.resuming and "rng" in self.checkpoint:
            set_rng_state(self.checkpoint["rng"])

    def resume(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler) -> int:
        """Load model, optimizer, scheduler and RNG states; return the iteration to run next."""
        self.load_model(model)
        self.load_optimizer(optimizer)
        self.load_scheduler(scheduler)
        self.load_rng()
        return self.start_iter

    def save(self, name: str, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler,
             iteration: int, **extra: Any) -> str:
        """Write ``save_dir/<name>.pth`` atomically and point ``last_checkpoint`` at it.

        ``iteration`` is the number of iterations completed; ``extra`` values must be plain
        containers, tensors or numbers (CfgNodes are converted). Returns the path.
        """
        state = {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "iteration": int(iteration),
            "rng": rng_state(),
        }
        for key, value in extra.items():
            state[key] = cfg_to_dict(value) if isinstance(value, CfgNode) else value
        filename = f"{name}.pth"
        path = os.path.join(self.save_dir, filename)
        atomic_write(path, lambda f: torch.save(state, f))
        # The pointer moves only once the file it names is complete on disk.
        atomic_write(os.path.join(self.save_dir, LAST_CHECKPOINT), lambda f: f.write(filename.encode()))
        logger.debug("Saved checkpoint %s (iteration %d)", path, iteration)
        return path
