#!/usr/bin/env python
"""Show what the optimizer does to every parameter of the configured model, before training.

    python tools/explain_solver.py --cfg cfgs/x.yaml [--json] [--strict] [KEY VALUE ...]

For every parameter: its name, shape, the rule that fired (default, bias, norm, embed, dwconv,
flat, custom[KEY], a user's rule, or builder:NAME for a registered param-groups builder; or
frozen) followed by the modifiers that changed its values (+backbone, +layer_decay[block N],
+global, +muon/+adamw), its lr at the top of the schedule, its weight decay and its param group; then one line per param group (tensors and elements), then
warnings for the classic mistakes: a normalization layer the rules do not recognize, and a
bias- or scale-like parameter left in the default rule with weight decay.

With SOLVER.OPTIMIZERS, one such report per optimizer over its submodule (names in full).

Exit status: 0, or 1 with ``--strict`` when there is a warning, or 2 on a bad config.
``--json`` prints one JSON document {"optimizer", "params", "groups", "warnings"} instead
({"optimizers": {name: such a document}} with SOLVER.OPTIMIZERS).
"""
import dataclasses
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pet.lib.config.cli import (build_parser, end_quietly_on_closed_pipe, exit_on_config_error,  # noqa: E402
                                parse_cfg)
from pet.engine.job import validate_job  # noqa: E402
from pet.engine.training_run import build_schedulers, build_solver  # noqa: E402
from pet.lib.utils.optimizer import optimizer_spec  # noqa: E402
from pet.lib.utils.param_groups import assignments_of_groups, explain_params  # noqa: E402
from pet.reports.param_report import FROZEN, group_rows, grouping_warnings, param_rows  # noqa: E402
from pet.models import build_model  # noqa: E402

EXIT_WARNINGS = 1


def format_table(header, rows):
    """Left-aligned columns, each as wide as its widest cell."""
    cells = [[str(c) for c in header]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(row[k]) for row in cells) for k in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def _cell(value):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def print_text(optimizer_name, params, groups, warnings):
    print(format_table(
        ("parameter", "shape", "rule", "lr", "weight_decay", "group"),
        [(p.name, p.shape, p.rule, p.lr, p.weight_decay, p.group) for p in params],
    ))
    print(f"\n{len(groups)} param group(s) of {optimizer_name}:")
    print(format_table(
        ("group", "lr", "weight_decay", "rules", "tensors", "elements"),
        [(g.index, g.lr, g.weight_decay, "/".join(g.rules), g.tensors, g.elements) for g in groups],
    ))
    frozen = [p for p in params if p.rule == FROZEN]
    if frozen:
        print(f"\n{len(frozen)} frozen parameter(s) (requires_grad=False) are not optimized.")
    print(f"\n{len(warnings)} warning(s)" + (":" if warnings else "."))
    for warning in warnings:
        print(f"WARNING: {warning}")


def explain(model, optimizer, optimizer_cfg, prefix=""):
    """{"optimizer", "params", "groups", "warnings"} of ``optimizer`` (built from
    ``optimizer_cfg``) over ``model``; the parameter names (and the warnings') start with
    ``prefix``."""
    spec = optimizer_spec(optimizer_cfg)
    if spec.builder == "default":
        assignments = explain_params(model, spec.grouping)
    else:
        assignments = assignments_of_groups(model, optimizer.param_groups, f"builder:{spec.builder}")
    params = [dataclasses.replace(p, name=prefix + p.name)
              for p in param_rows(model, assignments, optimizer.param_groups)]
    warnings = [prefix + w if prefix else w for w in grouping_warnings(model, assignments)]
    return {"optimizer": type(optimizer).__name__, "params": params,
            "groups": group_rows(optimizer.param_groups, assignments), "warnings": warnings}


def main(argv=None):
    parser = build_parser("Show the rule, lr, weight decay and param group of every parameter.")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--strict", action="store_true", help="exit 1 when there is a warning")
    end_quietly_on_closed_pipe()
    args, cfg = parse_cfg(parser, argv)
    with exit_on_config_error():
        iter_per_epoch = validate_job(cfg)
        model = build_model(cfg)
        # Several optimizers: one report each, over its top-level submodule (freezes FREEZE's
        # parameters first, as the build does). Built and checked as train_net builds them.
        optimizers, solvers, _ = build_solver(cfg, model, torch.device("cpu"))
        build_schedulers(optimizers, solvers, 0, iter_per_epoch)
        reports = {name: explain(getattr(model, name) if name else model, optimizer, solvers[name].OPTIMIZER,
                                 f"{name}." if name else "")
                   for name, optimizer in optimizers.items()}
    if args.json:
        documents = {name: dict(report, params=[dataclasses.asdict(p) for p in report["params"]],
                                groups=[dataclasses.asdict(g) for g in report["groups"]])
                     for name, report in reports.items()}
        print(json.dumps(documents[""] if "" in documents else {"optimizers": documents}, indent=1))
    else:
        for name, report in reports.items():
            if name:
                print(f"== SOLVER.OPTIMIZERS.{name} ({report['optimizer']}) ==")
            print_text(report["optimizer"], report["params"], report["groups"], report["warnings"])
            if name:
                print()
    if args.strict and any(report["warnings"] for report in reports.values()):
        sys.exit(EXIT_WARNINGS)


if __name__ == "__main__":
    main()
