#!/usr/bin/env python
"""Turn a sharded checkpoint (a ``.dcp`` directory of an fsdp run) into one file of plain weights.

    python tools/convert_checkpoint.py ckpts/x/model_final.dcp [--out ckpts/x/model_final.pth]

Reads every process's shards in this one process (no torchrun, no GPU) and writes
``{"model": whole weights, "iteration": n}`` atomically to ``--out`` (default: the directory's
name with .pth): what ``MODEL.WEIGHTS`` (fine-tuning, ``--eval-only``) and plain torch code
load. A training run resumes from the ``.dcp`` directory itself, on any number of processes,
under either SOLVER.DISTRIBUTED.STRATEGY. Exit status 2 with one line on stderr when the
input is not a complete sharded checkpoint or the output exists.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from pet.engine.checkpoint_files import read_checkpoint  # noqa: E402
from pet.engine.checkpointer import CheckpointWriteError, atomic_write  # noqa: E402
from pet.engine.sharded_checkpoint import SHARDED_SUFFIX, is_sharded_checkpoint, read_whole  # noqa: E402
from pet.lib.config.cli import exit_on_config_error  # noqa: E402
from pet.lib.config.errors import ConfigError  # noqa: E402


def convert(source: str, out: str) -> int:
    """Write the plain weights of ``source`` to ``out``; return the checkpoint's iteration."""
    source = source.rstrip(os.sep)
    if not is_sharded_checkpoint(source):
        raise ConfigError(f"CHECKPOINT: {source!r} is not a sharded checkpoint (a directory "
                          f"<name>{SHARDED_SUFFIX} written by an fsdp run)")
    iteration = int(read_checkpoint(source).get("iteration", 0))  # CheckpointError: one line
    if os.path.exists(out):
        raise ConfigError(f"--out: {out} exists; remove it or name another file")
    state = {"model": read_whole(source)["model"], "iteration": iteration}
    atomic_write(out, lambda f: torch.save(state, f))
    return iteration


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Write a sharded checkpoint's weights as one .pth file.")
    parser.add_argument("checkpoint", help=f"a sharded checkpoint directory (<name>{SHARDED_SUFFIX})")
    parser.add_argument("--out", default=None, help="the .pth file to write (default: next to it, .pth)")
    args = parser.parse_args(argv)
    out = args.out or args.checkpoint.rstrip(os.sep)[:-len(SHARDED_SUFFIX)] + ".pth"
    with exit_on_config_error():
        try:
            iteration = convert(args.checkpoint, out)
        except CheckpointWriteError as e:
            raise ConfigError(str(e)) from None
    print(f"wrote {out}: the model's weights after {iteration} iterations")
    return 0


if __name__ == "__main__":
    sys.exit(main())
