"""The fsdp section of the benchmark runs end to end on 2 spawned gloo processes and reports
every figure it promises (measurements: only their presence and the memory's halving, which is
arithmetic, are checked, never a speed)."""
import math

import pytest

from pet.bench.fsdp_benchmark import fsdp_section, format_fsdp

pytestmark = pytest.mark.slow  # two spawned processes, four short train_net runs: seconds


def test_the_fsdp_section_halves_each_part_of_the_state_and_times_both_loops():
    section = fsdp_section(quick=True)
    for strategy in ("ddp", "fsdp"):
        parts = section["memory"][strategy]
        assert parts["total"] == parts["parameters"] + parts["gradients"] + parts["optimizer_state"]
        assert min(parts.values()) > 0
    # Each process holds about half of every part (uneven rows of small tensors add a little).
    assert all(0.5 <= ratio < 0.53 for ratio in section["memory_ratio"].values()), section["memory_ratio"]
    # AdamW: two moments per parameter.
    assert section["memory"]["ddp"]["optimizer_state"] >= 2 * section["memory"]["ddp"]["parameters"]
    assert len(section["runs"]) == 1 and math.isfinite(section["overhead"])
    assert all(ms > 0 for ms in section["ms_per_iteration"].values())
    lines = format_fsdp(section)
    assert lines[0].startswith("fsdp on 2 processes") and "overhead" in lines[-1]
