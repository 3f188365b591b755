"""The root config: every section's defaults joined under one CfgNode."""
from yacs.config import CfgNode as CN

from pet.lib.config import train
from pet.lib.config.data import DATA
from pet.lib.config.model import MODEL
from pet.lib.config.solver import SOLVER

_C = CN()
# Python modules imported before the config is validated (MMEngine's custom_imports): where a
# user registers optimizers (OPTIMIZERS), param rules (PARAM_RULES), param-group builders
# (PARAM_GROUPS_BUILDERS), lr policies, ... that the config then names. Each must be importable
# (on PYTHONPATH), e.g. ["my_project.optim"].
_C.CUSTOM_IMPORTS = ()
# Where a run writes config.yaml, log.txt, metrics.json, its checkpoints and last_checkpoint.
_C.OUTPUT_DIR = "ckpts/default"
_C.SEED = train.SEED
_C.NUM_THREADS = train.NUM_THREADS
_C.LOG_PERIOD = train.LOG_PERIOD
_C.MODEL = MODEL
_C.DATA = DATA
_C.SOLVER = SOLVER
_C.TEST = train.TEST


def get_cfg() -> CN:
    """Return a fresh, unfrozen copy of all defaults; changing it never touches the defaults."""
    return _C.clone()
