"""Every check of a training job in one place, run before anything is written to OUTPUT_DIR:
the value checks of each section (``pet.lib.config``) and the names against the registries
(models, data sets, optimizers, lr policies, clip types)."""
from typing import Optional

from yacs.config import CfgNode

from pet.data import DATASETS, iter_per_epoch
from pet.lib.config.validate_job import (
    validate_batches,
    validate_data,
    validate_model,
    validate_run,
    validate_test,
)
from pet.lib.utils.solver import validate_solver
from pet.models import MODELS


def validate_job(cfg: CfgNode, iter_per_epoch_override: Optional[int] = None) -> int:
    """Check every section of ``cfg``; return the iterations per epoch the schedule is
    converted with: ``iter_per_epoch_override`` when given (a what-if of the tools), else the
    training loader's.

    Raises ConfigError on the first bad key.
    """
    validate_run(cfg)
    MODELS.check(cfg.MODEL.TYPE, "MODEL.TYPE")
    validate_model(cfg.MODEL)
    DATASETS.check(cfg.DATA.DATASET, "DATA.DATASET")
    validate_data(cfg.DATA)
    validate_test(cfg.TEST)
    iters = iter_per_epoch(cfg)
    validate_batches(cfg.DATA, iters)
    if iter_per_epoch_override is not None:
        iters = iter_per_epoch_override
    validate_solver(cfg.SOLVER, iters)
    return iters
