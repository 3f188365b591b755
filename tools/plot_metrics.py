#!/usr/bin/env python
"""Draw the training loss, the held-out accuracy and the lr of one or several runs against the
iterations done (as the log counts them), to compare runs.

    python tools/plot_metrics.py --out curves.png ckpts/run_a ckpts/run_b

Reads each OUTPUT_DIR's metrics.json (the fields are documented in pet/engine/writers.py). A
directory without metrics.json, or with no metrics in it, exits with status 2 and one line.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # files only: no display on training machines
import matplotlib.pyplot as plt  # noqa: E402

from pet.lib.config.cli import check_output_file, output_file_errors  # noqa: E402
from pet.lib.config.errors import ConfigError  # noqa: E402

EXIT_BAD_INPUT = 2
METRICS_FILE = "metrics.json"  # pet.engine.writers.JSON_FILE (read without importing torch)


def read_records(output_dir: str) -> list:
    """The complete records of ``output_dir/metrics.json``; ValueError with one line when there
    are none."""
    path = os.path.join(output_dir, METRICS_FILE)
    if not os.path.isfile(path):
        raise ValueError(f"{output_dir}: no {METRICS_FILE} (not the OUTPUT_DIR of a training run?)")
    records = []
    try:
        with open(path, errors="replace") as f:  # undecodable bytes: a damaged line, skipped
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a kill
                    continue
                if isinstance(record, dict) and "iteration" in record:
                    records.append(record)
    except OSError as e:
        raise ValueError(f"{path}: cannot be read ({e.strerror or type(e).__name__})") from None
    if not records:
        raise ValueError(f"{output_dir}: {METRICS_FILE} holds no metrics yet")
    return records


def series(records: list, field: str) -> tuple:
    """(iterations done, values) of the records that have ``field``."""
    points = [(r.get("iterations_done", r["iteration"] + 1), r[field]) for r in records if field in r]
    return [x for x, _ in points], [y for _, y in points]


def plot_runs(runs: dict, out: str) -> None:
    """Three panels (loss, accuracy, lr) with one line per run of ``runs`` {label: records}."""
    figure, (loss_ax, accuracy_ax, lr_ax) = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    for label, records in runs.items():
        field = "loss_smoothed" if any("loss_smoothed" in r for r in records) else "loss"
        loss_ax.plot(*series(records, field), label=label)
        accuracy_ax.plot(*series(records, "accuracy"), marker="o", label=label)
        if any("ema_accuracy" in r for r in records):
            accuracy_ax.plot(*series(records, "ema_accuracy"), marker="x", linestyle="--",
                             label=f"{label} (EMA)")
        lr_ax.plot(*series(records, "lr"), label=label)
    loss_ax.set_ylabel("training loss (smoothed)")
    accuracy_ax.set_ylabel("held-out accuracy (%)")
    lr_ax.set_ylabel("lr (largest param group)")
    lr_ax.set_xlabel("iterations done")
    for ax in (loss_ax, accuracy_ax, lr_ax):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(out, dpi=100)
    plt.close(figure)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, metavar="PNG", help="the image to write")
    parser.add_argument("output_dirs", nargs="+", metavar="OUTPUT_DIR", help="training runs")
    args = parser.parse_args(argv)
    runs = {}
    try:
        check_output_file(args.out, "--out")
        for output_dir in args.output_dirs:
            label = os.path.basename(os.path.normpath(output_dir)) or output_dir
            while label in runs:  # two runs of the same name from different places
                label += "'"
            runs[label] = read_records(output_dir)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        with output_file_errors(args.out, "--out"):
            plot_runs(runs, args.out)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"wrote {args.out} ({len(runs)} run(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
