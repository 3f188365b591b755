#!/usr/bin/env python
"""How fast is the solver's optimizer step? Side by side with torch's fused single-group step.

    python tools/benchmark_solver.py --cfg cfgs/digits_cnn_sgd_step.yaml [--quick]
                                     [--device cpu|cuda] [--json FILE] [KEY VALUE ...]

1. For a ViT-S-like model (22M parameters, 152 tensors) and a ResNet-18-like CNN, for AdamW and
   SGD, one run times on the same tensors: torch's fused single-group step (the reference,
   1.00x); the solver-built optimizer (grouping rules on, IMPLEMENTATION from the config)
   without and with each clip type; torch's clip_grad_norm_ followed by the fused step.
2. The layout of the older solvers, one param group per tensor, with the fused kernel and with
   torch's default kernel (the baseline to beat); and, for RMSprop (no fused kernel), the
   foreach and loop kernels that IMPLEMENTATION=auto chooses between.
3. Each row's achieved bandwidth (the least bytes its step must move / time) against the
   machine's copy bandwidth.
4. The scheduler's step() cost, and the whole training loop of the job of ``--cfg`` built as
   tools/train_net.py builds it against bare PyTorch loops doing the same job, run in
   lock-step with it (see pet.bench.loop_benchmark); a job of more than MAX_LOOP_ITERATIONS
   (5000) is cut to that many, so a valid but huge schedule still gives a result.
5. On an accelerator (``--device cuda``): train_net's step against a bare hand-written loop on
   ViT-S/16 at 224 px, batch 128 (AdamW + bfloat16 + full_model, AdamW + float16 + GradScaler +
   full_model, SGD + bfloat16, float32) and on a 403M-parameter stack whose step is bytes-bound,
   interleaved rounds with the device's work included (see pet.bench.device_loop).
6. With ``--step-paths`` (CPU): train_net's loop against a bare hand-written loop, in lock-step,
   on that job cut short, for bfloat16 autocast, float16 with GradScaler and full_model
   clipping, k = 4 accumulation, and 2 processes (gloo, k = 2) with the all-reduces per step
   counted (see pet.bench.step_paths).
7. With ``--build-cost``: the optimizer's build time for models of 1k, 10k and 100k parameter
   tensors, side by side with MMEngine's DefaultOptimWrapperConstructor when it is installed
   (``pip install --no-deps -r requirements-bench.txt``; see pet.bench.build_benchmark).
8. With ``--data-loader``: the training loader's images/s against a plain torch DataLoader
   (same data set, same workers) on the image folder on disk and the in-memory digits, and
   train_net's wait for data with and without workers (see pet.bench.data_benchmark).

The timed solver uses the config's SOLVER.OPTIMIZER with BENCH_OVERRIDES, so that several param
groups exist. ``--quick`` runs tiny models, a 30-iteration job and few repeats: a smoke test,
not a measurement. Every figure is a median over repeats after a warm-up; the background load
(cores other processes kept busy meanwhile) says whether the machine was quiet.
"""
import json
import os
import re
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from pet.lib.config.cli import (  # noqa: E402
    build_parser, check_output_file, exit_on_config_error, output_file_errors, parse_cfg,
)
from pet.lib.config.loader import merge_from_list  # noqa: E402
from pet.engine.job import validate_job  # noqa: E402
from pet.engine.device import resolve_device  # noqa: E402
from pet.lib.config.errors import ConfigError  # noqa: E402
from pet.bench.models import ResNet, VisionTransformer  # noqa: E402
from pet.bench.report import format_report, machine_info, targets  # noqa: E402
from pet.bench.loop_benchmark import SOLVER_LOOP, job_iterations, time_compiled_job, time_job  # noqa: E402
from pet.bench.step_paths import short_job, step_paths_section  # noqa: E402
from pet.bench.device_loop import device_loop_section  # noqa: E402
from pet.bench.build_benchmark import build_cost_section, format_build_cost  # noqa: E402
from pet.bench.data_benchmark import data_loader_section, format_data_loader  # noqa: E402
from pet.bench.fsdp_benchmark import format_fsdp, fsdp_section  # noqa: E402
from tools.write_image_folder import write_image_folder  # noqa: E402
from pet.lib.utils.compiled_step import compiled_step  # noqa: E402
from pet.lib.utils.lr_scheduler import LearningRateScheduler  # noqa: E402
from pet.lib.utils.optimizer import OPTIMIZERS, Optimizer, optimizer_spec  # noqa: E402
from pet.bench.step_benchmark import (  # noqa: E402
    BackgroundLoad, Candidate, copy_bandwidth, fill_gradients, per_tensor_groups,
    restore_gradients, share_state, step_bytes, time_side_by_side,
)

OPTIMIZER_TYPES = ("ADAMW", "SGD")
CLIP_TYPES = ("value", "norm", "full_model")
# Several groups: backbone default/bias/no-decay and head default/bias (5 for the ViT).
BENCH_OVERRIDES = dict(BACKBONE_LR_FACTOR=0.1, BIAS_LR_FACTOR=2.0, MOMENTUM=0.9)
CLIP_VALUE = 1.0  # bites on standard-normal gradients for every clip type
REFERENCE = "torch fused, 1 group"
BASELINE = "1 group/tensor, torch default"
# The training-loop section times the job of --cfg up to this many iterations (a longer one is
# cut to this length, with its warm-up, a step and evaluations: see step_paths.short_job).
MAX_LOOP_ITERATIONS = 5000
# --quick's job: 30 iterations, with an lr step, a warm-up, evaluations and checkpoints.
QUICK_JOB = ["SOLVER.SCHEDULER.TOTAL_EPOCHS", "None", "SOLVER.SCHEDULER.TOTAL_ITERS", "30",
             "SOLVER.SCHEDULER.STEPS", "(20,)", "SOLVER.SCHEDULER.WARM_UP_EPOCHS", "None",
             "SOLVER.SCHEDULER.WARM_UP_ITERS", "5", "SOLVER.SNAPSHOT_EPOCHS", "None",
             "SOLVER.SNAPSHOT_ITERS", "10", "TEST.EVAL_EPOCHS", "None", "TEST.EVAL_ITERS", "10"]


def bench_models(quick: bool):
    """name -> model: ViT-S/16 and ResNet-18 shapes, or tiny stand-ins with ``quick``."""
    if quick:
        return {
            "vit_tiny": VisionTransformer(image_size=32, patch_size=8, dim=32, depth=2,
                                          num_heads=2, num_classes=10),
            "resnet_tiny": ResNet(width=8, blocks_per_stage=(1, 1), num_classes=10),
        }
    return {"vit_s": VisionTransformer(), "resnet18": ResNet()}


def solver_optimizer_cfg(cfg, optimizer_type, clip_type=None, implementation=None):
    """``cfg.SOLVER.OPTIMIZER`` for one row: the type, BENCH_OVERRIDES and the clip."""
    opt = cfg.SOLVER.OPTIMIZER.clone()
    opt.TYPE = optimizer_type
    for key, value in BENCH_OVERRIDES.items():
        opt[key] = value
    if implementation is not None:
        opt.IMPLEMENTATION = implementation
    opt.CLIP_GRADIENTS.ENABLED = clip_type is not None
    if clip_type is not None:
        opt.CLIP_GRADIENTS.CLIP_TYPE = clip_type
        opt.CLIP_GRADIENTS.CLIP_VALUE = CLIP_VALUE
    return opt


def step_candidates(model, cfg, optimizer_type, compiled=False):
    """row name -> Candidate, all over ``model``'s parameter tensors; with ``compiled``, also
    the solver's step compiled (SOLVER.OPTIMIZER.COMPILE), unclipped and with each clip."""
    opt_cfg = solver_optimizer_cfg(cfg, optimizer_type)
    info = OPTIMIZERS.get(optimizer_type)
    hyper = dict(optimizer_spec(opt_cfg).options, lr=opt_cfg.BASE_LR, weight_decay=opt_cfg.WEIGHT_DECAY)
    params = list(model.parameters())
    clip_then_fused = info.cls(params, fused=True, **hyper)

    def torch_clip_then_fused():
        torch.nn.utils.clip_grad_norm_(params, CLIP_VALUE, foreach=True)
        clip_then_fused.step()

    rows = {REFERENCE: Candidate(info.cls(params, fused=True, **hyper)),
            "solver": Candidate(Optimizer(model, opt_cfg).build())}
    for clip_type in CLIP_TYPES:
        solver = Optimizer(model, solver_optimizer_cfg(cfg, optimizer_type, clip_type)).build()
        rows[f"solver + {clip_type}"] = Candidate(solver, clip_type=clip_type)
    rows["torch clip_grad_norm_ + fused"] = Candidate(clip_then_fused, torch_clip_then_fused,
                                                      "full_model")
    groups = per_tensor_groups(model, opt_cfg)
    rows["1 group/tensor, fused"] = Candidate(info.cls(groups, fused=True, **hyper))
    rows[BASELINE] = Candidate(info.cls(per_tensor_groups(model, opt_cfg), **hyper))
    if compiled:
        for clip_type in (None, *CLIP_TYPES):
            opt = solver_optimizer_cfg(cfg, optimizer_type, clip_type)
            opt.COMPILE = True
            solver = Optimizer(model, opt).build()
            name = "solver, compiled step" + (f" + {clip_type}" if clip_type else "")
            rows[name] = Candidate(solver, compiled_step(solver), clip_type=clip_type)
    return rows


def kernel_choice_candidates(model, cfg):
    """RMSprop, which has no fused kernel: the two kernels auto chooses between, and auto."""
    return {f"RMSPROP {impl}":
            Candidate(Optimizer(model, solver_optimizer_cfg(cfg, "RMSPROP", None, impl)).build())
            for impl in ("foreach", "loop", "auto")}


def synchronized(step, device):
    """``step`` followed by a device sync, so the timer sees the kernels finish."""
    if device.type != "cuda":
        return step
    return lambda: (step(), torch.cuda.synchronize())


def time_rows(model, candidates, optimizer_type, reference, bandwidth, warmup, repeats):
    """Time ``candidates`` (name -> Candidate) side by side, all on the same parameter,
    gradient and state tensors: {"reference": the row the ratios divide by, "rows": one dict
    per candidate}."""
    saved = fill_gradients(model)
    device = next(model.parameters()).device
    for candidate in candidates.values():  # creates each optimizer's state
        candidate.step()
    share_state(candidates[reference].optimizer, [c.optimizer for c in candidates.values()])
    timings = time_side_by_side(
        {name: synchronized(c.step, device) for name, c in candidates.items()},
        lambda: restore_gradients(model, saved), warmup, repeats)
    params = list(model.parameters())
    numel, element_size = sum(p.numel() for p in params), params[0].element_size()
    rows = []
    for name, candidate in candidates.items():
        ms = timings[name].median_ms
        moved = step_bytes(numel, element_size, optimizer_type, BENCH_OVERRIDES["MOMENTUM"],
                           candidate.clip_type)
        rows.append(dict(name=name, ms=ms, ratio=ms / timings[reference].median_ms, bytes=moved,
                         gb_per_s=moved / ms / 1e6, of_copy=moved / ms * 1e3 / bandwidth,
                         all_ms=[round(t * 1e3, 3) for t in timings[name].seconds]))
    return dict(reference=reference, rows=rows)


def scheduler_step_cost(model, cfg, calls):
    """Microseconds per ``LearningRateScheduler.step()`` on the solver-built optimizer."""
    optimizer = Optimizer(model, solver_optimizer_cfg(cfg, "ADAMW")).build()
    scheduler = LearningRateScheduler(optimizer, cfg.SOLVER, iter_per_epoch=1)
    fill_gradients(model)
    optimizer.step()  # else torch warns of a scheduler stepped before its optimizer
    start = time.perf_counter()
    for _ in range(calls):
        scheduler.step()
    return (time.perf_counter() - start) / calls * 1e6


def model_section(model, cfg, bandwidth, warmup, repeats, kernel_choice, compiled=False):
    """Everything measured on one model."""
    params = list(model.parameters())
    section = dict(params=sum(p.numel() for p in params), tensors=len(params),
                   groups=len(Optimizer(model, solver_optimizer_cfg(cfg, "ADAMW")).get_params()),
                   steps={})
    for optimizer_type in OPTIMIZER_TYPES:
        section["steps"][optimizer_type] = time_rows(
            model, step_candidates(model, cfg, optimizer_type, compiled), optimizer_type, REFERENCE,
            bandwidth, warmup, repeats)
    if kernel_choice:
        section["steps"]["RMSPROP"] = time_rows(
            model, kernel_choice_candidates(model, cfg), "RMSPROP", "RMSPROP loop",
            bandwidth, warmup, repeats)
    return section


def loop_section(cfg, repeats):
    """Item 4: the whole job of ``cfg`` through train_net's path against bare loops doing the
    same job, run in lock-step with it; the overhead over each bare loop from median seconds,
    and over its training alone (its evaluations' seconds taken off: informative only)."""
    runs = [time_job(cfg) for _ in range(repeats)]

    def median(name, key):
        return statistics.median(run[name][key] for run in runs)

    medians = {name: median(name, "seconds") for name in runs[0]}
    eval_medians = {name: median(name, "eval_seconds") for name in runs[0] if name != SOLVER_LOOP}
    solver = medians[SOLVER_LOOP]
    overhead = {name: solver / medians[name] - 1.0 for name in eval_medians}
    overhead_over_training = {name: solver / (medians[name] - eval_s) - 1.0
                              for name, eval_s in eval_medians.items()}
    return dict(iterations=job_iterations(cfg), repeats=repeats, runs=runs, median_s=medians,
                eval_median_s=eval_medians, overhead=overhead,
                overhead_over_training_alone=overhead_over_training)


def loop_job(cfg, quick):
    """The job the training-loop section times: --quick's, or ``cfg``'s cut to
    MAX_LOOP_ITERATIONS (a valid schedule of days still gives a result in minutes)."""
    job = cfg.clone()
    if quick:
        merge_from_list(job, QUICK_JOB)
    elif job_iterations(job) > MAX_LOOP_ITERATIONS:
        merge_from_list(job, short_job(MAX_LOOP_ITERATIONS))
    return job


def run(cfg, quick, device, step_paths=False, build_cost=False, data_loader=False, compiled_step=False):
    """Every measurement of the benchmark, as one JSON-able dict."""
    warmup, repeats = (1, 3) if quick else (3, 21)
    if quick:
        # A smoke test's figures mean nothing; one thread keeps it fast on a busy machine,
        # where a two-thread kernel waits at its barrier for a descheduled thread.
        torch.set_num_threads(1)
    torch.manual_seed(0)
    models = {name: m.to(device) for name, m in bench_models(quick).items()}
    largest = max(sum(p.numel() for p in m.parameters()) for m in models.values())
    with BackgroundLoad() as load:
        bandwidth = copy_bandwidth(4 * largest, repeats, device)
        result = dict(machine=machine_info(device), quick=quick, repeats=repeats, warmup=warmup,
                      copy_gb_per_s=bandwidth / 1e9, clip_value=CLIP_VALUE,
                      bench_overrides=BENCH_OVERRIDES, models={})
        for index, (name, model) in enumerate(models.items()):
            result["models"][name] = model_section(model, cfg, bandwidth, warmup, repeats, compiled=compiled_step,
                                                   kernel_choice=index == 0)
        result["scheduler_step_us"] = scheduler_step_cost(next(iter(models.values())), cfg,
                                                          200 if quick else 2000)
    result["background_cores"] = load.cores
    if device.type == "cpu":
        job = loop_job(cfg, quick)
        with BackgroundLoad() as load:
            result["training_loop"] = loop_section(job, 1 if quick else 5)
        result["training_loop"]["background_cores"] = load.cores
        if step_paths:
            with BackgroundLoad() as load:
                # 3 jobs of each case (pet.bench.step_paths.JOB_SECONDS): about 5 minutes.
                result["step_paths"] = (step_paths_section(cfg, 1, 4, 4) if quick
                                        else step_paths_section(cfg, repeats=3))
            result["step_paths"]["background_cores"] = load.cores
    if build_cost:
        result["build_cost"] = build_cost_section(quick)
    if compiled_step and device.type == "cpu":
        # MODEL.COMPILE: the job's loop eager and compiled, the compilation apart.
        result["compiled_loop"] = time_compiled_job(loop_job(cfg, quick))
    if data_loader:
        # The digits written as image files, as the "your own data on disk" example reads them.
        result["data_loader"] = data_loader_section(quick, lambda out: write_image_folder(out, 0.2, 0))
    if device.type != "cpu":
        # train_net's step against a bare loop on the accelerator: about 3 minutes on an H200.
        result["device_loop"] = device_loop_section(device, quick)
    result["targets"] = targets(result, REFERENCE, BASELINE)
    return result


def benchmark_device(name: str) -> torch.device:
    """The device of ``--device`` (auto, cpu, cuda, cuda:N, as MODEL.DEVICE); ConfigError
    naming the flag when this machine has no such device."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", name):
        raise ConfigError(f"--device: unknown value {name!r}; allowed: auto, cpu, cuda, cuda:N")
    try:
        return resolve_device(name)
    except ConfigError as e:
        raise ConfigError(str(e).replace("MODEL.DEVICE", "--device", 1)) from None


def main(argv=None):
    parser = build_parser(__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true",
                        help="tiny models, a short job and few repeats: a smoke test")
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or auto")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON here")
    parser.add_argument("--step-paths", action="store_true",
                        help="also time train_net's AMP, accumulation and 2-process loops "
                             "against bare loops (CPU, about 5 minutes)")
    parser.add_argument("--build-cost", action="store_true",
                        help="also time the optimizer's build at 1k, 10k and 100k tensors, with "
                             "MMEngine's constructor when installed (about 5 minutes with it)")
    parser.add_argument("--data-loader", action="store_true",
                        help="also time the data loader against a plain DataLoader and train_net's "
                             "wait for data (about a minute)")
    parser.add_argument("--fsdp", action="store_true",
                        help="also measure SOLVER.DISTRIBUTED.STRATEGY fsdp on 2 processes: per-process "
                             "memory against ddp, train_net's loop against a bare FSDP2 loop (about "
                             "a minute)")
    parser.add_argument("--compiled-step", action="store_true",
                        help="also time the solver's step compiled (SOLVER.OPTIMIZER.COMPILE), "
                             "unclipped and with each clip, and the job's loop with MODEL.COMPILE "
                             "(minutes of compilation on a CPU)")
    args, cfg = parse_cfg(parser, argv)
    with exit_on_config_error():
        validate_job(cfg)
        device = benchmark_device(args.device)
        if args.json:
            check_output_file(args.json, "--json")
    result = run(cfg, args.quick, device, args.step_paths, args.build_cost, args.data_loader, args.compiled_step)
    print(format_report(result))
    if "build_cost" in result:
        print("\n" + format_build_cost(result["build_cost"]))
    if "data_loader" in result:
        print("\n" + format_data_loader(result["data_loader"]))
    if args.fsdp:
        result["fsdp"] = fsdp_section(args.quick)
        print("\n" + "\n".join(format_fsdp(result["fsdp"])))
    if "compiled_loop" in result:
        loops = result["compiled_loop"]
        print("\ntrain_net's loop of the job, eager and with MODEL.COMPILE (lock-step): " + "; ".join(
            f"{name} {t['seconds']:.2f} s after a first iteration of {t['first_seconds']:.2f} s"
            for name, t in loops.items()))
    if args.json:
        with exit_on_config_error(), output_file_errors(args.json, "--json"), open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
