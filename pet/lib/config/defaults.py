"""The root config: every section's defaults joined under one CfgNode."""
from yacs.config import CfgNode as CN

from pet.lib.config.solver import SOLVER

_C = CN()
# Where a run writes its config, log, metrics and checkpoints.
_C.OUTPUT_DIR = "ckpts/default"
_C.SOLVER = SOLVER


def get_cfg() -> CN:
    """Return a fresh, unfrozen copy of all defaults; changing it never touches the defaults."""
    return _C.clone()
