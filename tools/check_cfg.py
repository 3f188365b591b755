#!/usr/bin/env python
"""Check a config before training: merge it, run every check train_net runs, print the result.

    python tools/check_cfg.py --cfg cfgs/x.yaml [--iter-per-epoch N] [KEY VALUE ...]

Prints the merged config (YAML, loadable with --cfg) and the quantities training derives from
it: iterations per epoch, max_iter, warm-up iterations and milestones in iterations (and in
epochs, for the policies that have milestones), then a warning for each key that was set but
that the run ignores (TOTAL_ITERS while TOTAL_EPOCHS is set, STEPS of a policy without
milestones, ...). Exit status 0 when the config is valid (warnings or not), 2 with one line on
stderr when it is not.

The solver is checked against the model as train_net checks it: the model, its optimizers,
step seams and schedules are built (on the CPU; nothing trains), so a CUSTOM_KEYS, FREEZE or
SOLVER.OPTIMIZERS name that matches nothing, a scheduled key the optimizer lacks or a
schedule a compiled step would recompile for are refused here too. Not checked: the data
files, OUTPUT_DIR, MODEL.WEIGHTS and the compiler (train_net checks them when it starts).
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pet.lib.config.cli import (build_parser, end_quietly_on_closed_pipe, exit_on_config_error,  # noqa: E402
                                parse_cfg)
from pet.engine.job import validate_job  # noqa: E402
from pet.engine.training_run import build_schedulers, build_solver  # noqa: E402
from pet.lib.config.validate import amount  # noqa: E402
from pet.lib.config.ignored_keys import ignored_scheduler_keys, replaced_keys  # noqa: E402
from pet.lib.utils.lr_scheduler import LR_POLICIES, build_schedule  # noqa: E402
from pet.lib.config.cli import add_iter_per_epoch_argument  # noqa: E402
from pet.lib.config.yaml_file import flatten  # noqa: E402
from pet.models import build_model  # noqa: E402


def derived_lines(cfg, schedule, iter_per_epoch, source):
    """The derived quantities, one ``name: value`` line each; lengths in iterations with their
    epochs alongside."""
    def in_epochs(iterations):
        return f"{amount(iterations, 'iteration')} = {amount(f'{iterations / iter_per_epoch:g}', 'epoch')}"

    scheduler = cfg.SOLVER.SCHEDULER
    unit = "epoch" if scheduler.TOTAL_EPOCHS is not None else "iteration"
    milestones = ", ".join(str(m) for m in schedule.milestones) or "none"
    milestone_epochs = ", ".join(f"{m / iter_per_epoch:g}" for m in schedule.milestones)
    lines = [
        f"iterations per epoch: {iter_per_epoch} ({source})",
        f"schedule: {schedule.policy}, {unit}-based",
        f"max_iter: {in_epochs(schedule.max_iter)}",
        f"warm-up: {in_epochs(schedule.warmup_iters)} "
        f"({schedule.warmup_method} from factor {schedule.warmup_factor:g})",
    ]
    if schedule.milestones:
        lines.append(f"milestones (iterations): {milestones}")
        lines.append(f"milestones (epochs): {milestone_epochs}")
    return lines


def warning_lines(cfg, schedule, solvers, schedulers):
    """One line per key that was set but that this run ignores. With SOLVER.OPTIMIZERS each
    optimizer's schedule (``schedulers`` and their ``solvers``, by name, as the run builds
    them) is checked: a key of its own SCHEDULER that its policy ignores, and a key of
    SOLVER.SCHEDULER that no optimizer's schedule reads (its policy ignores it, or the
    optimizer sets its own)."""
    lines = replaced_keys(cfg)
    main_found = scheduler_warnings(cfg.SOLVER.SCHEDULER, schedule, "SOLVER.SCHEDULER")
    if not cfg.SOLVER.OPTIMIZERS:
        return lines + [line for _, line in main_found]
    unread_everywhere = None
    for name, scheduler in schedulers.items():
        own = {key for key, _ in flatten(cfg.SOLVER.OPTIMIZERS[name].get("SCHEDULER", {}))}
        found = scheduler_warnings(solvers[name].SCHEDULER, scheduler.schedule,
                                   f"SOLVER.OPTIMIZERS.{name}.SCHEDULER")
        lines += [line for key, line in found if key in own]
        unread = {key for key, _ in found} | own  # ignored, or replaced by its own
        unread_everywhere = unread if unread_everywhere is None else unread_everywhere & unread
    return lines + [line for key, line in main_found if key in unread_everywhere]


def scheduler_warnings(scheduler, schedule, section):
    """(key, line) for the keys of ``scheduler`` (named ``section``) that ``schedule``'s
    policy ignores."""
    entry = LR_POLICIES.get(schedule.policy)
    return ignored_scheduler_keys(scheduler, schedule.policy, entry.uses_milestones, entry.uses_floor,
                                  schedule.warmup_iters, schedule.milestones, section)


def main(argv=None):
    parser = build_parser("Merge and check a config; print it and the quantities derived from it.")
    add_iter_per_epoch_argument(parser)
    end_quietly_on_closed_pipe()
    args, cfg = parse_cfg(parser, argv)
    with exit_on_config_error():
        iter_per_epoch = validate_job(cfg, args.iter_per_epoch)
        schedule = build_schedule(cfg.SOLVER.SCHEDULER, iter_per_epoch)
        optimizers, solvers, _ = build_solver(cfg, build_model(cfg), torch.device("cpu"))
        schedulers = build_schedulers(optimizers, solvers, 0, iter_per_epoch)
        warnings = warning_lines(cfg, schedule, solvers, schedulers)
    if args.iter_per_epoch:
        source = "--iter-per-epoch"
    else:
        source = f"data set {cfg.DATA.DATASET}, DATA.BATCH_SIZE {cfg.DATA.BATCH_SIZE}"
    overrides = f" + {len(args.opts) // 2} override(s)" if args.opts else ""
    print(f"# merged config: {args.cfg_file}{overrides}")
    print(cfg.dump(), end="")
    print("\n# derived")
    for line in derived_lines(cfg, schedule, iter_per_epoch, source):
        print(f"# {line}")
    for line in warnings:
        print(f"# warning: {line}")
    if warnings:
        print(f"# OK: the config is valid ({len(warnings)} warning(s): set but ignored)")
    else:
        print("# OK: the config is valid")


if __name__ == "__main__":
    main()
