"""Several optimizers over one model (SOLVER.OPTIMIZERS, MMEngine's MultiOptimWrapperConstructor):
each top-level submodule named gets its own optimizer, built by Pet's ``Optimizer`` from the
entry's keys over SOLVER.OPTIMIZER's, and its own schedule from the entry's SCHEDULER keys over
SOLVER.SCHEDULER's. A pure function of the model and the config, as the single optimizer."""
from typing import Dict, Tuple

import torch
from torch import nn
from yacs.config import CfgNode

from pet.lib.config.errors import ConfigError
from pet.lib.config.loader import set_key
from pet.lib.config.yaml_file import flatten
from pet.lib.utils.optimizer import Optimizer

_KEY = "SOLVER.OPTIMIZERS"
# The run's length is SOLVER.SCHEDULER's: an optimizer's own schedule cannot change it.
RUN_LENGTH_KEYS = ("TOTAL_ITERS", "TOTAL_EPOCHS")


def optimizer_solvers(solver: CfgNode) -> Dict[str, CfgNode]:
    """{name: a SOLVER node whose OPTIMIZER and SCHEDULER are that optimizer's} for every entry
    of SOLVER.OPTIMIZERS (empty without). ConfigError naming the entry's key."""
    nodes: Dict[str, CfgNode] = {}
    for name, entry in solver.OPTIMIZERS.items():
        where = f"{_KEY}.{name}"
        if not isinstance(entry, dict):  # an empty one takes all of SOLVER.OPTIMIZER
            raise ConfigError(f"{where}: expected a mapping of SOLVER.OPTIMIZER keys (and SCHEDULER), "
                              f"got {entry!r}")
        root = CfgNode()
        root.SOLVER = solver.clone()
        root.SOLVER.defrost()
        root.SOLVER.OPTIMIZERS = CfgNode(new_allowed=True)
        for key, value in flatten(entry):
            if isinstance(value, dict) and not value:  # ``SCHEDULER: {}`` sets nothing
                continue
            section, _, rest = key.partition(".") if key.startswith("SCHEDULER.") else ("OPTIMIZER", "", key)
            if section == "SCHEDULER" and rest in RUN_LENGTH_KEYS:
                raise ConfigError(f"{where}.{key}: the run's length is SOLVER.SCHEDULER's; an "
                                  f"optimizer's own SCHEDULER may change its curve, not its length")
            try:
                set_key(root, f"SOLVER.{section}.{rest}", value, source=where)
            except ConfigError as e:
                raise ConfigError(str(e).replace(f"SOLVER.{section}.{rest}", f"{where}.{key}", 1)) from None
        nodes[name] = root.SOLVER
    return nodes


def build_optimizers(model: nn.Module, solver: CfgNode) -> Dict[str, torch.optim.Optimizer]:
    """{name: the optimizer of the top-level submodule ``name``} for SOLVER.OPTIMIZERS.

    Raises ConfigError for a name that is no top-level submodule, a parameter claimed by two
    entries (shared between their submodules), or a trainable parameter in none of them.
    """
    children = dict(model.named_children())
    nodes = optimizer_solvers(solver)
    owner: Dict[int, str] = {}
    for name in nodes:
        if name not in children:
            raise ConfigError(f"{_KEY}.{name}: {type(model).__name__} has no top-level submodule "
                              f"{name!r}; its submodules: {', '.join(children) or 'none'}")
        for param_name, param in children[name].named_parameters():
            if id(param) in owner:
                raise ConfigError(f"{_KEY}: parameter '{name}.{param_name}' is also one of "
                                  f"{owner[id(param)]!r} (shared between them): each parameter "
                                  f"belongs to one optimizer")
            owner[id(param)] = name
    for param_name, param in model.named_parameters():
        if param.requires_grad and id(param) not in owner:
            top = param_name.split(".")[0]
            raise ConfigError(f"{_KEY}: parameter {param_name!r} is in no optimizer; add its "
                              f"top-level submodule {top!r} to {_KEY}")
    return {name: Optimizer(children[name], node.OPTIMIZER).build() for name, node in nodes.items()}


def named_optimizers(model: nn.Module, solver: CfgNode
                     ) -> Tuple[Dict[str, torch.optim.Optimizer], Dict[str, CfgNode]]:
    """The run's optimizers by name and the SOLVER node of each: SOLVER.OPTIMIZERS' (see
    ``build_optimizers``), or ``{"": SOLVER.OPTIMIZER's over the whole model}`` and
    ``{"": solver}``. What train_net, explain_solver and plot_lr build alike."""
    if solver.OPTIMIZERS:
        return build_optimizers(model, solver), optimizer_solvers(solver)
    return {"": Optimizer(model, solver.OPTIMIZER).build()}, {"": solver}
