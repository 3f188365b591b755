"""StopRequest and StopOnSignal: a stop signal ends the run after the step, with a checkpoint."""
import os
import signal

import pytest
import torch
from torch import nn

from pet.engine.checkpointer import Checkpointer
from pet.engine.events import MetricsStorage
from pet.engine.preemption import StopOnSignal, StopRequest, TrainingStopped


def test_first_signal_is_recorded_and_a_second_sigint_raises():
    # What was installed before (a shell's background job starts with SIGINT ignored).
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    request = StopRequest().install()
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert request.signal_name == "SIGTERM"
        os.kill(os.getpid(), signal.SIGTERM)  # a repeated SIGTERM changes nothing
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        request.restore()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
        signal.signal(signal.SIGINT, before[0])
    assert signal.getsignal(signal.SIGTERM) == before[1]


def storage_at(iteration: int) -> MetricsStorage:
    storage = MetricsStorage(0)
    storage.begin_iteration(iteration)
    return storage


def test_stop_hook_checkpoints_then_raises(tmp_path):
    request = StopRequest()
    hook = StopOnSignal(request, Checkpointer(str(tmp_path), model=nn.Linear(2, 2)),
                        snapshot_period=10, max_iter=100)
    hook.after_step(storage_at(4))  # no signal: nothing happens
    assert not list(tmp_path.iterdir())
    request.signal_name = "SIGTERM"
    with pytest.raises(TrainingStopped) as stopped:
        hook.after_step(storage_at(4))
    assert stopped.value.iterations_done == 5
    assert stopped.value.checkpoint == str(tmp_path / "model_0000005.pth")
    assert torch.load(stopped.value.checkpoint, weights_only=True)["iteration"] == 5
    hook.after_step(storage_at(99))  # the last iteration: the run finishes normally


def test_stop_hook_reuses_the_periodic_checkpoint(tmp_path):
    request = StopRequest()
    request.signal_name = "SIGINT"
    hook = StopOnSignal(request, Checkpointer(str(tmp_path), model=nn.Linear(2, 2)),
                        snapshot_period=5, max_iter=100)
    with pytest.raises(TrainingStopped):
        hook.after_step(storage_at(4))
    assert not list(tmp_path.iterdir())  # the PeriodicCheckpointer wrote model_0000005 already


def _agreeing_worker(rank: int, init_file: str, save_dir: str, results) -> None:
    import time

    import torch.distributed as dist

    from pet.engine.distributed import ProcessInfo
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    request = StopRequest()
    try:
        checkpointer = Checkpointer(save_dir, process=ProcessInfo(rank, 2, rank), model=nn.Linear(2, 2))
        hook = StopOnSignal(request, checkpointer, snapshot_period=0, max_iter=10_000)
        hook.AGREE_SECONDS = 0.05  # short, so the test sees several agreements
        if rank == 1:
            request.install()
        for iteration in range(10_000):
            time.sleep(0.002 * (1 + rank))  # rank 1 is the slow one: its time sets the period
            if rank == 1 and iteration == 30:
                os.kill(os.getpid(), signal.SIGTERM)  # a real signal, to one process only
            try:
                hook.after_step(storage_at(iteration))
            except TrainingStopped as e:
                results[rank] = (e.iterations_done, e.checkpoint, hook._next_agreement)
                break
    finally:
        request.restore()
        dist.destroy_process_group()


@pytest.mark.slow  # spawns two processes
def test_processes_agree_on_a_stop_signal_that_only_one_of_them_got(tmp_path):
    import torch.multiprocessing as mp
    results = mp.Manager().dict()
    mp.spawn(_agreeing_worker, args=(str(tmp_path / "init"), str(tmp_path), results), nprocs=2)
    (done, path, _), other = results[0], results[1]
    assert other == results[0]  # the same iteration and checkpoint on both
    # First agreement after 10 iterations, then about every 0.05 s / (4 ms per step): within
    # about 15 iterations of the signal, not after every step.
    assert 31 <= done <= 31 + 25
    assert torch.load(path, weights_only=True)["iteration"] == done
