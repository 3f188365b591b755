"""Merge YAML files and command-line overrides into a config, with one-line errors.

yacs' own merge raises on an int given for a float key ("BASE_LR 1"), names no close key for a
typo, and fails with a traceback; this merge coerces the safe cases, suggests the closest valid
key and raises ConfigError with the full key.
"""
import ast
import difflib
import math
import re
from typing import Any, List, Optional, Sequence, Tuple

import yaml
from yacs.config import CfgNode

from pet.lib.config.defaults import get_cfg
from pet.lib.config.errors import ConfigError, first_line
from pet.lib.config.foreign_keys import foreign_key_hint
from pet.lib.config.yaml_file import BASE_KEY, MAX_DEPTH, flatten, read_flow_value, read_yaml_with_bases

_SCALAR_TYPES = (str, int, float, bool, type(None))
_DEFAULTS = get_cfg()


def load_cfg(cfg_file: Optional[str] = None, overrides: Sequence[str] = ()) -> CfgNode:
    """Return the defaults merged with ``cfg_file`` (YAML, over its ``_BASE_`` chain) and then
    ``overrides`` (``KEY VALUE`` or ``KEY=VALUE``).

    Raises ConfigError for a missing or unreadable file, an unknown key or a value of the
    wrong type.
    """
    cfg = get_cfg()
    if cfg_file is not None:
        merge_from_file(cfg, cfg_file)
    merge_from_list(cfg, overrides)
    return cfg


def merge_from_file(cfg: CfgNode, cfg_file: str) -> None:
    """Merge the YAML file ``cfg_file``, over its ``_BASE_`` files, into ``cfg`` in place.

    Raises ConfigError, naming the file, for a path that is not a readable regular file, more
    than MAX_FILE_BYTES, bytes that are not UTF-8, invalid YAML, YAML aliases, nesting deeper
    than MAX_DEPTH, a key given twice in one mapping (a section written twice), or a bad
    ``_BASE_`` (see read_yaml_with_bases). A bad key names the file of the chain that set it.
    """
    mapping, sources = read_yaml_with_bases(cfg_file)
    for full_key, value in flatten(mapping):
        _set(cfg, full_key, value, source=sources.get(full_key, cfg_file), from_yaml=True)


# Overrides longer than this are no config value (a pasted file, a runaway script).
MAX_OVERRIDE_CHARS = 10_000


def merge_from_list(cfg: CfgNode, overrides: Sequence[str]) -> None:
    """Merge ``[KEY, VALUE, KEY=VALUE, ...]`` (see split_overrides) into ``cfg`` in place;
    values are Python literals (``0.05``, ``"(300, 400)"``, ``True``), lists and mappings
    written as in the YAML file (``"[{KEY: head, LR_MULT: 10}]"``; a mapping given to a section
    sets its keys) or bare strings (``ADAMW``)."""
    overrides = split_overrides(overrides)
    for full_key, text in zip(overrides[0::2], overrides[1::2]):
        if full_key == BASE_KEY:
            raise ConfigError(f"{BASE_KEY} (command line): is read from a YAML file only; write "
                              f"it in the file given to --cfg")
        if isinstance(text, str) and len(text) > MAX_OVERRIDE_CHARS:
            raise ConfigError(f"{full_key} (command line): value longer than {MAX_OVERRIDE_CHARS} "
                              f"characters; not a config value")
        value, from_yaml = _read_override(full_key, text)
        _set(cfg, full_key, value, source="command line", from_yaml=from_yaml)


# What a config key looks like on the command line: dotted identifiers (SOLVER.OPTIMIZER.BASE_LR,
# SOLVER.OPTIMIZER.KWARGS.lr_decay; also a foreign optim_wrapper.optimizer.lr, for its hint).
CONFIG_KEY_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


def split_overrides(tokens: Sequence[Any]) -> List[Any]:
    """``tokens`` as a flat ``[KEY, VALUE, KEY, VALUE, ...]`` list: where a KEY is expected, a
    ``KEY=VALUE`` token (KEY a dotted identifier) gives both, split at the first ``=``; the
    token after a plain KEY is its VALUE, taken as it is (``=`` and all). Raises ConfigError
    for ``KEY=`` (no value) and for a KEY left without a value."""
    pairs: List[Any] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        key, equals, value = token.partition("=") if isinstance(token, str) else (token, "", "")
        if equals and CONFIG_KEY_PATTERN.fullmatch(key):
            if not value:
                raise ConfigError(f"{key} (command line): {token!r} has no value; write "
                                  f"{key}=VALUE or {key} VALUE")
            pairs += [key, value]
            index += 1
        elif index + 1 < len(tokens):
            pairs += [token, tokens[index + 1]]
            index += 2
        else:
            raise ConfigError(f"overrides must be KEY VALUE pairs; {token!r} has no value")
    return pairs


def all_keys(cfg: CfgNode, prefix: str = "") -> List[str]:
    """Every leaf key of ``cfg`` as a dotted full key."""
    keys = []
    for key, value in cfg.items():
        full_key = prefix + key
        if isinstance(value, CfgNode):
            keys.extend(all_keys(value, full_key + "."))
        else:
            keys.append(full_key)
    return keys


def _read_override(full_key: str, text: Any) -> Tuple[Any, bool]:
    """(value, whether it was read as YAML): a Python literal as yacs reads it, else a list or
    mapping written as in the YAML file (``[{KEY: head, LR_MULT: 10}]``), read as there, else
    the text."""
    value = _parse_literal(text)
    if not isinstance(text, str) or value is not text or text.lstrip()[:1] not in ("[", "{") \
            or _is_text_key(full_key):
        return value, False
    try:
        return read_flow_value(text), True
    except (yaml.YAMLError, RecursionError) as e:
        why = first_line(e) if isinstance(e, yaml.YAMLError) else f"nested deeper than {MAX_DEPTH} levels"
        raise ConfigError(f"{full_key} (command line): not a Python literal nor valid YAML ({why})") from None


def _is_text_key(full_key: str) -> bool:
    """Whether ``full_key``'s default is text (OUTPUT_DIR): its value is never parsed."""
    return isinstance(_default_value(full_key, None), str)


def _parse_literal(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text


# Keys that were replaced: the config names the new key instead of "unknown key".
RENAMED_KEYS = {
    "SOLVER.OPTIMIZER.CUSTOM_RULES": "SOLVER.OPTIMIZER.CUSTOM_KEYS, a list of mappings: write "
                                     "[[head, 10, 1]] as [{KEY: head, LR_MULT: 10, DECAY_MULT: 1}]",
}


def set_key(cfg: CfgNode, full_key: str, value: Any, source: str) -> None:
    """Set ``full_key`` of ``cfg`` to ``value`` coerced to its default's type, as a YAML file or
    an override sets it (ConfigError naming the key and ``source``)."""
    _set(cfg, full_key, value, source)


def _set(cfg: CfgNode, full_key: str, value: Any, source: str, from_yaml: bool = False) -> None:
    if full_key.upper() in RENAMED_KEYS:
        raise ConfigError(f"{full_key} ({source}): was replaced by {RENAMED_KEYS[full_key.upper()]}")
    node = cfg
    parts = full_key.split(".")
    leaf = parts[-1]
    for depth, part in enumerate(parts[:-1]):
        if isinstance(node, CfgNode) and part not in node and node.is_new_allowed():
            # An open section (SOLVER.OPTIMIZERS) takes new sub-sections too; its owner checks them.
            node[part] = CfgNode(new_allowed=True)
        if not isinstance(node, CfgNode) or part not in node:
            raise ConfigError(_unknown_key_message(cfg, full_key, source))
        node = node[part]
    if not isinstance(node, CfgNode):
        raise ConfigError(_unknown_key_message(cfg, full_key, source))
    if leaf not in node:
        # An open section (SOLVER.OPTIMIZER.KWARGS) takes new keys; its owner checks them.
        if not node.is_new_allowed():
            raise ConfigError(_unknown_key_message(cfg, full_key, source))
        if isinstance(value, dict):  # ``generator: {...}``: a section of its own
            node[leaf] = CfgNode(new_allowed=True)
            _set_section(cfg, full_key, value, source, from_yaml)
            return
        node[leaf] = _coerce(full_key, _decode_yaml_text(value, None) if from_yaml else value, None)
        return
    if isinstance(node[leaf], CfgNode):
        if isinstance(value, dict):  # its keys; an empty mapping (``KWARGS: {}``) sets nothing
            _set_section(cfg, full_key, value, source, from_yaml)
            return
        raise ConfigError(f"{full_key} ({source}): is a section, not a key; set one of its keys")
    default = _default_value(full_key, node[leaf])
    node[leaf] = _coerce(full_key, _decode_yaml_text(value, default) if from_yaml else value, default)


def _set_section(cfg: CfgNode, full_key: str, mapping: dict, source: str, from_yaml: bool) -> None:
    """Set the keys of the section ``full_key`` that ``mapping`` holds, as a file's nested
    mapping sets them (``SOLVER.OPTIMIZER.KWARGS "{lr_decay: 1e-4}"`` on the command line)."""
    for key, value in flatten(mapping, full_key + "."):
        _set(cfg, key, value, source, from_yaml)


def _decode_yaml_text(value: Any, default: Any) -> Any:
    """A YAML value as yacs reads it (its ``_decode_cfg_value``): YAML leaves ``1e-3``,
    ``(30, 40)`` and ``None`` as text, yacs (and so Pet's and detectron2's configs) reads them
    as Python literals. Inside a list or a mapping (``STEPS: [1e3, 2e3]``, ``CUSTOM_KEYS:
    [{KEY: head, LR_MULT: 1e-1}]``) only the numbers YAML missed and None are read, so names
    stay text. So does a key whose default is text: ``OUTPUT_DIR: 1e3`` names a directory."""
    if isinstance(default, str) or (isinstance(default, tuple) and default
                                    and all(isinstance(v, str) for v in default)):
        return value
    if isinstance(value, str):
        return _parse_literal(value)
    return _decode_missed_numbers(value)


# What YAML 1.1 reads as text but Python as a literal: exponents without a dot, and None.
_YAML_MISSED = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+|None")


def _decode_missed_numbers(value: Any) -> Any:
    if isinstance(value, str):
        return _parse_literal(value) if _YAML_MISSED.fullmatch(value) else value
    if isinstance(value, list):
        return [_decode_missed_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _decode_missed_numbers(v) for k, v in value.items()}
    return value


def _default_value(full_key: str, current: Any) -> Any:
    """The default of ``full_key`` (``current`` for a key the defaults lack). Values are coerced
    to the default's type, not the current one's, so an optional key that a YAML set to 1
    (WARM_UP_EPOCHS) still takes 0.5 or None from an override."""
    node = _DEFAULTS
    for part in full_key.split("."):
        if not isinstance(node, CfgNode) or part not in node:
            return current
        node = node[part]
    return node


def _unknown_key_message(cfg: CfgNode, full_key: str, source: str) -> str:
    foreign = foreign_key_hint(full_key)
    if foreign:
        return f"unknown config key {full_key} ({source}) ({foreign})"
    candidates = all_keys(cfg)
    # A right name under a wrong section is the likelier slip; then the closest spelling.
    leaf = full_key.split(".")[-1].upper()
    close = [k for k in candidates if k.split(".")[-1] == leaf][:1]
    if not close:
        close = difflib.get_close_matches(full_key.upper(), candidates, n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown config key {full_key} ({source}){hint}"


def _type_name(value: Any) -> str:
    return type(value).__name__


def _coerce(full_key: str, value: Any, default: Any) -> Any:
    """Return ``value`` converted to the type of ``default``, or raise ConfigError."""
    if isinstance(value, (list, tuple)):
        value = _as_tuple(value)
    _check_finite(full_key, value)
    if default is None:
        # Optional keys (TOTAL_EPOCHS, WARM_UP_EPOCHS, ...): any scalar; validation checks it.
        if isinstance(value, _SCALAR_TYPES) or isinstance(value, tuple):
            return value
    elif isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:
                raise ConfigError(f"{full_key}: {value} is too large for a number") from None
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif isinstance(default, str):
        if default == "" and (value is None or value == "None"):
            return ""  # an off-by-default path (MODEL.WEIGHTS: null): off
        if isinstance(value, str):
            return value
    elif isinstance(default, tuple):
        if isinstance(value, tuple):
            return _coerce_tuple(full_key, value, default)
    raise ConfigError(
        f"{full_key}: expected {_describe(default)}, got {value!r} ({_type_name(value)})"
    )


# Keys where infinity is a meaningful value (the max-norm); every other key refuses inf and NaN
# here, before they can pass a "> 0" check and fail a run after it wrote files.
INFINITY_ALLOWED_KEYS = ("SOLVER.OPTIMIZER.CLIP_GRADIENTS.NORM_TYPE",)


def _check_finite(full_key: str, value: Any) -> None:
    values = value if isinstance(value, tuple) else (value,)
    for element in values:
        if isinstance(element, tuple):
            _check_finite(full_key, element)
        elif isinstance(element, float) and not math.isfinite(element):
            if math.isinf(element) and full_key.upper() in INFINITY_ALLOWED_KEYS:
                continue
            raise ConfigError(f"{full_key}: expected a finite number, got {element!r}")


def _as_tuple(value: Any) -> Any:
    """Lists (from YAML) as tuples, nested ones included, as yacs keeps sequences."""
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuple(v) for v in value)
    return value


def _coerce_tuple(full_key: str, value: tuple, default: tuple) -> tuple:
    element_types = {type(v) for v in default}
    if element_types == {int} or element_types == {float} or element_types == {int, float}:
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise ConfigError(f"{full_key}: expected a list of numbers, got {value!r}")
        if element_types == {float}:
            return tuple(float(v) for v in value)
        return value
    if element_types == {str}:
        if not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{full_key}: expected a list of strings, got {value!r}")
    return value


def _describe(default: Any) -> str:
    if default is None:  # an optional key, or a new one in an open section
        return "a single value or a list"
    if isinstance(default, bool):
        return "True or False"
    if isinstance(default, float):
        return "a number"
    if isinstance(default, int):
        return "an integer"
    if isinstance(default, str):
        return "a string"
    if isinstance(default, tuple):
        return "a list"
    return _type_name(default)

