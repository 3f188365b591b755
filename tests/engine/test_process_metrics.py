"""Per-process metrics: averaged over a real 2-process gloo group on logged iterations only,
and the history carried through checkpoints."""
import io
import math
import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pet.engine.distributed import mean_over_processes
from pet.engine.events import MetricsStorage
from pet.engine.process_metrics import AverageOverProcesses


def test_history_survives_a_weights_only_checkpoint_round_trip():
    storage = MetricsStorage()
    for it, loss in enumerate([3.0, 1.0, 2.0, 5.0]):
        storage.begin_iteration(it)
        storage.put_scalar("loss", loss)
        storage.put_scalar("lr", 0.1, smoothing_hint=False)
    buffer = io.BytesIO()
    torch.save(storage.state_dict(), buffer)
    buffer.seek(0)
    resumed = MetricsStorage(4)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.median("loss", 20) == 2.5 == storage.median("loss", 20)
    assert resumed.median("loss", 2) == 3.5
    with pytest.raises(KeyError):
        resumed.median("lr", 20)  # not a smoothed scalar: no history kept
    with pytest.raises(KeyError, match="history"):
        resumed.load_state_dict({})


def test_a_single_process_storage_never_synchronizes():
    storage = MetricsStorage()  # no mean_over_processes: nothing is pending
    storage.put_scalar("loss", 1.0, per_process=True)
    storage.synchronize()
    assert storage.latest() == {"loss": 1.0}
    assert mean_over_processes([1.0, 2.0], torch.device("cpu")) == [1.0, 2.0]  # no group


@pytest.mark.parametrize("also_recorded, stops", [
    ({"grad_norm": 7.0}, True),  # a measured finite step
    ({}, True),  # a step checked for finiteness only: it was finite
    ({"grad_norm": math.nan}, False),  # the step seam skipped it for its gradients
    ({"loss_scale": 1024.0}, False),  # the GradScaler judges float16 steps
], ids=["measured", "not-measured", "skipped", "float16"])
def test_a_non_finite_logged_loss_stops_only_when_the_gradients_were_finite(also_recorded, stops):
    storage = MetricsStorage()
    hook = AverageOverProcesses(period=1, max_iter=5)
    storage.begin_iteration(2)
    storage.put_scalar("loss", math.inf, per_process=True)
    for name, value in also_recorded.items():
        storage.put_scalar(name, value, smoothing_hint=False)
    if stops:
        with pytest.raises(FloatingPointError, match=r"^loss became inf at iteration 2 "):
            hook.after_step(storage)
    else:
        hook.after_step(storage)


def _worker(rank: int, init_file: str, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        storage = MetricsStorage(mean_over_processes=lambda v: mean_over_processes(v, torch.device("cpu")))
        hook = AverageOverProcesses(period=3, max_iter=7)
        seen = []
        for it in range(7):
            storage.begin_iteration(it)
            storage.put_scalar("loss", 10.0 * it + rank, per_process=True)  # the mean: 10 it + 0.5
            storage.put_scalar("grad_norm", 7.0, smoothing_hint=False)
            hook.after_step(storage)
            seen.append(storage.latest()["loss"])
            if it == 3:
                saved = storage.state_dict()  # every process saves at once, as checkpoints do
        results[rank] = (seen, saved["history"]["loss"], storage.median("loss", 100))
        storage.begin_iteration(7)
        storage.put_scalar("loss", math.nan if rank else 1.0, per_process=True)
        storage.put_scalar("grad_norm", math.nan, smoothing_hint=False)  # a skipped step
        hook.after_step(storage)  # the step seam already judged it: no error
        storage.put_scalar("loss", math.nan if rank else 1.0, per_process=True)
        storage.put_scalar("grad_norm", 7.0, smoothing_hint=False)
        hook.max_iter = 8  # iteration 7 is now the last one: logged
        try:
            hook.after_step(storage)
        except FloatingPointError as e:
            results[f"error{rank}"] = str(e)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # spawns two processes
def test_loss_is_averaged_over_processes_on_logged_iterations_only():
    with tempfile.TemporaryDirectory() as tmp:
        results = mp.Manager().dict()
        mp.spawn(_worker, args=(os.path.join(tmp, "init"), results), nprocs=2, join=True)
    for rank in (0, 1):
        seen, saved, median = results[rank]
        # Iterations 2 and 5 end a period of 3, 6 is the last: their loss is the job's mean
        # (those before, back to the previous logged one, too); the others stay the process's.
        expected = [10.0 * it + (0.5 if it in (2, 5, 6) else rank) for it in range(7)]
        assert seen == expected
        assert saved == [0.5, 10.5, 20.5, 30.5]  # a checkpoint synchronizes what is pending
        assert median == 30.5
        assert results[f"error{rank}"] == ("loss became nan at iteration 7 (the mean over the "
                                           "processes; the gradients were finite)")
