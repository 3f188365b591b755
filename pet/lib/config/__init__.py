"""Config defaults, loading (YAML + command-line overrides) and validation."""
from pet.lib.config.defaults import get_cfg
from pet.lib.config.errors import ConfigError
from pet.lib.config.loader import load_cfg, merge_from_file, merge_from_list
from pet.lib.config.validate import validate_optimizer, validate_scheduler, validate_solver

__all__ = [
    "ConfigError",
    "get_cfg",
    "load_cfg",
    "merge_from_file",
    "merge_from_list",
    "validate_optimizer",
    "validate_scheduler",
    "validate_solver",
]
