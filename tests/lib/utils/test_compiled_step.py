"""Tests of SOLVER.OPTIMIZER.COMPILE (pet/lib/utils/compiled_step.py): the compiled step
equals torch's eager step to float tolerance, and a whole schedule (warm-up, restarts, a
momentum cycle) runs with no recompilation, counted with dynamo's own counters."""
import logging
import os
import shutil
import warnings

import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters

from pet.lib.config import get_cfg
from pet.lib.config.errors import ConfigError
from pet.lib.config.loader import merge_from_list
from pet.lib.utils.lr_scheduler import LearningRateScheduler
from pet.lib.utils.optim_wrapper import build_optim_wrapper
from pet.lib.utils.optimizer import Optimizer

pytestmark = [pytest.mark.slow,  # inductor compiles C++ on the CPU: seconds per step kind
              pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None,
                                 reason="torch.compile on the CPU needs a C++ compiler")]


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.LayerNorm(16), nn.ReLU(), nn.Linear(16, 3))


def solver(*keys):
    cfg = get_cfg()
    merge_from_list(cfg, ["SOLVER.SCHEDULER.TOTAL_EPOCHS", "None", "SOLVER.SCHEDULER.WARM_UP_EPOCHS", "None",
                          *map(str, keys)])
    return cfg.SOLVER


def train(net, solver_cfg, iterations):
    optimizer = Optimizer(net, solver_cfg.OPTIMIZER).build()
    wrapper = build_optim_wrapper(optimizer, solver_cfg)
    scheduler = LearningRateScheduler(optimizer, solver_cfg)
    gen = torch.Generator().manual_seed(1)
    graphs = []
    for _ in range(iterations):
        x, y = torch.randn(8, 6, generator=gen), torch.randint(0, 3, (8,), generator=gen)
        wrapper.update_params(nn.functional.cross_entropy(net(x), y))
        scheduler.step()
        graphs.append(counters["stats"]["unique_graphs"])
    return optimizer, graphs


@pytest.mark.parametrize("keys", [
    ["SOLVER.OPTIMIZER.TYPE", "ADAMW", "SOLVER.OPTIMIZER.BASE_LR", "0.01",
     "SOLVER.SCHEDULER.POLICY", "COSINE_RESTARTS", "SOLVER.SCHEDULER.TOTAL_ITERS", "40",
     "SOLVER.SCHEDULER.COSINE_RESTARTS.T_0", "12", "SOLVER.SCHEDULER.WARM_UP_ITERS", "5"],
    ["SOLVER.OPTIMIZER.TYPE", "ADAMW", "SOLVER.OPTIMIZER.BASE_LR", "0.01",
     "SOLVER.SCHEDULER.POLICY", "ONE_CYCLE", "SOLVER.SCHEDULER.TOTAL_ITERS", "40",
     "SOLVER.SCHEDULER.WARM_UP_ITERS", "0"],
    ["SOLVER.OPTIMIZER.TYPE", "SGD", "SOLVER.OPTIMIZER.MOMENTUM", "0.9", "SOLVER.SCHEDULER.POLICY", "COSINE",
     "SOLVER.SCHEDULER.TOTAL_ITERS", "40", "SOLVER.SCHEDULER.WARM_UP_ITERS", "5",
     "SOLVER.OPTIMIZER.CLIP_GRADIENTS.ENABLED", "True", "SOLVER.OPTIMIZER.CLIP_GRADIENTS.CLIP_TYPE", "full_model"],
    # SGD's momentum cycle and a weight-decay schedule (tensor_updates.py), nesterov, norm clipping.
    ["SOLVER.OPTIMIZER.TYPE", "SGD", "SOLVER.OPTIMIZER.MOMENTUM", "0.9", "SOLVER.OPTIMIZER.NESTEROV", "True",
     "SOLVER.SCHEDULER.POLICY", "ONE_CYCLE", "SOLVER.SCHEDULER.TOTAL_ITERS", "40",
     "SOLVER.SCHEDULER.WARM_UP_ITERS", "0", "SOLVER.SCHEDULER.PARAMS",
     "({'PARAM': 'weight_decay', 'START': 0.0001, 'END': 0.01},)",
     "SOLVER.OPTIMIZER.CLIP_GRADIENTS.ENABLED", "True", "SOLVER.OPTIMIZER.CLIP_GRADIENTS.CLIP_TYPE", "norm"],
    # DINO's weight-decay schedule on AdamW, with AMSGrad and a momentum cycle.
    ["SOLVER.OPTIMIZER.TYPE", "ADAMW", "SOLVER.OPTIMIZER.BASE_LR", "0.01", "SOLVER.OPTIMIZER.AMSGRAD",
     "True", "SOLVER.OPTIMIZER.WEIGHT_DECAY", "0.04",
     "SOLVER.SCHEDULER.POLICY", "ONE_CYCLE", "SOLVER.SCHEDULER.TOTAL_ITERS", "40", "SOLVER.SCHEDULER.WARM_UP_ITERS",
     "0", "SOLVER.SCHEDULER.PARAMS", "({'PARAM': 'weight_decay', 'START': 0.04, 'END': 0.4},)"],
    # Adam's coupled weight decay, scheduled, with value clipping.
    ["SOLVER.OPTIMIZER.TYPE", "ADAM", "SOLVER.OPTIMIZER.BASE_LR", "0.01", "SOLVER.OPTIMIZER.WEIGHT_DECAY", "0.01",
     "SOLVER.SCHEDULER.POLICY", "COSINE", "SOLVER.SCHEDULER.TOTAL_ITERS", "40", "SOLVER.SCHEDULER.WARM_UP_ITERS",
     "5", "SOLVER.SCHEDULER.PARAMS", "({'PARAM': 'weight_decay', 'START': 0.01, 'END': 0.1, 'POLICY': 'LINEAR'},)",
     "SOLVER.OPTIMIZER.CLIP_GRADIENTS.ENABLED", "True", "SOLVER.OPTIMIZER.CLIP_GRADIENTS.CLIP_TYPE", "value",
     "SOLVER.OPTIMIZER.CLIP_GRADIENTS.CLIP_VALUE", "0.05"],
], ids=["adamw-cosine-restarts-warmup", "adamw-one-cycle-momentum", "sgd-cosine-warmup-full_model",
        "sgd-nesterov-momentum-cycle-weight-decay-schedule-norm", "adamw-amsgrad-weight-decay-schedule",
        "adam-weight-decay-schedule-value"])
def test_a_compiled_step_equals_the_eager_one_and_no_schedule_recompiles_it(keys):
    eager_net, compiled_net = model(), model()
    eager, _ = train(eager_net, solver(*keys), 40)
    torch._dynamo.reset()
    counters.clear()
    compiled, graphs = train(compiled_net, solver(*keys, "SOLVER.OPTIMIZER.COMPILE", "True"), 40)
    assert isinstance(compiled.param_groups[0]["lr"], torch.Tensor)
    assert graphs[-1] == graphs[1] > 0, f"graphs compiled per iteration: {graphs}"  # none after the first steps
    for compiled_group, eager_group in zip(compiled.param_groups, eager.param_groups):
        for key in ("lr", "momentum", "weight_decay"):  # each a tensor written in place
            if key in eager_group:
                assert isinstance(compiled_group[key], torch.Tensor), key
                assert float(compiled_group[key]) == pytest.approx(eager_group[key], rel=1e-12, abs=1e-15)
        if "betas" in eager_group:
            assert [float(b) for b in compiled_group["betas"]] == pytest.approx(eager_group["betas"], rel=1e-12)
    for a, b in zip(compiled_net.parameters(), eager_net.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_compile_refuses_a_fused_kernel_and_float16():
    with pytest.raises(ConfigError, match=r"^SOLVER.OPTIMIZER.IMPLEMENTATION: 'fused' with SOLVER.OPTIMIZER.COMPILE"):
        Optimizer(model(), solver("SOLVER.OPTIMIZER.IMPLEMENTATION", "fused", "SOLVER.OPTIMIZER.COMPILE", "True")
                  .OPTIMIZER).build()
    cfg = solver("SOLVER.OPTIMIZER.COMPILE", "True", "SOLVER.AMP.ENABLED", "True", "SOLVER.AMP.DTYPE", "float16")
    with pytest.raises(ConfigError, match=r"^SOLVER.OPTIMIZER.COMPILE: not supported with SOLVER.AMP.DTYPE float16"):
        build_optim_wrapper(Optimizer(model(), cfg.OPTIMIZER).build(), cfg)


def test_a_schedule_of_a_number_the_compiled_step_holds_is_refused():
    from pet.lib.utils.compiled_step import check_scheduled_keys

    cycle = ["SOLVER.SCHEDULER.POLICY", "ONE_CYCLE", "SOLVER.SCHEDULER.TOTAL_ITERS", "40",
             "SOLVER.SCHEDULER.WARM_UP_ITERS", "0", "SOLVER.OPTIMIZER.COMPILE", "True"]
    cfg = solver("SOLVER.OPTIMIZER.TYPE", "RMSPROP", "SOLVER.OPTIMIZER.MOMENTUM", "0.9", *cycle)
    optimizer = Optimizer(model(), cfg.OPTIMIZER).build()
    scheduler = LearningRateScheduler(optimizer, cfg)
    with pytest.raises(ConfigError, match=r"^SOLVER.OPTIMIZER.COMPILE: RMSprop takes the momentum \(SOLVER.SCHEDULER's "
                                          r"cycle\) as a number, so each scheduled change would compile"):
        check_scheduled_keys(optimizer, scheduler.cycles_momentum, [])
    with pytest.raises(ConfigError, match=r"^SOLVER.OPTIMIZER.COMPILE: RMSprop takes weight_decay "
                                          r"\(SOLVER.SCHEDULER.PARAMS\).*use SGD, ADAM or ADAMW"):
        check_scheduled_keys(optimizer, False, ["weight_decay"])
    for optimizer_type in ("SGD", "ADAM", "ADAMW"):  # their momentum and weight decay are tensors
        cfg = solver("SOLVER.OPTIMIZER.TYPE", optimizer_type, "SOLVER.OPTIMIZER.MOMENTUM", "0.9", *cycle)
        optimizer = Optimizer(model(), cfg.OPTIMIZER).build()
        check_scheduled_keys(optimizer, LearningRateScheduler(optimizer, cfg).cycles_momentum, ["weight_decay"])


@pytest.mark.parametrize("optimizer_type, clip_type", [
    ("ADAM", "value"), ("RMSPROP", "norm"), ("ADAGRAD", "full_model"), ("NADAM", None), ("RADAM", "value"),
    ("ADAMAX", "norm"), ("ADADELTA", "full_model"), ("ASGD", None), ("RPROP", "value"), ("ADAFACTOR", "norm"),
])
def test_every_optimizer_compiled_equals_its_eager_step(optimizer_type, clip_type):
    keys = ["SOLVER.OPTIMIZER.TYPE", optimizer_type, "SOLVER.OPTIMIZER.BASE_LR", "0.01",
            "SOLVER.SCHEDULER.POLICY", "COSINE", "SOLVER.SCHEDULER.TOTAL_ITERS", "12",
            "SOLVER.SCHEDULER.WARM_UP_ITERS", "2"]
    if clip_type:
        keys += ["SOLVER.OPTIMIZER.CLIP_GRADIENTS.ENABLED", "True", "SOLVER.OPTIMIZER.CLIP_GRADIENTS.CLIP_TYPE",
                 clip_type, "SOLVER.OPTIMIZER.CLIP_GRADIENTS.CLIP_VALUE", "0.5"]
    if optimizer_type == "RPROP":
        keys += ["SOLVER.OPTIMIZER.WEIGHT_DECAY", "0.0", "SOLVER.OPTIMIZER.WEIGHT_DECAY_NORM", "0.0",
                 "SOLVER.OPTIMIZER.WEIGHT_DECAY_BIAS", "0.0"]
    eager_net, compiled_net = model(), model()
    train(eager_net, solver(*keys), 12)
    torch._dynamo.reset()
    train(compiled_net, solver(*keys, "SOLVER.OPTIMIZER.COMPILE", "True"), 12)
    for a, b in zip(compiled_net.parameters(), eager_net.parameters()):  # the compiled kernels sum in another order
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def test_a_compiled_muon_is_as_close_to_exact_newton_schulz_as_the_eager_one(monkeypatch):
    """torch's Muon orthogonalizes in bfloat16, so its compiled and eager steps differ by
    bfloat16 rounding (1-2% after 12 steps here). The independent reference: the same run with
    the Newton-Schulz iteration in float32. The compiled run must be no farther from it than
    twice the eager run's own distance."""
    import torch.optim._muon as muon

    keys = ["SOLVER.OPTIMIZER.TYPE", "MUON", "SOLVER.OPTIMIZER.BASE_LR", "0.01", "SOLVER.SCHEDULER.POLICY", "COSINE",
            "SOLVER.SCHEDULER.TOTAL_ITERS", "12", "SOLVER.SCHEDULER.WARM_UP_ITERS", "2"]

    def net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))

    def newton_schulz_float32(grad, coefficients, steps, eps):
        a, b, c = coefficients
        x = grad.float().T if grad.size(0) > grad.size(1) else grad.float()
        x = x / x.norm().clamp(min=eps)
        for _ in range(steps):
            gram = x @ x.T
            x = a * x + (b * gram + c * gram @ gram) @ x
        return x.T if grad.size(0) > grad.size(1) else x

    eager_net, compiled_net, exact_net = net(), net(), net()
    train(eager_net, solver(*keys), 12)
    torch._dynamo.reset()
    compiled, graphs = train(compiled_net, solver(*keys, "SOLVER.OPTIMIZER.COMPILE", "True"), 12)
    assert graphs[-1] == graphs[1] > 0, f"graphs compiled per iteration: {graphs}"
    monkeypatch.setattr(muon, "_zeropower_via_newtonschulz", newton_schulz_float32)
    train(exact_net, solver(*keys), 12)

    def distance(a, b):
        return max(float((x - y).norm() / y.norm()) for x, y in zip(a.state_dict().values(), b.state_dict().values()))

    eager_error, compiled_error = distance(eager_net, exact_net), distance(compiled_net, exact_net)
    assert 0 < eager_error < 0.05 and compiled_error <= 2 * eager_error, (eager_error, compiled_error)


def test_a_dampened_sgd_compiled_warns_nothing_and_equals_its_eager_step():
    # Its first step runs torch's eager step (it makes the momentum buffers): the scheduler
    # must still see an optimizer step before its own (no "lr_scheduler.step() before
    # optimizer.step()" warning).
    keys = ["SOLVER.OPTIMIZER.TYPE", "SGD", "SOLVER.OPTIMIZER.MOMENTUM", "0.9", "SOLVER.OPTIMIZER.KWARGS.dampening",
            "0.5", "SOLVER.SCHEDULER.POLICY", "COSINE", "SOLVER.SCHEDULER.TOTAL_ITERS", "6",
            "SOLVER.SCHEDULER.WARM_UP_ITERS", "2"]
    eager_net, compiled_net = model(), model()
    train(eager_net, solver(*keys), 6)
    torch._dynamo.reset()
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*lr_scheduler.step.*")
        train(compiled_net, solver(*keys, "SOLVER.OPTIMIZER.COMPILE", "True"), 6)
    for a, b in zip(compiled_net.parameters(), eager_net.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_each_optimizer_compiles_its_own_step_past_dynamos_recompile_limit():
    # dynamo keeps at most recompile_limit graphs per code object (8 by default): with one code
    # for every optimizer's step, the ones past the limit would step eagerly (SOLVER.OPTIMIZERS).
    torch._dynamo.reset()
    counters.clear()
    keys = ["SOLVER.OPTIMIZER.TYPE", "SGD", "SOLVER.OPTIMIZER.MOMENTUM", "0.9", "SOLVER.SCHEDULER.POLICY",
            "COSINE", "SOLVER.SCHEDULER.TOTAL_ITERS", "3", "SOLVER.SCHEDULER.WARM_UP_ITERS", "0",
            "SOLVER.OPTIMIZER.COMPILE", "True"]
    with torch._dynamo.config.patch(recompile_limit=2):
        for _ in range(3):
            train(model(), solver(*keys), 2)
    assert counters["stats"]["unique_graphs"] == 3


def test_the_compiled_step_says_nothing_about_its_profiler_range(caplog):
    # dynamo warns once that the step wrapper's profiler range is not recorded in a graph:
    # a line on every run's standard error that no run can act on.
    torch._logging._internal.warning_once.cache_clear()  # said once per process: say it again
    torch._dynamo.reset()
    keys = ["SOLVER.OPTIMIZER.TYPE", "SGD", "SOLVER.OPTIMIZER.MOMENTUM", "0.9", "SOLVER.SCHEDULER.POLICY",
            "COSINE", "SOLVER.SCHEDULER.TOTAL_ITERS", "3", "SOLVER.SCHEDULER.WARM_UP_ITERS", "0",
            "SOLVER.OPTIMIZER.COMPILE", "True"]
    with caplog.at_level(logging.WARNING):
        train(model(), solver(*keys), 2)
    assert counters["stats"]["unique_graphs"] >= 1
    assert "Profiler record function" not in caplog.text
