"""Seeding every global random number generator a run draws from."""
import random

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
