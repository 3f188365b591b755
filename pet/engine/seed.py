"""Seeding every global random number generator a run draws from, and their states as plain
containers (what a checkpoint saves and restores)."""
import random
from typing import Any, Dict

import numpy as np
import torch


def seed_everything(seed: int, num_threads: int = 0) -> None:
    """Seed torch, numpy and python, and fix torch's CPU thread count (0 keeps torch's
    default): the same config on the same machine then gives the same run, bit for bit."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    if num_threads > 0:
        torch.set_num_threads(num_threads)


def rng_state() -> Dict[str, Any]:
    """The torch (CPU and, once used, CUDA), numpy and python global RNG states, as tensors,
    lists and numbers."""
    bit_generator, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []
    return {
        "torch": torch.get_rng_state(),
        "cuda": cuda,
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
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
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
