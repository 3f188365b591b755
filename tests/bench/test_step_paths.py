"""The step-paths benchmark compares like with like: every case's bare loop ends with the
weights of train_net's loop where both do the same arithmetic, and a short run of the whole
section (the 2-process case spawned) gives every row, with one gradient all-reduce per bucket
and step, not one per micro-batch."""
import os

import pytest
import torch

from pet.bench.loop_benchmark import SOLVER_LOOP, run_in_lock_step
from pet.bench.step_paths import (
    BARE_LOOP, CASES, DISTRIBUTED_CASE, build_loops, case_cfg, format_step_paths,
    step_path_targets, step_paths_section,
)
from pet.engine.logger import close_logging
from pet.lib.config.defaults import get_cfg


def tiny_job():
    cfg = get_cfg()
    cfg.MODEL.CNN.CHANNELS = (4, 8, 8)
    cfg.MODEL.CNN.HIDDEN_DIM = 16
    # Dropout draws from the RNG the lock-stepped loops share; one param group for the solver
    # too (no decay rules), so both sides do the same arithmetic.
    cfg.MODEL.CNN.DROPOUT = 0.0
    cfg.SOLVER.OPTIMIZER.WEIGHT_DECAY = 0.0
    cfg.SOLVER.OPTIMIZER.MOMENTUM = 0.9
    return cfg


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_each_bare_loop_ends_with_the_weights_of_train_nets_loop(tmp_path, case):
    keys, bare_cls = CASES[case]
    cfg = case_cfg(tiny_job(), keys, 8)
    threads = torch.get_num_threads()
    with open(os.devnull, "w") as null:
        try:
            loops = build_loops(cfg, bare_cls, str(tmp_path / "out"), null)
            run_in_lock_step(list(loops.values()), 8)
        finally:
            close_logging()
            torch.set_num_threads(threads)
    solver = loops[SOLVER_LOOP].trainer.model.state_dict()
    bare = loops[BARE_LOOP].model.state_dict()
    assert solver.keys() == bare.keys()
    for name, tensor in solver.items():
        torch.testing.assert_close(tensor, bare[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.slow
def test_a_short_section_gives_every_row_and_counts_one_all_reduce_per_bucket():
    threads = torch.get_num_threads()
    section = step_paths_section(tiny_job(), repeats=1, iterations=4, distributed_iterations=20)
    assert torch.get_num_threads() == threads
    assert list(section) == list(CASES) + [DISTRIBUTED_CASE]
    for case in section.values():
        assert set(case["median_s"]) == {SOLVER_LOOP, BARE_LOOP}
        assert all(s > 0 for s in case["median_s"].values())
        assert all(ms > 0 for ms in case["ms_per_iteration"].values())
    counts = section[DISTRIBUTED_CASE]["all_reduces_per_step"]
    # The tiny model fits one bucket; k = 2 micro-batches still all-reduce once per step.
    # Other: the losses averaged on the logged iterations only (10: the evaluation half-way, and
    # 20) and the stop flag agreed every 10 iterations (at 10; the last needs none): 3 in 20.
    assert counts[SOLVER_LOOP] == dict(gradient=1.0, other=0.15)
    assert counts[BARE_LOOP] == dict(gradient=1.0, other=0.0)
    assert len(step_path_targets(section)) == len(section)
    text = "\n".join(format_step_paths(section))
    assert all(name in text for name in section)
