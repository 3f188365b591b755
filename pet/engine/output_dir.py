"""The run directory (OUTPUT_DIR): refusing to overwrite a run, and preparing it for writing."""
import logging
import os
from typing import Any, Dict

from yacs.config import CfgNode

from pet.lib.config.errors import ConfigError
from pet.lib.config.loader import flatten
from pet.engine.checkpointer import (
    atomic_write,
    cfg_to_dict,
    find_checkpoints,
)
from pet.engine.logger import attach_log_file

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
LOG_FILE = "log.txt"


def check_output_dir(output_dir: str, resume: bool) -> None:
    """Refuse to start a new run over an old run's checkpoints (``--resume`` with nothing to
    resume is refused by ``Checkpointer``, also before anything is written).

    Raises ConfigError (exit status 2 in the tools); writes nothing.
    """
    existing = find_checkpoints(output_dir)
    if not resume and existing:
        shown = ", ".join(existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
        raise ConfigError(
            f"OUTPUT_DIR {output_dir} already holds checkpoints ({shown}); add --resume to continue "
            f"that run, or set another OUTPUT_DIR"
        )


def prepare_output_dir(cfg: CfgNode, resume: bool) -> None:
    """Create OUTPUT_DIR, write the merged config to ``config.yaml`` and start ``log.txt``
    (appended to when resuming). The first write of a run: call it after every check."""
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    atomic_write(os.path.join(cfg.OUTPUT_DIR, CONFIG_FILE), lambda f: f.write(cfg.dump().encode()))
    attach_log_file(os.path.join(cfg.OUTPUT_DIR, LOG_FILE), append=resume)


def log_config_changes(saved_config: Dict[str, Any], cfg: CfgNode) -> None:
    """Log every key whose value differs between the checkpoint's config and this run's
    (this run's values are the ones used)."""
    saved = dict(flatten(saved_config))
    for key, value in flatten(cfg_to_dict(cfg)):
        if key in saved and saved[key] != value:
            logger.info("resume: %s was %r in the checkpoint's run, is %r now (used)",
                        key, saved[key], value)
