"""The README's Python example runs as written, from the repository root."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow  # runs the example in a subprocess


def test_the_python_example_runs_as_written():
    example = re.search(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S).group(1)
    assert "Optimizer(model, cfg.SOLVER.OPTIMIZER).build()" in example
    # The same code on a 3-epoch schedule (the example's own is 30 epochs: too long for a test).
    short = '"SOLVER.SCHEDULER.TOTAL_EPOCHS", "3", "SOLVER.SCHEDULER.STEPS", "(2,)"]'
    code = "import torch; torch.set_num_threads(1)\n" + example.replace('"0.05"]', '"0.05", ' + short)
    code += "\nprint(scheduler.iteration)\n"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["132"]  # the whole schedule ran: 3 epochs of 44 iterations
