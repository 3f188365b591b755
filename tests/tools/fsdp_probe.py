"""Run by tests/tools/test_fsdp.py under ``torchrun --nproc_per_node 2``: the solver's passes
over sharded (FSDP2) gradients against torch's own functions on the whole model's gradients.

A model is sharded with fully_shard; the same model, whole, is kept in every process. Each
check sets the same gradients on both (the whole ones by the full tensor, the shards by each
process's rows), runs ours on the shards and torch's on the whole, and compares the result
gathered whole. Prints "OK <check>" per check on rank 0; any failure raises (exit 1).
"""
import copy
import math
import os
import sys

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from pet.lib.utils.grad_check import FlagSlots, GradientCheck  # noqa: E402
from pet.lib.utils.grad_clip import GradientClipping  # noqa: E402
from pet.lib.utils.shards import ShardedGradScaler, optimizer_shard_group  # noqa: E402


class ClippedSGD(GradientClipping, torch.optim.SGD):
    pass


def build():
    torch.manual_seed(0)
    # A 3-row parameter over 2 processes: uneven shards (2 rows and 1); a 1-row one: an empty
    # shard on rank 1.
    whole = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3), nn.Linear(3, 1))
    sharded = copy.deepcopy(whole)
    for layer in sharded:
        if isinstance(layer, nn.Linear):
            fully_shard(layer)
    fully_shard(sharded)
    return whole, sharded


def set_grads(whole, sharded, seed, scale=1.0):
    generator = torch.Generator().manual_seed(seed)
    for w, s in zip(whole.parameters(), sharded.parameters()):
        grad = torch.randn(w.shape, generator=generator) * scale
        w.grad = grad.clone()
        s.grad = distribute_tensor(grad, s.device_mesh, s.placements, src_data_rank=None)


def gathered_grads(sharded):
    return [p.grad.full_tensor() for p in sharded.parameters()]


def check_clip(clip_type, clip_value, norm_type, rank):
    whole, sharded = build()
    set_grads(whole, sharded, seed=1, scale=3.0)
    optimizer = ClippedSGD(sharded.parameters(), lr=0.0, clip_type=clip_type, clip_value=clip_value,
                           norm_type=norm_type)
    assert optimizer_shard_group(optimizer) is not None
    optimizer.clip_gradients_()
    if clip_type == "full_model":
        torch.nn.utils.clip_grad_norm_(whole.parameters(), clip_value, norm_type)
    elif clip_type == "norm":
        for p in whole.parameters():
            torch.nn.utils.clip_grad_norm_([p], clip_value, norm_type)
    else:
        torch.nn.utils.clip_grad_value_(whole.parameters(), clip_value)
    for ours, theirs in zip(gathered_grads(sharded), [p.grad for p in whole.parameters()]):
        torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)
    if rank == 0:
        print(f"OK clip {clip_type} p={norm_type}")


def check_norm_and_flag(rank):
    whole, sharded = build()
    set_grads(whole, sharded, seed=2)
    optimizer = torch.optim.SGD(sharded.parameters(), lr=0.0)
    check = GradientCheck(optimizer)
    expected = torch.nn.utils.get_total_norm([p.grad for p in whole.parameters()], 2.0)
    torch.testing.assert_close(check.total_norm(), expected, rtol=1e-6, atol=0)
    flag = FlagSlots(torch.device("cpu")).take()
    assert float(check.raise_if_nonfinite(flag)) == 0.0
    # A NaN in rank 1's shard only: both processes raise the flag (the step is skipped everywhere).
    if rank == 1:
        next(sharded.parameters()).grad._local_tensor[0, 0] = float("nan")
    flag = FlagSlots(torch.device("cpu")).take()
    assert float(check.raise_if_nonfinite(flag)) == 1.0, f"rank {rank} did not see the NaN"
    if rank == 0:
        print("OK total norm and non-finite flag")


def check_scaler(rank):
    whole, sharded = build()
    group = optimizer_shard_group(torch.optim.SGD(sharded.parameters(), lr=0.1))
    for fused in (False, True):
        optimizer = torch.optim.Adam(sharded.parameters(), lr=0.1, fused=fused)
        scaler = ShardedGradScaler("cpu", group)
        before = [p.full_tensor().clone() for p in sharded.parameters()]
        set_grads(whole, sharded, seed=3)
        if rank == 1:  # an inf in one process's shard: every process skips and halves the scale
            list(sharded.parameters())[2].grad._local_tensor.view(-1)[0] = float("inf")
        scaler.scale(torch.ones(()))  # the scale exists
        scaler.step(optimizer)
        scaler.update()
        assert scaler.get_scale() == 65536.0 / 2, (rank, fused, scaler.get_scale())
        for old, p in zip(before, sharded.parameters()):
            assert torch.equal(old, p.full_tensor()), f"rank {rank}: a skipped step changed a weight"
    if rank == 0:
        print("OK sharded GradScaler skips everywhere")


def check_fused_kernels_on_shards(rank):
    """FUSED_ON_SHARDS is torch's list: Adam and AdamW's fused kernels step DTensors, SGD's
    and Adagrad's do not (when torch adds one, the list must follow)."""
    from pet.lib.utils.optimizer import FUSED_ON_SHARDS
    for cls in (torch.optim.SGD, torch.optim.Adagrad, torch.optim.Adam, torch.optim.AdamW):
        _, sharded = build()
        optimizer = cls(sharded.parameters(), lr=0.1, fused=True)
        for p in sharded.parameters():
            p.grad = torch.zeros_like(p)
        try:
            optimizer.step()
            works = True
        except NotImplementedError:
            works = False
        assert works == (cls.__name__ in FUSED_ON_SHARDS), (cls.__name__, works)
    if rank == 0:
        print("OK fused kernels on shards")


def check_every_optimizer(rank):
    """Every optimizer of the registry (with full_model clipping), built by Pet's Optimizer over
    the shards, steps them as it steps the whole model, except those NOT_ON_SHARDS names, which
    are refused with one line; and those do fail on shards (the list follows torch)."""
    from pet.lib.config import ConfigError, get_cfg
    import pet.lib.utils.optimizer as optimizer_module
    from pet.lib.utils.optimizer import NOT_ON_SHARDS, OPTIMIZERS, Optimizer
    for name in OPTIMIZERS.names():
        if name in NOT_ON_SHARDS:
            cfg = get_cfg().SOLVER.OPTIMIZER
            cfg.defrost()
            cfg.TYPE, cfg.WEIGHT_DECAY = name, 0.0
            try:
                Optimizer(build()[1], cfg).build()
                raise AssertionError(f"{name} was not refused on shards")
            except ConfigError as e:  # SparseAdam: refused for dense gradients first
                assert name == "SPARSEADAM" or f"TYPE: {name} cannot step parameters sharded" in str(e), e
            if name == "SPARSEADAM":
                continue  # needs sparse gradients, whole or sharded
            whole, sharded = build()  # and, built without the refusal, it does fail on them
            optimizer_module.NOT_ON_SHARDS = ()
            try:
                optimizer = Optimizer(sharded, cfg).build()
            finally:
                optimizer_module.NOT_ON_SHARDS = NOT_ON_SHARDS
            set_grads(whole, sharded, seed=5)
            try:
                optimizer.step()
                raise AssertionError(f"{name} steps shards now: take it off NOT_ON_SHARDS")
            except (RuntimeError, NotImplementedError):
                pass
            continue
        cfg = get_cfg().SOLVER.OPTIMIZER
        cfg.defrost()
        cfg.TYPE, cfg.BASE_LR, cfg.CLIP_GRADIENTS.ENABLED, cfg.CLIP_GRADIENTS.CLIP_VALUE = name, 0.01, True, 1.0
        if not OPTIMIZERS.get(name).weight_decay:
            cfg.WEIGHT_DECAY = 0.0
        whole, sharded = build()
        optimizers = [Optimizer(model, cfg).build() for model in (whole, sharded)]
        for step in range(3):
            set_grads(whole, sharded, seed=10 + step, scale=2.0)
            for optimizer in optimizers:
                optimizer.step()
        for w, s in zip(whole.parameters(), sharded.parameters()):
            torch.testing.assert_close(s.full_tensor(), w.detach(), rtol=2e-5, atol=1e-6,
                                       msg=lambda m: f"{name}: {m}")
    if rank == 0:
        print("OK every optimizer on shards")


def main():
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    for clip_type, value, norm_type in (("full_model", 1.0, 2.0), ("full_model", 0.5, math.inf),
                                        ("full_model", 1.0, 1.0), ("norm", 0.7, 2.0), ("norm", 0.3, math.inf),
                                        ("value", 0.4, 2.0)):
        check_clip(clip_type, value, norm_type, rank)
    check_norm_and_flag(rank)
    check_scaler(rank)
    check_fused_kernels_on_shards(rank)
    check_every_optimizer(rank)
    assert isinstance(next(build()[1].parameters()), DTensor)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
