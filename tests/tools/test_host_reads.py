"""The steps that log nothing read no tensor value on the host (issue: the step on a GPU).

On a GPU every read of a tensor's value (``item``, ``tolist``, ``float()``, ``bool()``,
``numpy()``, ...) waits for the device to finish all queued work, so the host stops queuing the
next forward pass. The CPU shows the same reads without the wait: here real train_net runs
count every such call made by anything in the process (the trainer, the step seam, the hooks
and the torch internals they call, GradScaler's ``get_scale`` included). A run of 300 iterations
and one of 100 that both log, evaluate and checkpoint only at their end differ only by
iterations that show nothing: they must make the same number of reads.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tools.test_train_net import TINY_JOB, TRAIN_NET, write_cfg

pytestmark = pytest.mark.slow  # real training runs

# Runs train_net (argv[1:] per run, separated by "--") in this process with every tensor-value
# read counted; writes [reads of each run] to the file named first.
COUNTING_RUNNER = '''
import json, runpy, sys
import torch

READS = ("item", "tolist", "numpy", "__float__", "__int__", "__bool__", "__index__", "__complex__")
count = [0]

def counted(original):
    def read(self, *args, **kwargs):
        count[0] += 1
        return original(self, *args, **kwargs)
    return read

for name in READS:
    setattr(torch.Tensor, name, counted(getattr(torch.Tensor, name)))

out, train_net, *rest = sys.argv[1:]
runs, reads = [[]], []
for arg in rest:
    runs[-1].append(arg) if arg != "--" else runs.append([])
for argv in runs:
    before = count[0]
    sys.argv = [train_net, *argv]
    try:
        runpy.run_path(train_net, run_name="__main__")
    except SystemExit as e:
        assert not e.code, e.code
    reads.append(count[0] - before)
json.dump(reads, open(out, "w"))
'''


def reads_per_run(tmp_path: Path, overrides: list, lengths=(100, 300)) -> list:
    """Tensor-value reads of train_net runs of ``lengths`` iterations that log, evaluate and
    checkpoint only at their end."""
    job = dict(TINY_JOB, LOG_PERIOD=100000, TEST={"EVAL_ITERS": 0},
               SOLVER=dict(TINY_JOB["SOLVER"], SNAPSHOT_ITERS=0))
    cfg = write_cfg(tmp_path, job)
    runner = tmp_path / "count_reads.py"
    runner.write_text(COUNTING_RUNNER)
    argv = []
    for length in lengths:
        argv += ["--", "--cfg", str(cfg), "OUTPUT_DIR", f"run{length}",
                 "SOLVER.SCHEDULER.TOTAL_ITERS", length,
                 "SOLVER.SCHEDULER.STEPS", f"({length // 2}, {3 * length // 4})", *overrides]
    out = tmp_path / "reads.json"
    result = subprocess.run([sys.executable, str(runner), str(out), str(TRAIN_NET), *map(str, argv[1:])],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(out.read_text())


@pytest.mark.parametrize("overrides", [
    [],
    ["SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.DTYPE", "bfloat16"],
    ["SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.DTYPE", "float16"],
    ["SOLVER.ACCUMULATION_STEPS", "2", "SOLVER.SKIP_NONFINITE", "3", "MODEL.EMA.ENABLED", "True"],
    # Items read and shifted in DataLoader workers, handed over as numpy arrays.
    ["DATA.NUM_WORKERS", "2", "DATA.MAX_SHIFT", "1"],
], ids=["float32", "bfloat16", "float16-gradscaler", "accumulation-skip-ema", "workers-shifted"])
def test_iterations_that_log_nothing_read_no_tensor_value(tmp_path, overrides):
    short, long = reads_per_run(tmp_path, overrides)
    assert short > 0  # the counter sees the reads of the logged last iteration, evaluation, ...
    assert long - short == 0, f"{(long - short) / 200:.2f} reads per iteration that logs nothing"


def test_the_counter_sees_the_reads_of_an_optimizer_without_a_fused_kernel(tmp_path):
    """RMSprop has no fused kernel: the seam reads its non-finite flag once per step, as
    GradScaler does for such optimizers (the README names them)."""
    short, long = reads_per_run(tmp_path, ["SOLVER.OPTIMIZER.TYPE", "RMSPROP"])
    assert long - short == 200
