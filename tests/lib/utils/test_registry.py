"""Registries: the decorator, case-insensitive lookups, clashes, and that an entry added in one
place is at once accepted by the config, listed in the errors and built."""
import pytest
import torch
from torch import nn

from pet.lib.config import ConfigError, get_cfg
from pet.lib.utils.grad_clip import CLIP_TYPES
from pet.lib.utils.lr_scheduler import LR_POLICIES, LearningRateScheduler
from pet.lib.utils.optimizer import OPTIMIZERS, Optimizer
from pet.lib.utils.registry import Registry


def test_register_by_own_name_or_given_name_lookup_ignores_case():
    reg = Registry("thing")

    @reg.register()
    def small():
        return 1

    reg.register(len, name="Size")
    assert reg.names() == ("small", "Size")
    assert reg.get("SMALL") is small and reg.get("size") is len
    assert "sMaLl" in reg and "big" not in reg and 3 not in reg
    assert reg.canonical("SIZE") == "Size"
    assert list(reg) == ["small", "Size"] and len(reg) == 2
    assert reg.unregister("size") is len and reg.names() == ("small",)


def test_a_taken_name_is_refused_in_any_case():
    reg = Registry("thing")
    reg.register(len, name="size")
    with pytest.raises(KeyError, match="thing 'SIZE' is already registered"):
        reg.register(max, name="SIZE")
    assert reg.get("size") is len


def test_unknown_names_list_what_is_allowed():
    reg = Registry("thing")
    reg.register(len, name="size")
    with pytest.raises(KeyError, match="unknown thing 'big'; allowed: size"):
        reg.get("big")
    with pytest.raises(ConfigError, match=r"^X.KEY: unknown value 'big'; allowed: size$"):
        reg.check("big", "X.KEY")
    with pytest.raises(ConfigError, match="X.KEY: unknown value 3"):
        reg.check(3, "X.KEY")
    assert reg.check("SIZE", "X.KEY") == "size"


def test_built_in_names():
    assert OPTIMIZERS.names() == ("SGD", "ADAMW", "ADAM", "RMSPROP", "ADAMAX", "NADAM", "RADAM",
                                  "ADAGRAD", "ADADELTA", "ASGD", "RPROP", "ADAFACTOR", "SPARSEADAM",
                                  "MUON")
    assert LR_POLICIES.names()[:4] == ("STEP", "COSINE", "STEP_COSINE", "POLY")  # and newer ones
    assert CLIP_TYPES.names() == ("value", "norm", "full_model")


def test_optimizer_capabilities_are_declared():
    sgd, rmsprop, adamw = OPTIMIZERS.get("sgd"), OPTIMIZERS.get("RMSprop"), OPTIMIZERS.get("AdamW")
    assert (sgd.fused, sgd.foreach, sgd.momentum, sgd.betas) == (True, True, True, False)
    assert (rmsprop.fused, rmsprop.momentum) == (False, True)
    assert (adamw.fused, adamw.momentum, adamw.betas) == (True, False, True)


class Lion(torch.optim.SGD):
    """A user's optimizer (an SGD subclass here, so its update is known)."""


def test_a_registered_optimizer_class_is_validated_built_and_clipped():
    OPTIMIZERS.register(Lion)
    try:
        cfg = get_cfg().SOLVER.OPTIMIZER
        cfg.TYPE, cfg.CLIP_GRADIENTS.ENABLED = "lion", True
        optimizer = Optimizer(nn.Linear(3, 2), cfg).build()
        assert isinstance(optimizer, Lion) and hasattr(optimizer, "clip_gradients_")
        assert optimizer.defaults["momentum"] == cfg.MOMENTUM  # typed keys it takes reach it
        assert OPTIMIZERS.get("LION").fused  # read off its constructor (SGD's takes fused)
    finally:
        OPTIMIZERS.unregister("lion")
    with pytest.raises(ConfigError, match="allowed: SGD, ADAMW, .*, SPARSEADAM, MUON$"):
        Optimizer(nn.Linear(3, 2), cfg)


def test_a_registered_policy_is_accepted_by_the_config_and_drives_the_lr():
    @LR_POLICIES.register()
    def halving(schedule, i):
        return 0.5 ** (i // 2)

    try:
        cfg = get_cfg()
        cfg.SOLVER.SCHEDULER.POLICY, cfg.SOLVER.SCHEDULER.WARM_UP_ITERS = "HALVING", 0
        cfg.SOLVER.SCHEDULER.STEPS = (5000,)  # read by STEP only: this policy ignores it
        optimizer = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.8)
        scheduler = LearningRateScheduler(optimizer, cfg.SOLVER)
        lrs = []
        for _ in range(5):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        assert lrs == [0.8, 0.8, 0.4, 0.4, 0.2]
    finally:
        LR_POLICIES.unregister("halving")
