"""Names that detectron2 and MMEngine users type out of habit, and the Pet key each means.

The loader only suggests these in its "unknown config key" line; it never renames a key (a
renamed key of Pet's own is RENAMED_KEYS in the loader, a different mechanism). Every target
is a key or a section of the defaults (tests/lib/config/test_config_conventions.py checks it).
"""
from typing import Dict, Optional, Tuple

from yacs.config import CfgNode

from pet.lib.config.defaults import get_cfg

# detectron2's config (detectron2/config/defaults.py) -> Pet's key.
DETECTRON2_KEYS: Dict[str, str] = {
    "SOLVER.MAX_ITER": "SOLVER.SCHEDULER.TOTAL_ITERS",
    "SOLVER.IMS_PER_BATCH": "DATA.BATCH_SIZE",
    "SOLVER.CHECKPOINT_PERIOD": "SOLVER.SNAPSHOT_ITERS",
    "SOLVER.BASE_LR": "SOLVER.OPTIMIZER.BASE_LR",
    "SOLVER.BASE_LR_END": "SOLVER.SCHEDULER.MIN_LR",
    "SOLVER.MOMENTUM": "SOLVER.OPTIMIZER.MOMENTUM",
    "SOLVER.NESTEROV": "SOLVER.OPTIMIZER.NESTEROV",
    "SOLVER.WEIGHT_DECAY": "SOLVER.OPTIMIZER.WEIGHT_DECAY",
    "SOLVER.WEIGHT_DECAY_NORM": "SOLVER.OPTIMIZER.WEIGHT_DECAY_NORM",
    "SOLVER.WEIGHT_DECAY_BIAS": "SOLVER.OPTIMIZER.WEIGHT_DECAY_BIAS",
    "SOLVER.BIAS_LR_FACTOR": "SOLVER.OPTIMIZER.BIAS_LR_FACTOR",
    "SOLVER.LR_SCHEDULER_NAME": "SOLVER.SCHEDULER.POLICY",
    "SOLVER.GAMMA": "SOLVER.SCHEDULER.GAMMA",
    "SOLVER.STEPS": "SOLVER.SCHEDULER.STEPS",
    "SOLVER.WARMUP_ITERS": "SOLVER.SCHEDULER.WARM_UP_ITERS",
    "SOLVER.WARMUP_FACTOR": "SOLVER.SCHEDULER.WARM_UP_FACTOR",
    "SOLVER.WARMUP_METHOD": "SOLVER.SCHEDULER.WARM_UP_METHOD",
    "SOLVER.CLIP_GRADIENTS": "SOLVER.OPTIMIZER.CLIP_GRADIENTS",
    "SOLVER.CLIP_GRADIENTS.ENABLED": "SOLVER.OPTIMIZER.CLIP_GRADIENTS.ENABLED",
    "SOLVER.CLIP_GRADIENTS.CLIP_TYPE": "SOLVER.OPTIMIZER.CLIP_GRADIENTS.CLIP_TYPE",
    "SOLVER.CLIP_GRADIENTS.CLIP_VALUE": "SOLVER.OPTIMIZER.CLIP_GRADIENTS.CLIP_VALUE",
    "SOLVER.CLIP_GRADIENTS.NORM_TYPE": "SOLVER.OPTIMIZER.CLIP_GRADIENTS.NORM_TYPE",
    "TEST.EVAL_PERIOD": "TEST.EVAL_ITERS",
}

# MMEngine's config (dotted as on its --cfg-options command line) -> Pet's key.
MMENGINE_KEYS: Dict[str, str] = {
    "optim_wrapper": "SOLVER.OPTIMIZER",
    "optim_wrapper.optimizer": "SOLVER.OPTIMIZER",
    "optim_wrapper.optimizer.type": "SOLVER.OPTIMIZER.TYPE",
    "optim_wrapper.optimizer.lr": "SOLVER.OPTIMIZER.BASE_LR",
    "optim_wrapper.optimizer.weight_decay": "SOLVER.OPTIMIZER.WEIGHT_DECAY",
    "optim_wrapper.optimizer.momentum": "SOLVER.OPTIMIZER.MOMENTUM",
    "optim_wrapper.optimizer.nesterov": "SOLVER.OPTIMIZER.NESTEROV",
    "optim_wrapper.optimizer.betas": "SOLVER.OPTIMIZER.BETAS",
    "optim_wrapper.optimizer.eps": "SOLVER.OPTIMIZER.EPS",
    "optim_wrapper.clip_grad": "SOLVER.OPTIMIZER.CLIP_GRADIENTS",
    "optim_wrapper.clip_grad.max_norm": "SOLVER.OPTIMIZER.CLIP_GRADIENTS.CLIP_VALUE",
    "optim_wrapper.clip_grad.norm_type": "SOLVER.OPTIMIZER.CLIP_GRADIENTS.NORM_TYPE",
    "optim_wrapper.accumulative_counts": "SOLVER.ACCUMULATION_STEPS",
    "optim_wrapper.dtype": "SOLVER.AMP.DTYPE",
    "optim_wrapper.paramwise_cfg": "SOLVER.OPTIMIZER",
    "optim_wrapper.paramwise_cfg.custom_keys": "SOLVER.OPTIMIZER.CUSTOM_KEYS",
    "optim_wrapper.paramwise_cfg.bias_lr_mult": "SOLVER.OPTIMIZER.BIAS_LR_FACTOR",
    "optim_wrapper.paramwise_cfg.dwconv_decay_mult": "SOLVER.OPTIMIZER.DWCONV_DECAY_MULT",
    "optim_wrapper.paramwise_cfg.flat_decay_mult": "SOLVER.OPTIMIZER.FLAT_DECAY_MULT",
    "param_scheduler": "SOLVER.SCHEDULER",
    "train_cfg.max_iters": "SOLVER.SCHEDULER.TOTAL_ITERS",
    "train_cfg.max_epochs": "SOLVER.SCHEDULER.TOTAL_EPOCHS",
    "train_cfg.val_interval": "TEST.EVAL_ITERS",
    "default_hooks.checkpoint.interval": "SOLVER.SNAPSHOT_ITERS",
    "default_hooks.logger.interval": "LOG_PERIOD",
    "train_dataloader.batch_size": "DATA.BATCH_SIZE",
    "val_dataloader.batch_size": "TEST.BATCH_SIZE",
    "test_dataloader.batch_size": "TEST.BATCH_SIZE",
    "randomness.seed": "SEED",
    "work_dir": "OUTPUT_DIR",
    "load_from": "MODEL.WEIGHTS",
    "custom_imports.imports": "CUSTOM_IMPORTS",
}

# UPPER-CASED foreign name -> (Pet's key, "detectron2's NAME"), so a name matches in any case.
FOREIGN_KEYS: Dict[str, Tuple[str, str]] = {
    **{name.upper(): (target, f"detectron2's {name}") for name, target in DETECTRON2_KEYS.items()},
    **{name.upper(): (target, f"MMEngine's {name}") for name, target in MMENGINE_KEYS.items()},
}


def foreign_key_hint(full_key: str) -> Optional[str]:
    """``"did you mean PET.KEY? detectron2's NAME"`` when ``full_key`` is a detectron2 or
    MMEngine name, or lies under one whose Pet counterpart is a section
    (``optim_wrapper.optimizer.foo`` -> "a key under SOLVER.OPTIMIZER"); None otherwise."""
    parts = full_key.upper().split(".")
    for end in range(len(parts), 0, -1):
        entry = FOREIGN_KEYS.get(".".join(parts[:end]))
        if entry is None:
            continue
        target, origin = entry
        if end == len(parts):
            return f"did you mean {target}? {origin}"
        if _is_section(target):
            return f"did you mean a key under {target}? {origin}"
        return None
    return None


def _is_section(full_key: str) -> bool:
    node = get_cfg()
    for part in full_key.split("."):
        node = node[part]
    return isinstance(node, CfgNode)
