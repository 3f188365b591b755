"""Reading a YAML config file: the limits that refuse hostile files, and detectron2's ``_BASE_``
inheritance (a file merged over the files it names)."""
import os
from typing import Any, Dict, Iterator, List, Optional, Tuple

import yaml

from pet.lib.config.errors import ConfigError, first_line

# A config is a few KiB of a few levels: the limits refuse hostile files (billion laughs,
# deep nesting, huge values) before they cost time or memory.
MAX_FILE_BYTES = 1 << 20
MAX_DEPTH = 32
# detectron2's inheritance: ``_BASE_: path`` (or a list of paths) in a YAML file names the files
# it is merged over; a relative path is read from the directory of the file that names it.
BASE_KEY = "_BASE_"
# The files one --cfg may read, bases of bases included (a chain is 2-3 files in practice).
MAX_CHAIN_FILES = 16


def read_yaml_with_bases(cfg_file: str) -> Tuple[dict, Dict[str, str]]:
    """(mapping, sources): the mapping of ``cfg_file`` merged over those of its ``_BASE_``
    files, recursively (nested mappings merge key by key, the later file wins; ``_BASE_``
    itself is dropped), and for each dotted leaf key the file that set it.

    Every file passes read_yaml's limits. Raises ConfigError (one line) for a ``_BASE_`` that is
    not a path or list of paths, a missing or unreadable base (naming it and the file that
    names it), a cycle (naming the chain) or more than MAX_CHAIN_FILES files.
    """
    sources: Dict[str, str] = {}
    mapping = _read_with_bases(cfg_file, f"--cfg {cfg_file}", [], sources, [0])
    return mapping, sources


def _read_with_bases(path: str, label: str, chain: List[Tuple[str, str]],
                     sources: Dict[str, str], files_read: List[int]) -> dict:
    real = os.path.realpath(path)
    if real in (seen for _, seen in chain):
        names = " -> ".join([shown for shown, _ in chain] + [path])
        raise ConfigError(f"--cfg {chain[0][0]}: the _BASE_ files form a cycle: {names}")
    files_read[0] += 1
    if files_read[0] > MAX_CHAIN_FILES:
        raise ConfigError(f"--cfg {chain[0][0]}: more than {MAX_CHAIN_FILES} files in its _BASE_ "
                          f"chain (at {path}); not a config")
    mapping = read_yaml(path, label)
    bases = mapping.pop(BASE_KEY, None)
    merged: dict = {}
    for base in _base_paths(bases, path):
        resolved = os.path.normpath(os.path.join(os.path.dirname(path), os.path.expanduser(base)))
        base_label = f"_BASE_ {base} (named in {path})"
        if not os.path.exists(resolved):
            raise ConfigError(f"{base_label}: no such file {os.path.abspath(resolved)}")
        base_mapping = _read_with_bases(resolved, base_label, chain + [(path, real)], sources,
                                        files_read)
        _merge_into(merged, base_mapping)
    sources.update((key, path) for key, _ in flatten(mapping))
    return _merge_into(merged, mapping)


def _base_paths(bases: Any, path: str) -> List[str]:
    if bases is None:
        return []
    paths = [bases] if isinstance(bases, str) else bases
    if not (isinstance(paths, list) and paths and all(isinstance(p, str) and p for p in paths)):
        raise ConfigError(f"{BASE_KEY} ({path}): expected a path or a list of paths to YAML "
                          f"files, got {bases!r}")
    return paths


def _merge_into(base: dict, child: dict) -> dict:
    """``base`` with ``child`` merged over it, key by key in nested mappings (in place)."""
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge_into(base[key], value)
        else:
            base[key] = value
    return base


def read_yaml(cfg_file: str, label: Optional[str] = None) -> dict:
    """The mapping in ``cfg_file`` ({} for an empty file), read through the limits above;
    ConfigError messages start with ``label`` (default ``--cfg FILE``)."""
    label = label or f"--cfg {cfg_file}"
    if not os.path.exists(cfg_file):
        where = "" if os.path.isabs(cfg_file) else (
            f" (looked for {os.path.abspath(cfg_file)}: a relative path is read from the working "
            f"directory {os.getcwd()})")
        raise ConfigError(f"{label}: no such file{where}")
    if not os.path.isfile(cfg_file):
        raise ConfigError(f"{label}: not a regular file")
    if os.path.splitext(cfg_file)[1] not in (".yaml", ".yml"):
        raise ConfigError(f"{label}: only YAML files (.yaml, .yml) are accepted")
    try:
        with open(cfg_file, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{label}: cannot be read ({e.strerror})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"{label}: larger than {MAX_FILE_BYTES // 1024} KiB; not a config")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{label}: not UTF-8 text (byte {e.start})") from None
    try:
        loaded = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        raise ConfigError(f"{label}: not valid YAML ({first_line(e)})") from None
    except RecursionError:
        raise ConfigError(f"{label}: nested deeper than {MAX_DEPTH} levels") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{label}: the top level must be a mapping of keys")
    return loaded


def read_flow_value(text: str) -> Any:
    """A command-line value written as a YAML flow collection (``[{KEY: head, LR_MULT: 10}]``,
    ``[json]``), read as the same text in a file is, with its limits; yaml.YAMLError or
    RecursionError when it is not YAML."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases, nesting deeper than MAX_DEPTH and duplicate keys."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.YAMLError(f"line {event.start_mark.line + 1}: aliases (*name) are not "
                                 f"accepted in a config; write the value out")
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.YAMLError(f"line {mark.line + 1}: nested deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, str) and key in seen:
                raise yaml.YAMLError(f"line {key_node.start_mark.line + 1}: key {key} is given "
                                     f"twice in one mapping (the first would be dropped); merge them")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def flatten(mapping: dict, prefix: str = "") -> Iterator[Tuple[str, Any]]:
    """(dotted full key, value) for every leaf of nested dicts."""
    for key, value in mapping.items():
        full_key = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from flatten(value, full_key + ".")
        else:
            yield full_key, value
