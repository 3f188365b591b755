"""Saving and loading the whole training state, atomically, for exact resume.

A checkpoint is a dict of plain containers, tensors and numbers (loadable with
``torch.load(weights_only=True)``): one entry per checkpointable (``model``, ``optimizer``,
``optim_wrapper``, ``eval_hook`` in train_net) holding its ``state_dict()``, ``iteration``
(iterations completed: the only record of the progress), ``rng`` (torch, numpy and python RNG
states) and whatever extra state the caller adds (``config``). ``last_checkpoint`` in the same
directory names the newest one; which file ``--resume`` starts from (falling back past an
unreadable one) and which old ones are deleted (SOLVER.KEEP_CHECKPOINTS): pet.engine.checkpoint_files.

On resume the checkpoint decides the progress (weights, optimizer moments, iteration, RNG) and
the current config decides the hyper-parameters (lr, weight decay, momentum, schedule).
"""
import logging
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn
from yacs.config import CfgNode

from pet.engine.checkpoint_io import (  # noqa: F401  (re-exported: the checkpointer's API)
    TMP_SUFFIX,
    CheckpointWriteError,
    atomic_write,
    cfg_to_dict,
    write_on_main,
)
from pet.engine.distributed import ProcessInfo, all_gather_objects
from pet.engine.sharded_checkpoint import (SHARDED_SUFFIX, load_tensors, remove_tree, reshard, shard_like,
                                           share_rank_0_buffers, split_state)
from pet.engine.sharded_writer import ShardedWriter
from pet.lib.utils.shards import shard_group
from pet.engine.seed import rng_state, seed_everything, set_rng_state  # noqa: F401  (re-exported)
from pet.lib.config.errors import first_line
from pet.engine.checkpoint_files import (  # noqa: F401  (re-exported: the checkpointer's API)
    FINAL_FILE,
    LAST_CHECKPOINT,
    PERIODIC_NAME,
    choose_resume_checkpoint,
    last_checkpoint_path,
    periodic_name,
    read_checkpoint,
    remove_old_checkpoints,
)
from pet.engine.checkpoint_state import (  # noqa: F401  (re-exported: the checkpointer's API)
    CheckpointError,
    NonFiniteStateError,
    check_finite_state,
    check_model_layout,
    check_optimizer_type,
    check_param_group_layout,
    log_hyperparam_changes,
    optimizer_state_to_load,
)

logger = logging.getLogger(__name__)

FINAL_NAME = os.path.splitext(FINAL_FILE)[0]  # model_final


def find_checkpoints(save_dir: str) -> List[str]:
    """Names of the checkpoints (``*.pth`` files, ``*.dcp`` directories) and of
    ``last_checkpoint`` in ``save_dir``."""
    if not os.path.isdir(save_dir):
        return []
    return sorted(name for name in os.listdir(save_dir)
                  if name.endswith((".pth", SHARDED_SUFFIX)) or name == LAST_CHECKPOINT)


class Checkpointer:
    """Saves the named checkpointables to ``save_dir`` and loads the checkpoint to start from.

    Args:
        save_dir: the run's OUTPUT_DIR.
        resume: start from ``save_dir/last_checkpoint`` (the whole state); when that file
            cannot be read, from the newest readable periodic checkpoint (with a warning).
        weights: otherwise, a checkpoint whose model weights only initialize the checkpointable
            ``model`` (fine-tuning, evaluation); "" for none.
        process: this process's place in the job; rank 0 alone writes and deletes files.
        keep_checkpoints: after each periodic checkpoint (``model_<iterations>.pth``), keep
            the newest this many and delete the older ones (SOLVER.KEEP_CHECKPOINTS; 0 keeps
            all). model_final.pth and model_best.pth are never deleted.
        checkpointables: objects with ``state_dict``/``load_state_dict`` (the model, the
            optimizer, the optim wrapper, hooks with state), saved under their names; more can
            be added with ``add_checkpointable`` before ``load``.

    Raises:
        CheckpointError when ``resume`` finds no readable checkpoint, or ``weights`` cannot be
        read.

    A checkpoint holds ``{name: obj.state_dict()}``, ``iteration`` (the one record of the
    progress: the lr schedule and the data position are functions of it), ``rng`` and the
    extras given to ``save`` (train_net: ``config``). Use it as the training script does: add
    every checkpointable, ``load()`` (a no-op with nothing to load), build the rest of the run,
    then ``load_rng()`` right before the loop.
    """

    RESERVED_NAMES = ("iteration", "rng", "config")
    # Entries a checkpoint written before they were saved still resumes without: name -> the
    # entry derived from the checkpoint (the scheduler's progress is its iteration).
    DERIVED_ENTRIES = {"scheduler": lambda checkpoint: {"iteration": int(checkpoint["iteration"])}}

    def __init__(self, save_dir: str, resume: bool = False, weights: str = "",
                 process: ProcessInfo = ProcessInfo(), keep_checkpoints: int = 0,
                 async_save: bool = False, **checkpointables: Any) -> None:
        self.save_dir = save_dir
        self.process = process
        self.keep_checkpoints = keep_checkpoints
        # The sharded checkpoints' writer (periodic ones in the background with async_save).
        self._writer = ShardedWriter(save_dir, process, async_save, self._point_to)
        self._sharded = False
        self.source: Optional[str] = None
        self.checkpoint: Dict[str, Any] = {}
        self.resuming = resume
        self.checkpointables: Dict[str, Any] = {}
        for name, checkpointable in checkpointables.items():
            self.add_checkpointable(name, checkpointable)
        self._damaged: List[str] = []  # unreadable periodic checkpoints that --resume skipped
        if resume:
            self.source, self.checkpoint = self._choose_resume_checkpoint()
        elif weights:
            self.source = weights
            checkpoint = read_checkpoint(weights)
            self.checkpoint = {key: checkpoint[key] for key in ("model", "sharded") if key in checkpoint}

    def _choose_resume_checkpoint(self) -> Tuple[str, Dict[str, Any]]:
        """(path, checkpoint) to resume from (``choose_resume_checkpoint``: last_checkpoint's
        file, or the newest readable periodic one), the same on every process: each chooses
        from the directory it reads, then they compare, and a refusal or a disagreement ends
        every process with the same CheckpointError."""
        choice, refusal = None, None
        try:
            choice = choose_resume_checkpoint(self.save_dir)
        except CheckpointError as e:
            refusal = str(e)
        outcomes = all_gather_objects((refusal, choice.path if choice else None))
        refusals = [r for r, _ in outcomes if r]
        chosen = [(rank, path) for rank, (_, path) in enumerate(outcomes) if path]
        if refusals and chosen:  # a node that cannot see the files the others see
            blind = next(rank for rank, (r, _) in enumerate(outcomes) if r)
            raise CheckpointError(f"--resume: process {blind} of this job cannot resume ({refusals[0]}) "
                                  f"while process {chosen[0][0]} resumes from {chosen[0][1]}; OUTPUT_DIR "
                                  f"must be on a file system every node sees")
        if refusals:
            raise CheckpointError(refusals[0])
        paths = sorted({path for _, path in outcomes})
        if len(paths) > 1:
            raise CheckpointError(f"--resume: the processes of this job chose different checkpoints "
                                  f"({', '.join(paths)}); every process must see the same files in "
                                  f"{self.save_dir}")
        if choice.skipped and self.process.is_main:
            logger.warning("warning: --resume: skipped %s; resuming from %s (iteration %d), the "
                           "newest readable checkpoint", "; ".join(choice.skipped), choice.path,
                           choice.checkpoint["iteration"])
        self._damaged = choice.damaged
        return choice.path, choice.checkpoint

    def add_checkpointable(self, name: str, checkpointable: Any) -> None:
        """Save and load ``checkpointable`` under ``name``; ValueError on a taken name."""
        if name in self.RESERVED_NAMES or name in self.checkpointables:
            raise ValueError(f"checkpointable name {name!r} is taken")
        self.checkpointables[name] = checkpointable
        if name == "model" and isinstance(checkpointable, nn.Module):
            # Decided once, with the model at rest: FSDP2 swaps whole tensors in while it runs.
            self._sharded = shard_group(checkpointable.parameters()) is not None

    @property
    def sharded(self) -> bool:
        """Whether the model is sharded over the processes (FSDP2): its checkpoints are
        ``.dcp`` directories that every process writes its shards to."""
        return self._sharded

    def checkpoint_path(self, name: str) -> str:
        """Where the checkpoint ``name`` (model_final, model_0000100) of this run is written."""
        return os.path.join(self.save_dir, name + (SHARDED_SUFFIX if self.sharded else ".pth"))

    @property
    def start_iter(self) -> int:
        """The iteration to run next: the checkpoint's when resuming, else 0 (CheckpointError
        when the checkpoint has no ``iteration``)."""
        return int(self._entry("iteration")) if self.resuming else 0

    def _entry(self, name: str) -> Any:
        if name not in self.checkpoint:
            raise CheckpointError(
                f"checkpoint {self.source} has no {name!r} entry, which this run needs to resume; "
                f"it was written by another program or an older Pet: start a new run"
            )
        return self.checkpoint[name]

    def load(self) -> int:
        """Load the checkpoint: every checkpointable when resuming, the ``model`` alone with
        ``weights``. Everything is checked before anything is loaded. The optimizer gets the
        checkpoint's progress (moments, step counts) and keeps this run's hyper-parameters;
        each one that differs from the checkpoint's is logged.

        Returns the iteration to run next. Raises CheckpointError on a missing entry or another
        model or param-group layout.
        """
        if self.source is None:
            return 0
        names = list(self.checkpointables) if self.resuming else ["model"]
        if "model" not in self.checkpointables:
            raise ValueError("Checkpointer.load: no checkpointable named 'model'")
        start_iter = self.start_iter
        if self.resuming:
            self._check_rng()
        saved = {name: self._entry_or_derived(name) for name in names}
        for name in names:
            self._check(name, self.checkpointables[name], saved[name])
            if self.resuming:
                self._check_progress(name, saved[name], start_iter)
        if "sharded" in self.checkpoint:  # its tensors, read into this run's layout
            load_tensors(saved, self.checkpointables, self.checkpoint["sharded"])
        elif self.sharded:  # a one-file checkpoint's whole tensors, cut into this process's shards
            shard_like(saved, self.checkpointables)
        for name in names:
            checkpointable = self.checkpointables[name]
            if isinstance(checkpointable, torch.optim.Optimizer):
                log_hyperparam_changes(saved[name]["param_groups"], checkpointable)
                checkpointable.load_state_dict(optimizer_state_to_load(saved[name], checkpointable))
                continue
            try:
                checkpointable.load_state_dict(saved[name])
            except KeyError as e:
                raise CheckpointError(f"checkpoint {self.source}: entry {name!r} has no {e} "
                                      f"value; it was written by an older Pet: start a new run") from None
            except (TypeError, ValueError, AttributeError, RuntimeError) as e:
                raise CheckpointError(f"checkpoint {self.source}: entry {name!r} does not fit "
                                      f"({first_line(e)}); start a new run") from None
        if self.resuming:
            logger.info("Resuming from %s at iteration %d", self.source, start_iter)
        else:
            logger.info("Loaded model weights from %s", self.source)
        return start_iter

    def _check_rng(self) -> None:
        """The saved RNG states of this process restore (tried, then this process's own put
        back), so ``load_rng`` cannot fail after OUTPUT_DIR was written to."""
        saved = self._saved_rng_state()
        if saved is None:
            return
        current = rng_state()
        try:
            set_rng_state(saved)
        except Exception as e:  # noqa: BLE001  (any malformed state is one line)
            raise CheckpointError(f"checkpoint {self.source}: entry 'rng' cannot be restored "
                                  f"({type(e).__name__}: {first_line(e)}); the file is damaged or was "
                                  f"written by another program: resume from another checkpoint or "
                                  f"start a new run") from None
        finally:
            set_rng_state(current)

    def _saved_rng_state(self) -> Optional[Dict[str, Any]]:
        """This process's RNG states in the checkpoint; None without any, or when it was saved
        by another number of processes."""
        if not self.resuming or "rng" not in self.checkpoint:
            return None
        saved = self.checkpoint["rng"]
        saved = saved if isinstance(saved, list) else [saved]  # a checkpoint of one process
        return saved[self.process.rank] if len(saved) == self.process.world_size else None

    def _entry_or_derived(self, name: str) -> Any:
        if name in self.checkpoint or name not in self.DERIVED_ENTRIES or not self.resuming:
            return self._entry(name)
        derived = self.DERIVED_ENTRIES[name](self.checkpoint)
        logger.info("Checkpoint %s has no %r entry (written before Pet saved it): derived %s from "
                    "its iteration", self.source, name, derived)
        return derived

    def _check_progress(self, name: str, saved: Any, iteration: int) -> None:
        """An entry that records the iteration it was saved at (the scheduler's step) must be
        at the checkpoint's: a file where they differ is damaged, and neither may be chosen."""
        if not isinstance(saved, dict) or "iteration" not in saved:
            return
        try:
            at = int(saved["iteration"])
        except (TypeError, ValueError):
            at = saved["iteration"]
        if at != iteration:
            raise CheckpointError(f"checkpoint {self.source}: entry {name!r} is at iteration {at!r} "
                                  f"but the checkpoint at iteration {iteration}; the file is damaged: "
                                  f"resume from another checkpoint or start a new run")

    def _check(self, name: str, checkpointable: Any, saved: Any) -> None:
        if isinstance(checkpointable, nn.Module):
            check_model_layout(saved, checkpointable, self.source)
        elif isinstance(checkpointable, torch.optim.Optimizer):
            for key in ("state", "param_groups"):
                if key not in saved:
                    raise CheckpointError(f"checkpoint {self.source}: entry {name!r} has no {key!r} "
                                          f"value; it was not saved from a torch optimizer")
            check_param_group_layout(saved["param_groups"], checkpointable, self.source)
            check_optimizer_type(saved["param_groups"], checkpointable, self.source)

    def load_rng(self, seed: int = 0) -> None:
        """Restore this process's RNG states saved with the checkpoint (call it last, right
        before the loop, so nothing drawn while building the run changes them).

        A run resumed on another number of processes has no saved state for some of them: every
        process then seeds its streams (dropout) from (``seed``, the iteration, its rank); the
        batches, their order and the schedule do not depend on the layout.
        """
        if not self.resuming or "rng" not in self.checkpoint:
            return
        saved = self._saved_rng_state()
        if saved is not None:
            set_rng_state(saved)
            return
        saved_processes = len(self.checkpoint["rng"]) if isinstance(self.checkpoint["rng"], list) else 1
        logger.info("Resuming a run of %d process(es) on %d: the schedule and the batches are the "
                    "same (DATA.BATCH_SIZE is the batch over all processes); the random streams "
                    "(dropout) restart from SEED, the iteration and the rank",
                    saved_processes, self.process.world_size)
        entropy = np.random.SeedSequence([seed, self.start_iter, self.process.rank])
        seed_everything(int(entropy.generate_state(1)[0]))

    def save(self, name: str, iteration: int, background: bool = False, **extra: Any) -> str:
        """Write ``save_dir/<name>.pth`` atomically and point ``last_checkpoint`` at it.

        ``iteration`` is the number of iterations completed; ``extra`` values must be plain
        containers, tensors or numbers (CfgNodes are converted). Returns the path.

        Under torch.distributed every process calls it (each hands in its RNG states); only
        rank 0 writes, except a sharded model's checkpoint (``<name>.dcp``), to which every
        process writes its shards; with ``background`` (a periodic checkpoint, the run goes on)
        and ``async_save`` those are written in the background. Raises CheckpointWriteError
        (on every process, when a write failed) and NonFiniteStateError; the previous
        checkpoint stays valid.
        """
        self.wait_pending()
        rng_states = all_gather_objects(rng_state())
        path = self.checkpoint_path(name)
        filename = os.path.basename(path)
        if self.sharded:  # its blocks' parameters as shards (an evaluation may leave them gathered)
            reshard(self.checkpointables["model"])
            share_rank_0_buffers(self.checkpointables)
        state = {key: checkpointable.state_dict() for key, checkpointable in self.checkpointables.items()}
        # A diverged step must not become the state a resume starts from. Every process checks
        # (whole weights are equal; shards are each process's own, so they tell each other),
        # so every process stops alike.
        failure = None
        for key in ("model", "optimizer"):
            if key in state and failure is None:
                try:
                    check_finite_state(state[key], key)
                except NonFiniteStateError as e:
                    failure = str(e)
        if self.sharded:
            failure = next((f for f in all_gather_objects(failure) if f), None)
        if failure:
            raise NonFiniteStateError(
                f"{failure} after {iteration} iterations; {filename} was not written; last good "
                f"checkpoint: {last_checkpoint_path(self.save_dir) or 'none'}")
        progress = dict(iteration=int(iteration), rng=rng_states,
                        **{key: cfg_to_dict(value) if isinstance(value, CfgNode) else value
                           for key, value in extra.items()})
        if self.sharded:
            tensors, rest = split_state(state, self.checkpointables)
            return self._writer.save(path, iteration, tensors, {**rest, **progress}, background)
        write_on_main(self.process, lambda: self._write(path, {**state, **progress}))
        return path

    def poll(self) -> None:
        """Publish a background checkpoint once it is written (``ShardedWriter.poll``)."""
        self._writer.poll()

    def wait_pending(self) -> None:
        """Wait for the background checkpoint, if any, and publish it (``ShardedWriter.wait``)."""
        self._writer.wait()

    def _write(self, path: str, state: Dict[str, Any]) -> None:
        """Write ``state`` to ``path``, point ``last_checkpoint`` at it, then apply
        KEEP_CHECKPOINTS to the periodic checkpoints (never the one just written)."""
        atomic_write(path, lambda f: torch.save(state, f))
        self._point_to(path, state["iteration"])

    def _point_to(self, path: str, iteration: int) -> None:
        """Point ``last_checkpoint`` at the complete checkpoint ``path``, remove the damaged
        ones --resume skipped, and apply KEEP_CHECKPOINTS (never to ``path``)."""
        filename = os.path.basename(path)
        # The pointer moves only once the file it names is complete on disk.
        atomic_write(os.path.join(self.save_dir, LAST_CHECKPOINT), lambda f: f.write(filename.encode()))
        logger.debug("Saved checkpoint %s (iteration %d)", path, iteration)
        # The damaged checkpoints --resume passed over go once a newer good one is on disk:
        # kept, they would count toward KEEP_CHECKPOINTS and push out good ones.
        for damaged in self._damaged:
            if os.path.abspath(damaged) == os.path.abspath(path):
                continue  # rewritten whole just now
            try:
                remove_tree(damaged)
            except OSError:  # gone already, or not ours to delete: retention is never fatal
                continue
            logger.info("Removed %s, which --resume skipped as unreadable", damaged)
        self._damaged = []
        if self.keep_checkpoints and PERIODIC_NAME.match(filename):
            remove_old_checkpoints(self.save_dir, self.keep_checkpoints, filename)
