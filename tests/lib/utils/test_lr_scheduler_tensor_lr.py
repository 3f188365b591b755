"""LearningRateScheduler with 0-dim tensor lrs (``SGD(params, lr=torch.tensor(0.1))``, fused Adam),
checked against torch's own schedulers as in pytorch's test/optim/test_lrscheduler.py, whose
``setUp`` gives a param group ``lr=torch.tensor(0.5)``."""
import copy
import io

import pytest
import torch
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, MultiStepLR, PolynomialLR

from pet.lib.config import get_cfg
from pet.lib.utils.lr_scheduler import LearningRateScheduler

TOTAL, STEPS, GAMMA, POW = 10, (3, 6), 0.1, 0.9
LRS = (0.05, 0.5, 0.02)
TORCH_SCHEDULERS = {
    "STEP": lambda opt: MultiStepLR(opt, milestones=list(STEPS), gamma=GAMMA),
    "COSINE": lambda opt: CosineAnnealingLR(opt, T_max=TOTAL),
    "POLY": lambda opt: PolynomialLR(opt, total_iters=TOTAL, power=POW),
}
OPTIMIZERS = {
    "sgd": lambda groups: torch.optim.SGD(groups, lr=0.1, momentum=0.9),
    "adam": lambda groups: torch.optim.Adam(groups, lr=0.1),
    "adam_fused": lambda groups: torch.optim.Adam(groups, lr=0.1, fused=True),
    "adam_fused_capturable": lambda g: torch.optim.Adam(g, lr=0.1, fused=True, capturable=True),
}


def make_solver(policy="STEP"):
    solver = get_cfg().SOLVER
    s = solver.SCHEDULER
    s.POLICY, s.TOTAL_ITERS, s.STEPS, s.GAMMA, s.LR_POW = policy, TOTAL, STEPS, GAMMA, POW
    s.WARM_UP_ITERS, s.MIN_LR_FACTOR = 0, 0.0
    solver.OPTIMIZER.BASE_LR = LRS[0]
    return solver


def make_optimizer(kind="sgd", tensor=True):
    return OPTIMIZERS[kind]([dict(params=[nn.Parameter(torch.ones(2))],
                                  lr=torch.tensor(lr) if tensor else lr) for lr in LRS])


def lrs(opt):
    return [float(g["lr"]) for g in opt.param_groups]


def params(opt):
    return [p for group in opt.param_groups for p in group["params"]]


def train_step(opt):
    for p in params(opt):
        p.grad = torch.ones_like(p)
    opt.step()


@pytest.mark.parametrize("tensor", [True, False], ids=["tensor_lr", "float_lr"])
@pytest.mark.parametrize("kind", list(OPTIMIZERS))
@pytest.mark.parametrize("policy", list(TORCH_SCHEDULERS))
def test_matches_torch_scheduler_step_for_step(policy, kind, tensor):
    """Mirrors test_multi_step_lr / test_cos_anneal_lr / test_poly_lr (``_test`` on setUp's
    tensor-lr group), test_closed_form_* and test_reduce_lr_on_plateau_preserves_lr_type."""
    ours, theirs = make_optimizer(kind, tensor), make_optimizer(kind, tensor)
    lr_objects = [g["lr"] for g in ours.param_groups]
    sched = LearningRateScheduler(ours, make_solver(policy))
    torch_sched = TORCH_SCHEDULERS[policy](theirs)
    for i in range(TOTAL + 1):
        assert lrs(ours) == pytest.approx(lrs(theirs), rel=1e-5, abs=1e-8), f"iteration {i}"
        for group, lr in zip(ours.param_groups, lr_objects):
            assert type(group["lr"]) is type(lr)
            if tensor:  # written in place, as torch does (no recompiles; CUDA graphs still work)
                assert group["lr"] is lr and group["lr"].dim() == 0
                assert group["initial_lr"] is not group["lr"]
        for p, q in zip(params(ours), params(theirs)):  # the optimizers used the same lrs
            torch.testing.assert_close(p, q)
        train_step(ours), train_step(theirs)
        sched.step(), torch_sched.step()


@pytest.mark.parametrize("tensor", [True, False], ids=["tensor_lr", "float_lr"])
@pytest.mark.parametrize("policy", ["STEP", "COSINE", "STEP_COSINE", "POLY"])
def test_constant_initial_lr(policy, tensor):
    """Mirrors test_constant_initial_lr: initial_lr and base_lrs never change, don't alias the
    group's lr, and survive an in-place change of the lr tensor the user passed in."""
    opt = make_optimizer("sgd", tensor)
    sched = LearningRateScheduler(opt, make_solver(policy))
    original = copy.deepcopy([g["initial_lr"] for g in opt.param_groups])
    for _ in range(TOTAL):
        train_step(opt)
        sched.step()
        for group, orig, lr in zip(opt.param_groups, original, LRS):
            if tensor:
                group["lr"].mul_(0.1)  # torch's test: lr.multiply_(0.1) on the user's tensor
                assert group["initial_lr"] is not group["lr"]
            assert float(group["initial_lr"]) == float(orig) == pytest.approx(lr)
        assert [float(b) for b in sched.base_lrs] == pytest.approx(list(LRS))
        if tensor:
            assert all(b is not g["initial_lr"] for b, g in zip(sched.base_lrs, opt.param_groups))


@pytest.mark.parametrize("tensor", [True, False], ids=["tensor_lr", "float_lr"])
@pytest.mark.parametrize("kind", ["sgd", "adam_fused"])
@pytest.mark.parametrize("policy", list(TORCH_SCHEDULERS))
def test_state_dict_round_trip_resumes_at_same_lr(policy, kind, tensor):
    """Mirrors test_multi_step_lr_state_dict / _check_scheduler_state_dict,
    test_lr_scheduler_state_dict_load (weights_only) and test_lr_scheduler_checkpoint (the
    optimizer's state loaded into a fresh optimizer before the fresh scheduler is built)."""
    solver, resume_at = make_solver(policy), 4
    opt = make_optimizer(kind, tensor)
    sched = LearningRateScheduler(opt, solver)
    for _ in range(resume_at):
        train_step(opt)
        sched.step()
    buffer = io.BytesIO()
    torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)

    opt2 = make_optimizer(kind, tensor)
    opt2.load_state_dict(checkpoint["optimizer"])
    sched2 = LearningRateScheduler(opt2, solver)
    sched2.load_state_dict(checkpoint["scheduler"])
    assert sched2.iteration == sched.iteration == resume_at
    for i in range(resume_at, TOTAL + 1):
        assert lrs(opt2) == pytest.approx(lrs(opt), rel=1e-5, abs=1e-8), f"iteration {i}"
        assert all(isinstance(g["lr"], torch.Tensor) == tensor for g in opt2.param_groups)
        train_step(opt), train_step(opt2)
        sched.step(), sched2.step()


@pytest.mark.parametrize("tensor", [True, False], ids=["tensor_lr", "float_lr"])
def test_scheduler_rebuilt_on_same_optimizer_does_not_compound(tensor):
    """Mirrors test_sequentiallr_does_not_alias_lr_and_initial_lr (pytorch issue #162359): a
    second scheduler built on the same optimizer (resume with start_iter) starts from initial_lr."""
    solver, opt = make_solver("STEP"), make_optimizer("sgd", tensor)
    sched = LearningRateScheduler(opt, solver)
    for _ in range(5):  # past the first milestone (3), before the second (6)
        train_step(opt)
        sched.step()
    LearningRateScheduler(opt, solver, start_iter=sched.iteration)
    assert lrs(opt) == pytest.approx([GAMMA * lr for lr in LRS], rel=1e-5)


@pytest.mark.parametrize("policy", ["STEP", "COSINE", "STEP_COSINE", "POLY"])
def test_float_and_tensor_lrs_agree(policy):
    """The float-lr counterpart of the tests above (torch's setUp mixes a float-lr group and a
    tensor-lr group): both kinds of lr follow the same schedule."""
    solver = make_solver(policy)
    floats, tensors = make_optimizer("sgd", tensor=False), make_optimizer("sgd", tensor=True)
    scheds = LearningRateScheduler(floats, solver), LearningRateScheduler(tensors, solver)
    for i in range(TOTAL + 1):
        assert lrs(tensors) == pytest.approx(lrs(floats), rel=1e-5, abs=1e-8), f"iteration {i}"
        assert all(isinstance(g["lr"], float) for g in floats.param_groups)
        train_step(floats), train_step(tensors)
        scheds[0].step(), scheds[1].step()
