"""How the optimizer's build time grows with the number of parameter tensors: Pet's
``build_optimizer`` (rules, merged groups) side by side with MMEngine's
``DefaultOptimWrapperConstructor`` with a comparable ``paramwise_cfg`` (one group per tensor),
when MMEngine is importable (the benchmark's optional extra).

The model is a stack of blocks (Linear 4x4 + LayerNorm: four tensors each) and a head, so every
rule fires: default, bias, norm, a custom key. Build time should be linear in the tensors: the
"per tensor" column stays flat from 1k to 100k tensors.
"""
import time
from typing import Dict, List, Optional

from torch import nn

from pet.lib.utils.optimizer import build_optimizer
from pet.lib.utils.param_groups import CustomKey, GroupingSpec
from pet.lib.utils.optimizer import OptimizerSpec

BUILD_SIZES = (1_000, 10_000, 100_000)
PARAMWISE = dict(bias_lr_mult=2.0, norm_decay_mult=0.0, custom_keys={"head": dict(lr_mult=10.0)})


def block_model(num_tensors: int) -> nn.Module:
    """``num_tensors`` parameter tensors (rounded to 4): blocks of Linear(4, 4) + LayerNorm(4),
    then a Linear head."""
    model = nn.Module()
    model.blocks = nn.ModuleList(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
                                 for _ in range(max(num_tensors // 4 - 1, 1)))
    model.head = nn.Sequential(nn.Linear(4, 2), nn.LayerNorm(2))
    return model


def pet_spec() -> OptimizerSpec:
    """Pet's spec equal to PARAMWISE: bias lr x2, no norm decay, 10x lr for "head"."""
    return OptimizerSpec(name="SGD", options=dict(momentum=0.9), implementation="loop",
                         grouping=GroupingSpec(base_lr=0.1, weight_decay=1e-4, bias_lr_factor=2.0,
                                               weight_decay_bias=1e-4, weight_decay_norm=0.0,
                                               custom_keys=(CustomKey("head", lr_mult=10.0),)))


def mmengine_build():
    """MMEngine's constructor as a function of the model, or None when it is not installed."""
    try:
        import logging
        from mmengine.logging import MMLogger
        from mmengine.optim import DefaultOptimWrapperConstructor
    except ImportError:
        return None
    # One log line per parameter and option: at 10k tensors the logging alone takes minutes.
    MMLogger.get_current_instance().setLevel(logging.ERROR)
    constructor = DefaultOptimWrapperConstructor(
        dict(type="OptimWrapper", optimizer=dict(type="SGD", lr=0.1, momentum=0.9, weight_decay=1e-4)),
        paramwise_cfg=PARAMWISE)
    return constructor


def _seconds(build, model, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        optimizer = build(model)
        times.append(time.perf_counter() - start)
        del optimizer
    return sorted(times)[len(times) // 2]


def build_cost_rows(sizes=BUILD_SIZES, repeats: int = 3) -> List[Dict[str, Optional[float]]]:
    """One row per model size: tensors, Pet's build seconds and groups, MMEngine's (None
    without MMEngine), each a median of ``repeats`` builds (one at 100k tensors)."""
    spec = pet_spec()
    constructor = mmengine_build()
    build_optimizer(block_model(64), spec)  # warm-up: torch's first optimizer of a class patches it
    rows = []
    for size in sizes:
        model = block_model(size)
        tensors = len(list(model.parameters()))
        runs = repeats if size < 100_000 else 1
        row = dict(tensors=tensors, pet_s=_seconds(lambda m: build_optimizer(m, spec), model, runs),
                   pet_groups=len(build_optimizer(model, spec).param_groups), mmengine_s=None,
                   mmengine_groups=None)
        if constructor is not None:
            row["mmengine_s"] = _seconds(constructor, model, runs)
            row["mmengine_groups"] = len(constructor(model).optimizer.param_groups)
        rows.append(row)
    return rows


def format_build_cost(rows) -> str:
    """The rows as a text table, with microseconds per tensor."""
    lines = ["optimizer build time (s), and per tensor (us):",
             f"{'tensors':>8}  {'pet':>8}  {'us/t':>6}  {'groups':>6}  {'mmengine':>9}  {'us/t':>6}  {'groups':>6}"]
    for r in rows:
        mm = (f"{r['mmengine_s']:9.3f}  {1e6 * r['mmengine_s'] / r['tensors']:6.1f}  {r['mmengine_groups']:6d}"
              if r["mmengine_s"] is not None else f"{'n/a':>9}  {'':>6}  {'':>6}")
        lines.append(f"{r['tensors']:8d}  {r['pet_s']:8.3f}  {1e6 * r['pet_s'] / r['tensors']:6.1f}  "
                     f"{r['pet_groups']:6d}  {mm}")
    return "\n".join(lines)
