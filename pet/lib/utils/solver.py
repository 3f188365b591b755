"""The SOLVER section checked as a whole, through the same adapters that build the solver."""
from typing import Optional

from yacs.config import CfgNode

from pet.lib.config.validate import validate_snapshots, validate_step
from pet.lib.utils.lr_scheduler import build_schedule
from pet.lib.utils.optimizer import optimizer_spec


def validate_solver(solver: CfgNode, iter_per_epoch: Optional[int] = None) -> None:
    """Check every key of ``SOLVER`` (ConfigError on the first bad one); ``iter_per_epoch`` is
    needed for epoch-based keys."""
    optimizer_spec(solver.OPTIMIZER)
    build_schedule(solver.SCHEDULER, iter_per_epoch)
    validate_step(solver)
    validate_snapshots(solver)
