"""How the optimizer's build time grows with the number of parameter tensors: Pet's
``build_optimizer`` (rules, merged groups) side by side with MMEngine's
``DefaultOptimWrapperConstructor`` with a comparable ``paramwise_cfg`` (one group per tensor),
when MMEngine is importable (the benchmark's optional extra).

The model is a stack of blocks (Linear 4x4 + LayerNorm: four tensors each) and a head, so every
rule fires: default, bias, norm, a custom key. Build time should be linear in the tensors: the
"per tensor" column stays flat from 1k to 100k tensors. MMEngine's is quadratic (one group per
tensor, and torch's ``add_param_group`` checks each new group against every earlier one): 45 s
at 10k tensors here, so it is skipped above MMENGINE_MAX_TENSORS.

Selected by ``tools/benchmark_solver.py --build-cost``; MMEngine is the optional extra of
``requirements-bench.txt``.
"""
import time
from typing import Dict, List, Optional, Sequence

from torch import nn

from pet.lib.utils.optimizer import build_optimizer
from pet.lib.utils.param_groups import CustomKey, GroupingSpec
from pet.lib.utils.optimizer import OptimizerSpec

BUILD_SIZES = (1_000, 10_000, 100_000)
QUICK_BUILD_SIZES = (100, 1_000)  # --quick: a smoke test
# Above this MMEngine's quadratic build is not run: extrapolated from 45 s at 10k tensors,
# 100k would take over an hour.
MMENGINE_MAX_TENSORS = 10_000
NOT_INSTALLED = "not installed (pip install --no-deps -r requirements-bench.txt)"
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


def mmengine_version() -> Optional[str]:
    """MMEngine's version, or None when it cannot be imported."""
    try:
        import mmengine
    except ImportError:
        return None
    return mmengine.__version__


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


def hyperparameters(optimizer) -> Dict[int, tuple]:
    """id(param) -> (lr, weight_decay) of every parameter of ``optimizer``."""
    return {id(p): (group["lr"], group["weight_decay"]) for group in optimizer.param_groups
            for p in group["params"]}


def build_cost_rows(sizes: Sequence[int] = BUILD_SIZES, repeats: int = 3,
                    mmengine_max_tensors: int = MMENGINE_MAX_TENSORS) -> List[Dict]:
    """One row per model size: tensors, Pet's build seconds and groups, MMEngine's, each a
    median of ``repeats`` builds (one at 100k tensors). ``mmengine_note`` says why MMEngine's
    figures are None (not installed, or over ``mmengine_max_tensors``); ``same_hyperparameters``
    whether both gave every parameter the same lr and weight decay (None when not measured)."""
    spec = pet_spec()
    constructor = mmengine_build()
    build_optimizer(block_model(64), spec)  # warm-up: torch's first optimizer of a class patches it
    rows = []
    for size in sizes:
        model = block_model(size)
        tensors = len(list(model.parameters()))
        runs = repeats if size < 100_000 else 1
        ours = build_optimizer(model, spec)
        row = dict(tensors=tensors, pet_s=_seconds(lambda m: build_optimizer(m, spec), model, runs),
                   pet_groups=len(ours.param_groups), mmengine_s=None, mmengine_groups=None,
                   mmengine_note=None, same_hyperparameters=None)
        if constructor is None:
            row["mmengine_note"] = NOT_INSTALLED
        elif tensors > mmengine_max_tensors:
            row["mmengine_note"] = f"skipped: over {mmengine_max_tensors} tensors (quadratic)"
        else:
            row["mmengine_s"] = _seconds(lambda m: constructor(m).optimizer, model, runs)
            theirs = constructor(model).optimizer
            row["mmengine_groups"] = len(theirs.param_groups)
            row["same_hyperparameters"] = hyperparameters(ours) == hyperparameters(theirs)
        rows.append(row)
    return rows


def build_cost_section(quick: bool) -> Dict:
    """``--build-cost``: the rows at 1k, 10k and 100k tensors (100 and 1k with ``quick``) and
    MMEngine's version (None when not installed)."""
    sizes, repeats = (QUICK_BUILD_SIZES, 1) if quick else (BUILD_SIZES, 3)
    return dict(mmengine=mmengine_version(), mmengine_max_tensors=MMENGINE_MAX_TENSORS,
                repeats=repeats, rows=build_cost_rows(sizes, repeats))


def format_build_cost(section: Dict) -> str:
    """The section as a text table: seconds, microseconds per tensor and groups of each."""
    version = section["mmengine"] or "not installed"
    lines = [f"optimizer build time (s) and per tensor (us), median of {section['repeats']} builds "
             f"(1 at 100k); MMEngine {version}:",
             f"{'tensors':>8}  {'pet':>8}  {'us/t':>6}  {'groups':>6}  {'mmengine':>9}  {'us/t':>6}  "
             f"{'groups':>6}  same lr/wd"]
    for r in section["rows"]:
        ours = f"{r['tensors']:8d}  {r['pet_s']:8.3f}  {1e6 * r['pet_s'] / r['tensors']:6.1f}  {r['pet_groups']:6d}"
        if r["mmengine_s"] is None:
            lines.append(f"{ours}  {r['mmengine_note']}")
        else:
            lines.append(f"{ours}  {r['mmengine_s']:9.3f}  {1e6 * r['mmengine_s'] / r['tensors']:6.1f}  "
                         f"{r['mmengine_groups']:6d}  {'yes' if r['same_hyperparameters'] else 'NO'}")
    return "\n".join(lines)
