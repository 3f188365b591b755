"""Registries: the one place each name a config may choose (optimizer, lr policy, clip type,
param rule, model, data set, hook) is defined.

fvcore/detectron2 style: ``@REGISTRY.register()`` registers a class or function under its own
name, ``REGISTRY.register(name="X")`` under another; lookups ignore case. Validation reads the
registry, so adding an entry touches one place and the error messages list it at once.
"""
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

from pet.lib.config.errors import ConfigError


class Registry:
    """Names (case-insensitive) to entries.

    Args:
        kind: what an entry is, for messages ("optimizer", "lr policy").
        make_entry: turns what is registered into the stored entry (e.g. a bare optimizer
            class into a record of its capabilities); identity by default.
    """

    def __init__(self, kind: str, make_entry: Optional[Callable[[Any], Any]] = None) -> None:
        self.kind = kind
        self._make_entry = make_entry or (lambda obj: obj)
        self._entries: Dict[str, Any] = {}
        self._names: Dict[str, str] = {}  # upper-case key -> the name as registered

    def register(self, obj: Any = None, *, name: Optional[str] = None) -> Any:
        """Register ``obj`` under ``name`` (default: its ``__name__``); usable as a decorator,
        ``@REG.register()`` or ``@REG.register(name="X")``. Returns ``obj`` unchanged.

        Raises KeyError when the name is taken (a silent replacement would hide a clash).
        """
        def add(item: Any) -> Any:
            shown = name or item.__name__
            key = shown.upper()
            if key in self._entries:
                raise KeyError(f"{self.kind} {shown!r} is already registered")
            self._entries[key] = self._make_entry(item)
            self._names[key] = shown
            return item

        return add if obj is None else add(obj)

    def unregister(self, name: str) -> Any:
        """Remove ``name`` and return its entry (a test or a notebook undoing a register)."""
        self.get(name)
        del self._names[name.upper()]
        return self._entries.pop(name.upper())

    def names(self) -> Tuple[str, ...]:
        """The registered names, in registration order, spelled as registered."""
        return tuple(self._names.values())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.upper() in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str) -> Any:
        """The entry of ``name`` (any case); KeyError listing the allowed names."""
        if name not in self:
            raise KeyError(f"unknown {self.kind} {name!r}; allowed: {', '.join(self.names())}")
        return self._entries[name.upper()]

    def canonical(self, name: str) -> str:
        """``name`` spelled as registered (the one normalization of a config value)."""
        self.get(name)
        return self._names[name.upper()]

    def check(self, value: Any, key: str) -> str:
        """The canonical name of the config value ``value`` of ``key``; ConfigError naming the
        key, the value and the allowed names when it is not registered."""
        if value not in self:
            raise ConfigError(f"{key}: unknown value {value!r}; allowed: {', '.join(self.names())}")
        return self.canonical(value)
