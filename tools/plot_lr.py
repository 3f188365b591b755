#!/usr/bin/env python
"""Plot the learning rate of every distinct param group over the whole schedule.

    python tools/plot_lr.py --cfg cfgs/x.yaml [--out lr_curve.png] [--csv lr.csv]
                            [--iter-per-epoch N] [--log] [KEY VALUE ...]

The lrs come from stepping the training LearningRateScheduler on the real model's Optimizer
(no data is loaded, nothing is trained). Groups with identical curves are drawn once, labeled by
their rules (default, bias, norm, embed, each possibly +backbone). The warm-up's end and the
milestones (of the policies that have them) are marked; ``--log`` draws the lr on a log scale;
a schedule that cycles the momentum (ONE_CYCLE, CYCLIC) gets a panel with it below, and each
hyper-parameter of SOLVER.SCHEDULER.PARAMS (e.g. weight_decay) one more. With SOLVER.OPTIMIZERS
each optimizer's curves (and panels) are drawn, their labels and columns starting with its name
(``generator:default``).

CSV columns: ``iteration``; ``epoch`` (iteration / iterations per epoch); then one column per
distinct curve, named ``lr:`` and its rules joined by "/" (e.g. ``lr:default/norm``,
``lr:bias+backbone``); then ``momentum`` and each scheduled key, when there are. Row i holds the
values iteration i trains with; the last row, i = max_iter, is where the schedule ends. A
schedule of more than MAX_POINTS (20,001) iterations is drawn, and written, at that many evenly
spread iterations plus its warm-up end and milestones (said in the title and the output line).
An output path that cannot be written is one line and exit 2, before anything is computed.
"""
import csv
import dataclasses
import os
import sys
import textwrap

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # files only: no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from pet.lib.config.cli import build_parser, exit_on_config_error, parse_cfg  # noqa: E402
from pet.engine.job import validate_job  # noqa: E402
from pet.reports.lr_curve import MAX_POINTS, distinct_curves, record_curves  # noqa: E402
from pet.lib.utils.param_groups import explain_params, grouping_spec  # noqa: E402
from pet.reports.param_report import group_rules  # noqa: E402
from pet.lib.config.cli import add_iter_per_epoch_argument, check_output_file, output_file_errors  # noqa: E402
from pet.models import build_model  # noqa: E402
from pet.engine.training_run import build_solver  # noqa: E402


def write_csv(path, curves, iter_per_epoch, others, iterations):
    """One row per iteration recorded: iteration, epoch, one lr per curve, then ``others``."""
    header = ["iteration", "epoch"] + [f"lr:{c.label}" for c in curves] + list(others)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        columns = [c.lrs for c in curves] + list(others.values())
        for iteration, values in zip(iterations, zip(*columns)):
            writer.writerow([iteration, repr(iteration / iter_per_epoch)] + [repr(v) for v in values])


def draw(path, curves, schedulers, iter_per_epoch, title, log_scale=False, others=None, iterations=None):
    """Save the curves as a PNG, with the warm-up ends and the milestones of ``schedulers``
    (one per optimizer) marked; each of ``others`` (the cycled momentum, the scheduled
    hyper-parameters) in a panel below."""
    others = others or {}
    max_iter = schedulers[0].max_iter  # the run's length, shared by its optimizers
    iterations = iterations if iterations is not None else range(max_iter + 1)
    # A fixed size in pixels (constrained layout, no tight bbox): the same PNG size for any config
    # with as many panels.
    fig, axes = plt.subplots(1 + len(others), 1, figsize=(8, 5 + len(others) // 2), dpi=100,
                             layout="constrained", sharex=True, height_ratios=(3, *[1] * len(others)),
                             squeeze=False)
    ax, panels = axes[0][0], [row[0] for row in axes[1:]]
    for panel, (name, values), color in zip(panels, others.items(), ("tab:purple", "tab:brown", "tab:olive")):
        panel.plot(iterations, values, color=color, linewidth=1.5)
        panel.set_ylabel(name)
        panel.grid(alpha=0.3)
    if log_scale:
        ax.set_yscale("log")
    for curve in curves:
        label = f"{curve.label.replace('/', ', ')} (max {max(curve.lrs):.3g})"
        ax.plot(iterations, curve.lrs, label=textwrap.fill(label, 60), linewidth=1.5)
    for warmup_iters in sorted({s.warmup_iters for s in schedulers if s.warmup_iters > 0}):
        ax.axvline(warmup_iters, color="gray", linestyle="--", linewidth=1, label=f"warm-up end ({warmup_iters})")
    for index, milestone in enumerate(sorted({m for s in schedulers for m in s.milestones})):
        ax.axvline(milestone, color="black", linestyle=":", linewidth=1,
                   label="milestones" if index == 0 else None)
    ax.set_xlim(0, max_iter)
    (panels[-1] if panels else ax).set_xlabel("iteration")
    ax.set_ylabel("learning rate")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    # Below the axes: inside, the legend would hide the top of some curve.
    fig.legend(fontsize=8, loc="outside lower center", ncols=2, frameon=False)
    epochs = ax.secondary_xaxis("top", functions=(lambda i: i / iter_per_epoch,
                                                  lambda e: e * iter_per_epoch))
    epochs.set_xlabel("epoch")
    fig.savefig(path)
    plt.close(fig)


def main(argv=None):
    parser = build_parser("Plot the learning rate of every param group over the whole schedule.")
    parser.add_argument("--out", default="lr_curve.png", metavar="PNG",
                        help="the plot (default: %(default)s in the working directory)")
    parser.add_argument("--csv", default=None, metavar="FILE", help="also write the lrs as CSV")
    parser.add_argument("--log", action="store_true", help="draw the lr on a log scale")
    add_iter_per_epoch_argument(parser)
    args, cfg = parse_cfg(parser, argv)
    with exit_on_config_error():
        check_output_file(args.out, "--out")
        if args.csv:
            check_output_file(args.csv, "--csv")
        iter_per_epoch = validate_job(cfg, args.iter_per_epoch)
        model = build_model(cfg)
        # Built and checked as train_net builds them; several: names before the labels.
        optimizers, solvers, _ = build_solver(cfg, model, torch.device("cpu"))
        records = {name: record_curves(optimizers[name], solvers[name], iter_per_epoch, MAX_POINTS)
                   for name in optimizers}
        iterations = sorted({i for record in records.values() for i in record[1]})
        if any(record[1] != iterations for record in records.values()):  # samples with other marks
            records = {name: record_curves(optimizers[name], solvers[name], iter_per_epoch, iterations=iterations)
                       for name in optimizers}
        curves, others = [], {}
        for name, (_, _, lrs, scheduled) in records.items():
            module = getattr(model, name) if name else model
            rules = group_rules(optimizers[name].param_groups,
                                explain_params(module, grouping_spec(solvers[name].OPTIMIZER)))
            prefix = f"{name}:" if name else ""
            curves += [dataclasses.replace(c, label=prefix + c.label) for c in distinct_curves(lrs, rules)]
            others.update({prefix + key: values for key, values in scheduled.items()})
        schedulers = [record[0] for record in records.values()]
        max_iter = schedulers[0].max_iter
        sampled = len(iterations) < max_iter + 1
        title = (f"{os.path.basename(args.cfg_file)}: "
                 + ", ".join(f"{name + ' ' if name else ''}{s.schedule.policy}, {type(optimizers[name]).__name__}"
                             for name, s in zip(records, schedulers))
                 + f", {max_iter} iterations" + (f" (drawn from {len(iterations)} sampled ones)" if sampled else ""))
        with output_file_errors(args.out, "--out"):
            draw(args.out, curves, schedulers, iter_per_epoch, title, args.log, others, iterations)
        print(f"wrote {args.out}: {len(curves)} lr curve(s) over iterations 0..{max_iter}"
              + (f", {len(iterations)} of them sampled" if sampled else ""))
        if args.csv:
            with output_file_errors(args.csv, "--csv"):
                write_csv(args.csv, curves, iter_per_epoch, others, iterations)
            print(f"wrote {args.csv}")


if __name__ == "__main__":
    main()
