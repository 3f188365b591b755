"""The CUDA paths of train_net (skipped where no GPU is present), each with its CPU proxy:

- the steps that log nothing never synchronize with the device
  (``torch.cuda.set_sync_debug_mode("error")`` around them), in each precision and clip type;
  on the CPU the same steps read no tensor value, except the clip ops' host scalars (on the CPU
  a read waits for nothing, and the clips are fastest tensor by tensor; see clip_ops);
- a run killed with SIGKILL and resumed ends bit-identical to an uninterrupted one on CUDA, in
  float32, bfloat16 and float16 (DETERMINISTIC, the CUDA generators in the checkpoint); the CPU
  runs of the same test are in test_train_net.py.
"""
import contextlib
import io
import os
import sys

import pytest
import torch

from pet.engine.device import configure_numerics
from pet.engine.distributed import ProcessInfo
from pet.engine.job import validate_job
from pet.engine.logger import ProgressBar, close_logging, setup_logging
from pet.engine.output_dir import prepare_output_dir
from pet.engine.preemption import StopRequest
from pet.engine.training_run import build_trainer, build_training_run
from pet.lib.config import load_cfg
from tests.tools.test_train_net import RESUME_JOBS, sigkill_resume_matches_reference

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
READS = ("item", "tolist", "numpy", "__float__", "__int__", "__bool__", "__index__")
CLIP_OPS = os.path.join("pet", "lib", "utils", "clip_ops.py")


@contextlib.contextmanager
def no_device_sync(device: torch.device, allowed_reads: tuple = ()):
    """On CUDA, any synchronizing call raises; on the CPU, a read of a tensor's value made
    anywhere but in the files ``allowed_reads`` fails the test."""
    if device.type == "cuda":
        torch.cuda.set_sync_debug_mode("error")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode("default")
        return
    readers = []
    originals = {name: getattr(torch.Tensor, name) for name in READS}

    def counted(original):
        def read(self, *args, **kwargs):
            readers.append(sys._getframe(1).f_code.co_filename)
            return original(self, *args, **kwargs)
        return read
    for name, original in originals.items():
        setattr(torch.Tensor, name, counted(original))
    try:
        yield
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
    assert [r for r in readers if not r.endswith(allowed_reads)] == []

STEP_PATHS = {
    "float32-sgd": [],
    "bfloat16-adamw-full_model": ["SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.DTYPE", "bfloat16",
                                  "SOLVER.OPTIMIZER.TYPE", "ADAMW", "SOLVER.OPTIMIZER.BASE_LR", "0.001",
                                  "SOLVER.OPTIMIZER.CLIP_GRADIENTS.ENABLED", "True",
                                  "SOLVER.OPTIMIZER.CLIP_GRADIENTS.CLIP_TYPE", "full_model"],
    "float16-adamw-full_model": ["SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.DTYPE", "float16",
                                 "SOLVER.OPTIMIZER.TYPE", "ADAMW", "SOLVER.OPTIMIZER.BASE_LR", "0.001",
                                 "SOLVER.OPTIMIZER.CLIP_GRADIENTS.ENABLED", "True",
                                 "SOLVER.OPTIMIZER.CLIP_GRADIENTS.CLIP_TYPE", "full_model"],
    "bfloat16-sgd-norm-accumulation": ["SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.DTYPE", "bfloat16",
                                       "SOLVER.ACCUMULATION_STEPS", "2", "SOLVER.SKIP_NONFINITE", "2",
                                       "SOLVER.OPTIMIZER.CLIP_GRADIENTS.ENABLED", "True",
                                       "SOLVER.OPTIMIZER.CLIP_GRADIENTS.CLIP_TYPE", "norm"],
    "float32-sgd-value-ema": ["SOLVER.OPTIMIZER.CLIP_GRADIENTS.ENABLED", "True",
                              "SOLVER.OPTIMIZER.CLIP_GRADIENTS.CLIP_TYPE", "value",
                              "MODEL.EMA.ENABLED", "True"],
}


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=needs_cuda)])
@pytest.mark.parametrize("overrides", STEP_PATHS.values(), ids=STEP_PATHS.keys())
def test_steps_that_log_nothing_never_synchronize_with_the_device(tmp_path, overrides, device):
    cfg = load_cfg("cfgs/digits_cnn_sgd_step.yaml", [
        "MODEL.DEVICE", device, "OUTPUT_DIR", str(tmp_path / "out"), "LOG_PERIOD", "10",
        "SOLVER.SCHEDULER.TOTAL_EPOCHS", "None", "SOLVER.SCHEDULER.TOTAL_ITERS", "40",
        "SOLVER.SCHEDULER.STEPS", "(30,)", "SOLVER.SCHEDULER.WARM_UP_EPOCHS", "None",
        "SOLVER.SCHEDULER.WARM_UP_ITERS", "5", "TEST.EVAL_EPOCHS", "None", "SOLVER.SNAPSHOT_EPOCHS", "None",
        *overrides])
    cfg.freeze()
    iter_per_epoch = validate_job(cfg)
    device = torch.device(device)
    clipped = device.type == "cpu" and cfg.SOLVER.OPTIMIZER.CLIP_GRADIENTS.ENABLED
    configure_numerics(cfg.DETERMINISTIC, cfg.TF32, device)
    setup_logging(ProgressBar(stream=io.StringIO()), io.StringIO())
    try:
        run = build_training_run(cfg, ProcessInfo(), device, iter_per_epoch)
        prepare_output_dir(cfg, resume=False)
        trainer = build_trainer(run, ProgressBar(stream=io.StringIO()), StopRequest())
        trainer.before_train()
        quiet = 0
        for iteration in range(trainer.max_iter):
            if trainer.is_read_iteration(iteration):
                trainer.run_iteration(iteration)
                continue
            with no_device_sync(device, allowed_reads=(CLIP_OPS,) if clipped else ()):
                trainer.run_iteration(iteration)
            quiet += 1
        trainer.after_train()
    finally:
        close_logging()
    assert quiet == 36  # every iteration but 9, 19, 29 and 39


@needs_cuda
@pytest.mark.slow
@pytest.mark.parametrize("amp", [None, "bfloat16", "float16"])
def test_sigkill_and_resume_is_bit_identical_on_cuda(tmp_path, amp):
    job = dict(RESUME_JOBS["cnn"], MODEL=dict(RESUME_JOBS["cnn"]["MODEL"], DEVICE="cuda"))
    if amp is not None:
        job["SOLVER"] = dict(job["SOLVER"], AMP={"ENABLED": True, "DTYPE": amp})
    sigkill_resume_matches_reference(tmp_path, job)
