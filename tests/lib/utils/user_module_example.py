"""A user's module, as a project would write one and list in CUSTOM_IMPORTS: an optimizer class,
a param rule, a param-groups builder and an lr policy, each registered in one line and chosen by
name in YAML.

    CUSTOM_IMPORTS: [user_module_example]
    SOLVER:
      OPTIMIZER:
        TYPE: USER_SIGN_SGD
        RULES: [user_linear, norm, embed, bias]
      SCHEDULER:
        POLICY: USER_INVERSE_SQRT
"""
import math

import torch

from pet.lib.utils.lr_schedules import LR_POLICIES
from pet.lib.utils.optimizer import OPTIMIZERS
from pet.lib.utils.param_groups import PARAM_GROUPS_BUILDERS, PARAM_RULES, ParamRule


@OPTIMIZERS.register(name="USER_SIGN_SGD")
class SignSGD(torch.optim.Optimizer):
    """p -= lr * (sign(grad) + weight_decay * p): a class torch does not have."""

    def __init__(self, params, lr=0.01, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.sub_(group["lr"] * (p.grad.sign() + group["weight_decay"] * p))


# Weights of linear layers: 3x the lr, no weight decay.
PARAM_RULES.register(ParamRule(
    matches=lambda module, param_name, spec: isinstance(module, torch.nn.Linear) and param_name == "weight",
    hyperparams=lambda spec: (spec.base_lr * 3.0, 0.0),
), name="user_linear")


@PARAM_GROUPS_BUILDERS.register(name="user_one_group")
def one_group(model, spec):
    """Every trainable parameter in one group at BASE_LR (a whole builder, MMEngine-constructor
    style)."""
    return [{"params": [(n, p) for n, p in model.named_parameters() if p.requires_grad]}]


@LR_POLICIES.register(name="USER_INVERSE_SQRT")
def inverse_sqrt(schedule, i):
    """The warm-up, then sqrt(warm-up iterations / i) ("Attention is all you need"): 1 where the
    warm-up ends, a pure function of the iteration as every policy is."""
    if i < schedule.warmup_iters:
        return schedule.warmup(i)
    return math.sqrt(max(schedule.warmup_iters, 1) / max(i, 1))
