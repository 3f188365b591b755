"""Every check of a training job in one place, run before anything is written to OUTPUT_DIR:
the value checks of each section (``pet.lib.config``), the names against the registries
(models, data sets, optimizers, lr policies, clip types) and the data set, built (once per
process: the run reuses it) for its length and its classes."""
from typing import Optional

from yacs.config import CfgNode

from pet.data import DATASETS, build_datasets, iter_per_epoch, num_classes
from pet.lib.config.validate_job import (
    validate_batch_size,
    validate_data,
    validate_micro_batches,
    validate_num_classes,
    validate_model,
    validate_run,
    validate_strategy,
    validate_test,
)
from pet.lib.config.runtime import validate_runtime
from pet.lib.utils.solver import validate_solver
from pet.models import MODELS
from pet.engine.fsdp import check_fsdp_job
from pet.engine.hook_config import check_custom_hooks
from pet.engine.writers import WRITERS


def validate_job(cfg: CfgNode, iter_per_epoch_override: Optional[int] = None,
                 world_size: Optional[int] = None) -> int:
    """Check every section of ``cfg`` for a run of ``world_size`` processes (None: a tool
    checking the config without running it, which cannot know; the batch is then checked for
    one process); return the
    iterations per epoch the schedule is converted with: ``iter_per_epoch_override`` when given
    (a what-if of the tools), else the training loader's.

    Raises ConfigError on the first bad key.
    """
    validate_run(cfg)
    validate_runtime(cfg)
    for index, name in enumerate(cfg.WRITERS):
        WRITERS.check(name, f"WRITERS[{index}]")
    check_custom_hooks(cfg.CUSTOM_HOOKS)
    MODELS.check(cfg.MODEL.TYPE, "MODEL.TYPE")
    validate_model(cfg.MODEL)
    DATASETS.check(cfg.DATA.DATASET, "DATA.DATASET")
    validate_data(cfg.DATA)
    validate_test(cfg.TEST)
    train, _ = build_datasets(cfg.DATA)
    classes = num_classes(train)
    if classes:
        validate_num_classes(cfg.MODEL, classes)
    validate_batch_size(cfg.DATA, len(train))
    if iter_per_epoch_override is not None:
        iters = iter_per_epoch_override
    else:
        iters = iter_per_epoch(cfg)
    validate_solver(cfg.SOLVER, iters)
    validate_micro_batches(cfg, len(train), world_size or 1)
    validate_strategy(cfg, world_size)
    if cfg.SOLVER.DISTRIBUTED.STRATEGY == "fsdp":
        check_fsdp_job(cfg)
    return iters
