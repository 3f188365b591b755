"""Config defaults, loading (YAML + command-line overrides) and the value checks of every
section; imports neither torch nor the data, models or solver."""
from pet.lib.config.defaults import get_cfg
from pet.lib.config.errors import ConfigError
from pet.lib.config.loader import load_cfg, merge_from_file, merge_from_list

__all__ = ["ConfigError", "get_cfg", "load_cfg", "merge_from_file", "merge_from_list"]
