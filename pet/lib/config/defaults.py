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
# Hooks of the user's own, each a mapping {TYPE: a name of the HOOKS registry (pet.engine.hooks;
# register with @HOOKS.register() in a CUSTOM_IMPORTS module), PRIORITY: HIGHEST, VERY_HIGH, HIGH,
# ABOVE_NORMAL, NORMAL (the default), BELOW_NORMAL, LOW, VERY_LOW, LOWEST or an int in [0, 100]
# (MMEngine's order: smaller runs earlier), and the hook's constructor arguments as keys
# (MESSAGE: hi -> message="hi")}. The built-in hooks run at: IterationTimer VERY_HIGH,
# LRScheduler HIGH, EMAHook ABOVE_NORMAL, EvalHook NORMAL, MetricsWriter BELOW_NORMAL,
# PeriodicCheckpointer and BestCheckpointer VERY_LOW (MMEngine's CheckpointHook); a custom hook
# of the same priority runs after them. E.g. [{TYPE: MyHook, PRIORITY: LOW, EVERY: 10}].
_C.CUSTOM_HOOKS = ()
# Where the metrics of every logged iteration go (pet.engine.writers): "json" (metrics.json,
# JSON lines; also what --resume trims), "tensorboard" (event files in OUTPUT_DIR:
# tensorboard --logdir OUTPUT_DIR just works, as with detectron2's default writers) and "csv"
# (metrics.csv: iteration,epoch,name,value rows; opt-in).
_C.WRITERS = ("json", "tensorboard")
_C.SEED = train.SEED
_C.NUM_THREADS = train.NUM_THREADS
_C.LOG_PERIOD = train.LOG_PERIOD
_C.DETERMINISTIC = train.DETERMINISTIC
_C.TF32 = train.TF32
_C.MODEL = MODEL
_C.DATA = DATA
_C.SOLVER = SOLVER
_C.TEST = train.TEST


def get_cfg() -> CN:
    """Return a fresh, unfrozen copy of all defaults; changing it never touches the defaults."""
    return _C.clone()
