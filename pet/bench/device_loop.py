"""train_net's step against a bare hand-written loop on an accelerator (``--device cuda``).

Each case is a job of ImageNet shapes run through train_net's own builder (``SolverLoop``:
build_training_run and build_trainer, hooks, metrics and all) and through the loop a user
writes by hand from torch's documentation (``BareDeviceLoop``: autocast, GradScaler for
float16, ``clip_grad_norm_`` with foreach, torch's fused step on one param group,
``LambdaLR``), on the same model, the same data loader and the same device. The two loops run
interleaved, in rounds of ``steps`` iterations each (a device sync closes every round, so a
round times the device's work and not only the host's), alternating which goes first; the
figure is the median round of each. Steady steps only: the rounds start after a warm-up and
end before the job's final evaluation and checkpoint.

The models (registered while the benchmark runs, see ``bench_entries``, so a config can name them): ``bench_vit_s16`` is ViT-S/16 at
224x224 px (22.1M parameters, 152 tensors), fed 32x32 images upsampled on the device so the
host-to-device copy stays small; ``bench_stack`` is a stack of Linear(4096, 4096) + LayerNorm
blocks (24 of them: 403M parameters, about 100 tensors) on which the optimizer's bytes
dominate its launches. The data set ``bench_images`` holds random 3x32x32 images of 1000
labels.
"""
import contextlib
import os
import statistics
import tempfile
import time
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset
from yacs.config import CfgNode

from pet.bench.loop_benchmark import SolverLoop
from pet.bench.models import VisionTransformer
from pet.data import DATASETS, build_datasets, build_train_loader
from pet.engine.job import validate_job
from pet.engine.logger import close_logging
from pet.engine.seed import seed_everything
from pet.lib.config import get_cfg
from pet.lib.config.loader import merge_from_list
from pet.lib.utils.lr_scheduler import build_schedule
from pet.lib.utils.optim_wrapper import AUTOCAST_DTYPES
from pet.lib.utils.optimizer import OPTIMIZERS, optimizer_spec
from pet.models import MODELS

BENCH_IMAGES = 2048
BENCH_CLASSES = 1000
# The limit on train_net's step over the bare loop on a GPU.
MAX_DEVICE_OVERHEAD = 0.03


class UpsampledViT(nn.Module):
    """ViT-S/16 on 224x224 images made on the device from the loader's uint8 32x32 ones."""

    def __init__(self, num_classes: int, image_size: int = 224, **vit) -> None:
        super().__init__()
        self.image_size = image_size
        self.vit = VisionTransformer(image_size=image_size, num_classes=num_classes, **vit)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().div_(255.0)
        x = F.interpolate(x, size=(self.image_size, self.image_size), mode="nearest")
        return self.vit(x)


class LinearStack(nn.Module):
    """Flattened images through ``depth`` blocks of Linear(width, width), LayerNorm and GELU."""

    def __init__(self, num_classes: int, width: int = 4096, depth: int = 24, in_features: int = 3 * 32 * 32) -> None:
        super().__init__()
        self.stem = nn.Linear(in_features, width)
        self.blocks = nn.Sequential(*[nn.Sequential(nn.Linear(width, width), nn.LayerNorm(width), nn.GELU())
                                      for _ in range(depth)])
        self.head = nn.Linear(width, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(images.flatten(1).float().div_(255.0))))


def build_bench_vit(model_cfg: CfgNode) -> nn.Module:
    """ViT-S/16 at 224 px on upsampled 32x32 images."""
    return UpsampledViT(model_cfg.NUM_CLASSES)


def build_bench_stack(model_cfg: CfgNode) -> nn.Module:
    """24 x Linear(4096, 4096) + LayerNorm: 403M parameters."""
    return LinearStack(model_cfg.NUM_CLASSES)


def build_bench_vit_tiny(model_cfg: CfgNode) -> nn.Module:
    """The ViT's code on 32 px, 2 blocks of width 32 (--quick)."""
    return UpsampledViT(model_cfg.NUM_CLASSES, image_size=32, patch_size=8, dim=32, depth=2, num_heads=2)


def build_bench_stack_tiny(model_cfg: CfgNode) -> nn.Module:
    """The stack's code at width 64, 2 blocks (--quick)."""
    return LinearStack(model_cfg.NUM_CLASSES, width=64, depth=2)


BENCH_MODELS = {"bench_vit_s16": build_bench_vit, "bench_stack": build_bench_stack,
                "bench_vit_tiny": build_bench_vit_tiny, "bench_stack_tiny": build_bench_stack_tiny}
# --quick's model for each: the same code paths, tiny.
QUICK_MODELS = {"bench_vit_s16": "bench_vit_tiny", "bench_stack": "bench_stack_tiny"}


def _bench_images(data: CfgNode):
    generator = torch.Generator().manual_seed(0)
    levels = torch.randint(0, 256, (BENCH_IMAGES, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, BENCH_CLASSES, (BENCH_IMAGES,), generator=generator)
    test = BENCH_IMAGES // 16
    return TensorDataset(levels[test:], labels[test:]), TensorDataset(levels[:test], labels[:test])


@contextlib.contextmanager
def bench_entries():
    """The benchmark's models and its data set ``bench_images`` registered (MODELS, DATASETS)
    while inside, so a config can name them; removed on the way out, so nothing stays behind
    in the registries that validation and the tools read."""
    for name, build in BENCH_MODELS.items():
        MODELS.register(build, name=name)
    DATASETS.register(_bench_images, name="bench_images")
    try:
        yield
    finally:
        for name in BENCH_MODELS:
            MODELS.unregister(name)
        DATASETS.unregister("bench_images")

ADAMW = ["SOLVER.OPTIMIZER.TYPE", "ADAMW", "SOLVER.OPTIMIZER.BASE_LR", "0.001",
         "SOLVER.OPTIMIZER.WEIGHT_DECAY", "0.05"]
SGD = ["SOLVER.OPTIMIZER.TYPE", "SGD", "SOLVER.OPTIMIZER.BASE_LR", "0.05",
       "SOLVER.OPTIMIZER.MOMENTUM", "0.9", "SOLVER.OPTIMIZER.WEIGHT_DECAY", "0.0005"]
FULL_MODEL = ["SOLVER.OPTIMIZER.CLIP_GRADIENTS.ENABLED", "True",
              "SOLVER.OPTIMIZER.CLIP_GRADIENTS.CLIP_TYPE", "full_model",
              "SOLVER.OPTIMIZER.CLIP_GRADIENTS.CLIP_VALUE", "1.0"]


def amp(dtype: str) -> List[str]:
    return ["SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.DTYPE", dtype]


# name -> (model, the case's keys)
DEVICE_CASES = {
    "ViT-S/16 AdamW bfloat16 full_model": ("bench_vit_s16", ADAMW + amp("bfloat16") + FULL_MODEL),
    "ViT-S/16 AdamW float16 + GradScaler full_model": ("bench_vit_s16", ADAMW + amp("float16") + FULL_MODEL),
    "ViT-S/16 SGD bfloat16": ("bench_vit_s16", SGD + amp("bfloat16")),
    "ViT-S/16 AdamW float32": ("bench_vit_s16", ADAMW),
    "403M stack AdamW bfloat16 full_model": ("bench_stack", ADAMW + amp("bfloat16") + FULL_MODEL),
}


def case_cfg(model: str, keys: List[str], iterations: int, device: torch.device,
             batch_size: int = 128) -> CfgNode:
    """The job of a case: ``iterations`` of a cosine schedule with a warm-up, metrics every 20
    iterations, evaluation and the checkpoint only at the end (never reached by the rounds)."""
    cfg = get_cfg()
    merge_from_list(cfg, [
        "MODEL.TYPE", model, "MODEL.NUM_CLASSES", str(BENCH_CLASSES), "MODEL.DEVICE", str(device),
        "DATA.DATASET", "bench_images", "DATA.BATCH_SIZE", str(batch_size),
        "SOLVER.SCHEDULER.POLICY", "COSINE", "SOLVER.SCHEDULER.TOTAL_EPOCHS", "None",
        "SOLVER.SCHEDULER.TOTAL_ITERS", str(iterations), "SOLVER.SCHEDULER.WARM_UP_EPOCHS", "None",
        "SOLVER.SCHEDULER.WARM_UP_ITERS", str(max(1, min(10, iterations // 4))), "SOLVER.SNAPSHOT_EPOCHS", "None",
        "SOLVER.SNAPSHOT_ITERS", "0", "TEST.EVAL_EPOCHS", "None", "TEST.EVAL_ITERS", "0",
        "LOG_PERIOD", "20", "NUM_THREADS", "0", *keys])
    return cfg


class BareDeviceLoop:
    """The hand-written loop of a case: torch's fused optimizer on one param group (its
    torch default where there is no fused kernel), autocast, GradScaler for float16,
    ``clip_grad_norm_`` (foreach) after ``unscale_``, ``LambdaLR`` with the job's lr."""

    def __init__(self, cfg: CfgNode, device: torch.device) -> None:
        seed_everything(cfg.SEED, cfg.NUM_THREADS)
        train_split, _ = build_datasets(cfg.DATA)
        self.device = device
        self.model = MODELS.get(cfg.MODEL.TYPE)(cfg.MODEL).to(device)
        self.model.train()
        opt = cfg.SOLVER.OPTIMIZER
        spec = optimizer_spec(opt)
        info = OPTIMIZERS.get(spec.name)
        self.optimizer = info.cls(self.model.parameters(), lr=opt.BASE_LR, weight_decay=opt.WEIGHT_DECAY,
                                  **spec.options, **(dict(fused=True) if info.fused else {}))
        schedule = build_schedule(cfg.SOLVER.SCHEDULER, validate_job(cfg))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule.factor)
        self.loader = build_train_loader(cfg, train_split, device=device)
        self.batches = self.loader.iterate(0, cfg.SOLVER.SCHEDULER.TOTAL_ITERS)
        self.dtype = AUTOCAST_DTYPES[cfg.SOLVER.AMP.DTYPE] if cfg.SOLVER.AMP.ENABLED else None
        self.scaler = torch.amp.GradScaler(device.type) if self.dtype is torch.float16 else None
        clip = opt.CLIP_GRADIENTS
        self.max_norm = clip.CLIP_VALUE if clip.ENABLED else None
        self.params = list(self.model.parameters())
        self.iteration = 0

    def step(self) -> None:
        images, labels, _ = next(self.batches)[0]
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            loss = F.cross_entropy(self.model(images), labels)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            if self.max_norm is not None:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.params, self.max_norm, foreach=True)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            if self.max_norm is not None:
                torch.nn.utils.clip_grad_norm_(self.params, self.max_norm, foreach=True)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.iteration += 1


class SolverSteps:
    """train_net's loop of a case (``SolverLoop``), advanced one iteration at a time without
    its final ``after_train`` (the rounds time steady steps)."""

    def __init__(self, cfg: CfgNode, output_dir: str, console, device: torch.device) -> None:
        self.trainer = SolverLoop(cfg, output_dir, console, device=device).trainer
        self.trainer.before_train()
        self.iteration = 0

    def step(self) -> None:
        self.trainer.run_iteration(self.iteration)
        self.iteration += 1


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_round(loop, steps: int, device: torch.device) -> float:
    """Milliseconds per iteration of ``steps`` iterations of ``loop``, the device's work
    included (synced before and after)."""
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        loop.step()
    _synchronize(device)
    return (time.perf_counter() - start) / steps * 1e3


def time_device_case(model: str, keys: List[str], device: torch.device, rounds: int, steps: int,
                     warmup: int, batch_size: int) -> Dict:
    """Median ms per iteration of train_net's loop and the bare loop of one case, interleaved."""
    iterations = warmup + rounds * steps + 2  # the rounds never reach the last iteration
    cfg = case_cfg(model, keys, iterations, device, batch_size)
    with tempfile.TemporaryDirectory() as output_dir, open(os.devnull, "w") as null, bench_entries():
        try:
            solver = SolverSteps(cfg, output_dir, null, device)
            bare = BareDeviceLoop(cfg, device)
            for loop in (solver, bare):
                timed_round(loop, warmup, device)
            times: Dict[str, List[float]] = {"solver": [], "bare": []}
            for index in range(rounds):
                order = [("solver", solver), ("bare", bare)]
                for name, loop in order if index % 2 == 0 else order[::-1]:
                    times[name].append(timed_round(loop, steps, device))
        finally:
            close_logging()
    solver_ms, bare_ms = statistics.median(times["solver"]), statistics.median(times["bare"])
    return dict(model=model, keys=keys, batch_size=batch_size, rounds=rounds, steps=steps,
                solver_ms=solver_ms, bare_ms=bare_ms, overhead=solver_ms / bare_ms - 1.0,
                limit=MAX_DEVICE_OVERHEAD, runs=times)


def device_loop_section(device: torch.device, quick: bool = False,
                        cases: Optional[Dict] = None) -> Dict:
    """Every case on ``device``: {case name: {"solver_ms", "bare_ms", "overhead", "limit", ...}}.
    ``quick``: tiny models, batch 8, 2 rounds of 3 steps (a smoke test on any device)."""
    threads = torch.get_num_threads()
    try:
        section = {}
        for name, (model, keys) in (cases or DEVICE_CASES).items():
            if quick:
                section[name] = time_device_case(QUICK_MODELS[model], keys, device, rounds=2, steps=3,
                                                 warmup=2, batch_size=8)
            else:
                section[name] = time_device_case(model, keys, device, rounds=5, steps=20, warmup=10,
                                                 batch_size=128)
    finally:
        torch.set_num_threads(threads)
    return section


def device_loop_targets(section: Optional[Dict]) -> List[Dict]:
    """The issue's target for each case, in the form of ``report.targets``."""
    return [dict(model="device loop", what=f"{name}: train_net step overhead over the bare loop",
                 value=case["overhead"], limit=f"<= {case['limit']}", met=case["overhead"] <= case["limit"])
            for name, case in (section or {}).items()]


def format_device_loop(section: Dict, device: torch.device) -> List[str]:
    """The text lines of the device-loop section."""
    lines = ["", f"train_net's step against a bare hand-written loop on {device} (batch, median "
                 f"of interleaved rounds, device work included):"]
    for name, case in section.items():
        lines.append(f"  {name:48} batch {case['batch_size']:3d}  solver {case['solver_ms']:8.2f} ms/it  "
                     f"bare {case['bare_ms']:8.2f} ms/it  ratio {1 + case['overhead']:.3f}  "
                     f"({case['overhead']:+.1%}, limit {case['limit']:.0%})")
    return lines
