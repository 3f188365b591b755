"""``--fsdp``: SOLVER.DISTRIBUTED.STRATEGY fsdp on 2 gloo processes, the shipped transformer
(cfgs/digits_transformer_adamw_cosine.yaml: AdamW, cosine) scaled up.

- Memory: each process's bytes of parameters, gradients and optimizer state after a step of
  train_net's run under ddp and under fsdp (a DTensor counts its local shard). FSDP2 keeps
  the root module's own parameters (embeddings, the head, the last norm) sharded too, so the
  expected fsdp figure is about 1/2 of ddp's for every part.
- Speed: train_net's loop under fsdp against a bare FSDP2 loop written from torch's FSDP2
  tutorial doing the same job (fully_shard on each encoder layer then the root, AdamW with its
  fused kernel, LambdaLR with the job's lr factor, the same batches), in lock-step, as the
  other step paths (pet.bench.step_paths).
"""
import inspect
import json
import os
import statistics
import tempfile
from typing import Dict, List

import torch
import torch.multiprocessing as mp
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from yacs.config import CfgNode

from pet.bench.loop_benchmark import SOLVER_LOOP, BareLoop, SolverLoop, run_in_lock_step
from pet.bench.step_paths import BARE_LOOP, MAX_DISTRIBUTED_OVERHEAD, WORLD_SIZE, case_cfg, free_port
from pet.data import build_train_loader
from pet.engine.distributed import ProcessInfo, destroy_process_group, init_process_group
from pet.engine.logger import close_logging
from pet.lib.config import load_cfg
from pet.lib.utils.shards import local_shard, optimizer_params

CFG_FILE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        "cfgs", "digits_transformer_adamw_cosine.yaml")
# The transformer scaled up: 6 encoder layers of width 256 (3.2M parameters), batch 64.
SCALED = ["MODEL.TRANSFORMER.EMBED_DIM", "256", "MODEL.TRANSFORMER.DEPTH", "6", "MODEL.TRANSFORMER.NUM_HEADS", "8",
          "NUM_THREADS", "1", "DATA.NUM_WORKERS", "0"]
QUICK = ["MODEL.TRANSFORMER.EMBED_DIM", "32", "MODEL.TRANSFORMER.DEPTH", "2", "MODEL.TRANSFORMER.NUM_HEADS", "2",
         "NUM_THREADS", "1", "DATA.NUM_WORKERS", "0"]
FSDP = ["SOLVER.DISTRIBUTED.STRATEGY", "fsdp"]
ITERATIONS, QUICK_ITERATIONS = 150, 12


def state_bytes(optimizer: torch.optim.Optimizer) -> Dict[str, int]:
    """This process's bytes of parameters, gradients and optimizer state (local shards)."""
    def size(tensor: torch.Tensor) -> int:
        local = local_shard(tensor)
        return local.numel() * local.element_size()
    params = optimizer_params(optimizer)
    state = [t for s in optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
    parts = dict(parameters=sum(size(p) for p in params),
                 gradients=sum(size(p.grad) for p in params if p.grad is not None),
                 optimizer_state=sum(size(t) for t in state))
    parts["total"] = sum(parts.values())
    return parts


class BareFSDPLoop(BareLoop):
    """The bare FSDP2 loop: the model's encoder layers and then the root wrapped by
    ``fully_shard``, torch's AdamW (fused) over the shards, this process's share of each batch."""

    def __init__(self, cfg: CfgNode, process: ProcessInfo, **implementation) -> None:
        super().__init__(cfg, **implementation)
        mesh = init_device_mesh("cpu", (process.world_size,))
        for layer in self.model.fsdp_blocks():
            fully_shard(layer, mesh=mesh)
        fully_shard(self.model, mesh=mesh, reshard_after_forward=False)
        # The same torch optimizer, built over the shards.
        defaults = self.optimizer.defaults
        keywords = inspect.signature(type(self.optimizer)).parameters
        self.optimizer = type(self.optimizer)(self.model.parameters(),
                                              **{k: v for k, v in defaults.items() if k in keywords})
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.scheduler.lr_lambdas[0])
        self.loader = build_train_loader(cfg, self.loader.items.dataset, process.rank, process.world_size)


def _worker(rank: int, quick: bool, port: int, repeats: int, result_path: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    process = ProcessInfo(rank=rank, world_size=WORLD_SIZE, local_rank=rank)
    init_process_group(process, torch.device("cpu"), timeout_s=120)
    iterations = QUICK_ITERATIONS if quick else ITERATIONS
    base = load_cfg(CFG_FILE, QUICK if quick else SCALED)
    result: Dict = dict(memory={}, runs=[], iterations=iterations)
    try:
        with tempfile.TemporaryDirectory() as output_dir, open(os.devnull, "w") as null:
            for strategy in ("ddp", "fsdp"):
                job = case_cfg(base, ["SOLVER.DISTRIBUTED.STRATEGY", strategy], 3)
                loop = SolverLoop(job, os.path.join(output_dir, strategy), null, process)
                try:
                    # Measured as the second step starts: gradients and moments both exist.
                    optimizer = loop.trainer.optim_wrapper.optimizer
                    optimizer.register_step_pre_hook(
                        lambda opt, *_: result["memory"].__setitem__(strategy, state_bytes(opt)))
                    loop.step()
                    loop.step()
                finally:
                    loop.close()
                    close_logging()
            result["parameters"] = sum(p.numel() for p in loop.trainer.model.parameters())
        for repeat in range(repeats):
            job = case_cfg(base, FSDP, iterations)
            with tempfile.TemporaryDirectory() as output_dir, open(os.devnull, "w") as null:
                loops = {}
                try:
                    loops = {SOLVER_LOOP: SolverLoop(job, output_dir, null, process),
                             BARE_LOOP: BareFSDPLoop(job, process, fused=True)}
                    run_in_lock_step(list(loops.values()), iterations)
                finally:
                    for loop in loops.values():
                        loop.close()
                    close_logging()
            result["runs"].append({name: loop.seconds for name, loop in loops.items()})
    finally:
        destroy_process_group()
    if rank == 0:
        with open(result_path, "w") as f:
            json.dump(result, f)


def fsdp_section(quick: bool, repeats: int = 3) -> Dict:
    """{"memory": {strategy: bytes per part}, "memory_ratio": fsdp / ddp per part, "runs",
    "ms_per_iteration" per loop, "overhead" of train_net's loop over the bare FSDP2 one,
    "limit", "iterations", "parameters"}; 2 processes spawned here."""
    with tempfile.TemporaryDirectory() as tmp:
        result_path = os.path.join(tmp, "fsdp.json")
        mp.spawn(_worker, args=(quick, free_port(), 1 if quick else repeats, result_path), nprocs=WORLD_SIZE)
        with open(result_path) as f:
            result = json.load(f)
    memory = result["memory"]
    result["memory_ratio"] = {part: memory["fsdp"][part] / memory["ddp"][part] for part in memory["ddp"]}
    medians = {name: statistics.median(run[name] for run in result["runs"]) for name in result["runs"][0]}
    result["ms_per_iteration"] = {name: s / result["iterations"] * 1e3 for name, s in medians.items()}
    result["overhead"] = medians[SOLVER_LOOP] / medians[BARE_LOOP] - 1.0
    result["limit"] = MAX_DISTRIBUTED_OVERHEAD
    return result


def format_fsdp(section: Dict) -> List[str]:
    """The text lines of the fsdp section."""
    mib = 1 << 20
    lines = [f"fsdp on {WORLD_SIZE} processes (gloo), the transformer scaled up ({section['parameters']} "
             f"parameters): per-process MiB of state after a step"]
    lines.append(f"  {'':16}{'ddp':>10}{'fsdp':>10}{'fsdp/ddp':>10}")
    for part in ("parameters", "gradients", "optimizer_state", "total"):
        ddp, fsdp = section["memory"]["ddp"][part], section["memory"]["fsdp"][part]
        lines.append(f"  {part:16}{ddp / mib:10.2f}{fsdp / mib:10.2f}{section['memory_ratio'][part]:10.3f}")
    ms = section["ms_per_iteration"]
    lines.append(f"  step: {SOLVER_LOOP} {ms[SOLVER_LOOP]:.2f} ms, {BARE_LOOP} (FSDP2) {ms[BARE_LOOP]:.2f} ms per "
                 f"iteration: overhead {section['overhead']:+.1%} (limit {section['limit']:.0%}; "
                 f"median of {len(section['runs'])} jobs of {section['iterations']} iterations)")
    return lines
