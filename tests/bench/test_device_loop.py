"""The accelerator loop benchmark compares like with like (train_net's own builder against a bare
loop doing the same arithmetic), and a quick section on the CPU gives every case."""
import os

import pytest
import torch

from pet.bench.device_loop import (
    ADAMW, DEVICE_CASES, FULL_MODEL, SGD, BareDeviceLoop, SolverSteps, amp, bench_entries, case_cfg,
    device_loop_section, device_loop_targets, format_device_loop,
)
from pet.data import DATASETS
from pet.engine.hooks import MetricsWriter
from pet.engine.logger import close_logging
from pet.models import MODELS

CPU = torch.device("cpu")


# No weight decay: the solver's rules would exempt norms and biases, the bare loop's one group not.
NO_DECAY = ["SOLVER.OPTIMIZER.WEIGHT_DECAY", "0.0"]
# Clipping folded into the fused kernel's scale and torch's unscale-then-clip differ in the last
# bit; under autocast a last-bit weight difference can round an activation the other way (a
# bfloat16 step is 0.4%), so the runs drift apart by about 1e-5 in 10 steps: the weights moved
# by about 3e-3 meanwhile, so a tolerance of 1e-4 still tells a different job.
EXACT, AMP_CLIPPED = dict(rtol=1e-4, atol=1e-6), dict(rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("keys, tolerance", [
    (ADAMW + NO_DECAY, EXACT), (ADAMW + NO_DECAY + FULL_MODEL, EXACT),
    (SGD + NO_DECAY + amp("float16"), EXACT),
    (SGD + NO_DECAY + amp("float16") + FULL_MODEL, AMP_CLIPPED),
], ids=["adamw-float32", "adamw-full_model", "sgd-float16-gradscaler", "sgd-float16-gradscaler-full_model"])
def test_the_bare_loop_ends_with_the_weights_of_train_nets_loop(tmp_path, keys, tolerance):
    cfg = case_cfg("bench_stack_tiny", keys + ["NUM_THREADS", "1"], iterations=12, device=CPU, batch_size=8)
    threads = torch.get_num_threads()
    with open(os.devnull, "w") as null, bench_entries():
        try:
            solver = SolverSteps(cfg, str(tmp_path / "out"), null, CPU)
            bare = BareDeviceLoop(cfg, CPU)
            for _ in range(10):
                solver.step()
                bare.step()
        finally:
            close_logging()
            torch.set_num_threads(threads)
    assert any(isinstance(hook, MetricsWriter) for hook in solver.trainer.hooks)  # train_net's run
    ours, theirs = solver.trainer.model.state_dict(), bare.model.state_dict()
    assert ours.keys() == theirs.keys()
    for name, tensor in ours.items():
        torch.testing.assert_close(tensor, theirs[name], **tolerance, msg=name)


@pytest.mark.slow
def test_a_quick_section_on_the_cpu_gives_every_case():
    threads = torch.get_num_threads()
    section = device_loop_section(CPU, quick=True)
    assert torch.get_num_threads() == threads
    assert list(section) == list(DEVICE_CASES)
    for case in section.values():
        assert case["solver_ms"] > 0 and case["bare_ms"] > 0
        assert len(case["runs"]["solver"]) == len(case["runs"]["bare"]) == 2
    assert len(device_loop_targets(section)) == len(section)
    assert "bench_images" not in DATASETS and "bench_vit_tiny" not in MODELS  # nothing stays behind
    text = "\n".join(format_device_loop(section, CPU))
    assert all(name in text for name in section)
