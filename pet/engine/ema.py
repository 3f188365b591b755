"""An exponential moving average of the model's weights (timm's ModelEmaV3, MMEngine's EMAHook).

``ema = decay * ema + (1 - decay) * weights`` for every floating-point parameter after every
``every``-th optimizer step; buffers (BatchNorm statistics, counters) are copied. The average is
a checkpointable ("ema" in each checkpoint), so a resumed run continues it bit for bit.
"""
import copy
from typing import Dict, Optional, Tuple

import torch
from torch import nn

from pet.engine.events import MetricsStorage
from pet.engine.hooks import HOOKS, HookBase, is_period_end
from pet.engine.sharded_checkpoint import reshard
from pet.lib.utils.shards import local_shard, shard_group
from pet.lib.config.runtime import PRIORITIES


def ema_decay(decay: float, update: int, warmup: bool) -> float:
    """The decay of the ``update``-th update (from 0): ``decay``, or with ``warmup`` timm's
    ``min(decay, 1 - (1 + update) ** (-2/3))``, small at first so the average catches up."""
    if not warmup:
        return decay
    return min(decay, 1.0 - (1.0 + update) ** (-2.0 / 3.0))


class ModelEMA:
    """A frozen copy of ``model`` holding the averaged weights (``module``, in eval mode).

    ``state_dict``/``load_state_dict`` are the copy's, for the checkpointer. ``module``: the
    copy, built by the caller (a sharded model cannot be deep-copied: FSDP2 refuses; the copy
    is built and sharded alike, its values loaded from ``model``'s state dict). A sharded
    average is updated shard by shard, each process its own rows."""

    def __init__(self, model: nn.Module, decay: float, warmup: bool = False,
                 module: Optional[nn.Module] = None) -> None:
        self.module = (copy.deepcopy(model) if module is None else module).eval()
        self.module.requires_grad_(False)
        self.sharded = shard_group(self.module.parameters()) is not None
        self.decay = decay
        self.warmup = warmup

    @torch.no_grad()
    def update(self, model: nn.Module, update: int) -> None:
        """Average ``model``'s parameters in (its ``update``-th update), copy its buffers:
        one multi-tensor lerp over the floating-point parameters (as timm's ModelEmaV3)."""
        decay = ema_decay(self.decay, update, self.warmup)
        if self.sharded:  # its evaluation may have left its root's parameters gathered
            reshard(self.module)
        averaged, current = [], []
        for ema_p, p in zip(self.module.parameters(), model.parameters()):
            if ema_p.is_floating_point():
                averaged.append(local_shard(ema_p))
                current.append(local_shard(p.detach()))
            else:
                ema_p.copy_(p)
        if averaged:
            torch._foreach_lerp_(averaged, current, 1.0 - decay)
        for ema_b, b in zip(self.module.buffers(), model.buffers()):
            ema_b.copy_(b)

    def state_dict(self) -> Dict[str, torch.Tensor]:
        if self.sharded:
            reshard(self.module)
        return self.module.state_dict()

    def load_state_dict(self, state_dict: Dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state_dict)


@HOOKS.register()
class EMAHook(HookBase):
    """Updates ``ema`` from ``model`` after every ``every``-th optimizer step, before the
    evaluation and the checkpoints of that step (priority ABOVE_NORMAL). The number of the
    update follows from the iteration, so nothing but the averaged weights is saved."""

    priority = PRIORITIES["ABOVE_NORMAL"]

    def __init__(self, model: nn.Module, ema: ModelEMA, every: int = 1) -> None:
        self.model = model
        self.ema = ema
        self.every = every

    def step_periods(self) -> Tuple[int, ...]:
        return (self.every,)

    def after_step(self, storage: MetricsStorage) -> None:
        if is_period_end(storage.iter, self.every):
            self.ema.update(self.model, (storage.iter + 1) // self.every - 1)
