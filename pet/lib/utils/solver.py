"""The SOLVER section checked as a whole, through the same adapters that build the solver."""
from typing import Optional

from yacs.config import CfgNode

from pet.lib.config.validate import validate_distributed, validate_snapshots, validate_step
from pet.lib.config.errors import ConfigError
from pet.lib.utils.lr_scheduler import build_param_curves, build_schedule
from pet.lib.utils.multi_optimizer import optimizer_solvers
from pet.lib.utils.optimizer import OPTIMIZERS, optimizer_spec
from pet.lib.utils.param_schedules import check_param_key


def validate_solver(solver: CfgNode, iter_per_epoch: Optional[int] = None) -> None:
    """Check every key of ``SOLVER`` (ConfigError on the first bad one), each optimizer of
    SOLVER.OPTIMIZERS with its schedule too; ``iter_per_epoch`` is needed for epoch-based keys."""
    spec = optimizer_spec(solver.OPTIMIZER)
    build_schedule(solver.SCHEDULER, iter_per_epoch)
    # A scheduled key the optimizer's constructor does not take is no param-group key of it.
    info = OPTIMIZERS.get(spec.name)
    for index, schedule in enumerate(build_param_curves(solver.SCHEDULER, iter_per_epoch)):
        check_param_key(index, schedule.param, info.cls.__name__,
                        [k for k in info.keywords if k not in ("self", "params")])
    validate_step(solver)
    validate_snapshots(solver)
    validate_distributed(solver)
    # Each optimizer of SOLVER.OPTIMIZERS, its errors naming the entry (the shared keys passed).
    for name, node in optimizer_solvers(solver).items():
        try:
            validate_solver(node, iter_per_epoch)
        except ConfigError as e:
            entry = f"SOLVER.OPTIMIZERS.{name}"
            raise ConfigError(str(e).replace("SOLVER.OPTIMIZER.", f"{entry}.", 1)
                              .replace("SOLVER.SCHEDULER.", f"{entry}.SCHEDULER.", 1)) from None
