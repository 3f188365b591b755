"""The SOLVER section checked as a whole, through the same adapters that build the solver."""
from typing import Optional

from yacs.config import CfgNode

from pet.lib.config.validate import validate_snapshots, validate_step
from pet.lib.utils.lr_scheduler import build_param_curves, build_schedule
from pet.lib.utils.optimizer import OPTIMIZERS, optimizer_spec
from pet.lib.utils.param_schedules import check_param_key


def validate_solver(solver: CfgNode, iter_per_epoch: Optional[int] = None) -> None:
    """Check every key of ``SOLVER`` (ConfigError on the first bad one); ``iter_per_epoch`` is
    needed for epoch-based keys."""
    spec = optimizer_spec(solver.OPTIMIZER)
    build_schedule(solver.SCHEDULER, iter_per_epoch)
    # A scheduled key the optimizer's constructor does not take is no param-group key of it.
    info = OPTIMIZERS.get(spec.name)
    for index, schedule in enumerate(build_param_curves(solver.SCHEDULER, iter_per_epoch)):
        check_param_key(index, schedule.param, info.cls.__name__,
                        [k for k in info.keywords if k not in ("self", "params")])
    validate_step(solver)
    validate_snapshots(solver)
