"""Several step seams by name: MMEngine's ``OptimWrapperDict`` for models trained with several
optimizers (a GAN's generator and discriminator), imported with ``OptimWrapper`` from
``pet.lib.utils.optim_wrapper``."""
from typing import Any, Dict, ItemsView, Iterator, KeysView, List, ValuesView


class OptimWrapperDict:
    """A dict of ``OptimWrapper``s, ``OptimWrapperDict(gen=..., disc=...)``.

    As MMEngine's, it updates nothing itself: a model's ``train_step`` calls
    ``update_params`` on the wrapper of each optimizer it steps (``update_params``,
    ``backward``, ``step`` and ``optim_context`` raise NotImplementedError saying so). It reads
    and saves all of them: ``get_lr`` and ``get_momentum`` (``{'gen.lr': [...], 'disc.lr':
    [...]}``), ``read_back`` (each wrapper's metrics, prefixed alike), ``state_dict`` and
    ``load_state_dict`` (``{name: wrapper state}``), ``zero_grad``, and dict access.

    Raises:
        TypeError when a value is not an OptimWrapper.
    """

    def __init__(self, **optim_wrappers: Any) -> None:
        for name, wrapper in optim_wrappers.items():
            # OptimWrapper's interface (its module imports this one: no isinstance here).
            if not all(callable(getattr(wrapper, m, None)) for m in ("update_params", "read_back", "get_lr")):
                raise TypeError(f"OptimWrapperDict only accepts OptimWrapper values, got "
                                f"{type(wrapper).__name__} for {name!r}")
        self.optim_wrappers = dict(optim_wrappers)

    @property
    def accumulation_steps(self) -> int:
        """The micro-batches per step of the wrappers (SOLVER.ACCUMULATION_STEPS, the same for
        all); 1 without wrappers."""
        counts = {wrapper.accumulation_steps for wrapper in self.optim_wrappers.values()} or {1}
        if len(counts) > 1:
            raise ValueError(f"the wrappers accumulate different numbers of micro-batches: {sorted(counts)}")
        return counts.pop()

    def _not_here(self, what: str):
        names = ", ".join(f"optim_wrappers[{name!r}].{what}" for name in self.optim_wrappers)
        raise NotImplementedError(f"OptimWrapperDict.{what} would update every optimizer at once; "
                                  f"call it on the wrapper of the optimizer to step: {names}")

    def update_params(self, *args, **kwargs) -> None:
        self._not_here("update_params")

    def backward(self, *args, **kwargs) -> None:
        self._not_here("backward")

    def step(self, *args, **kwargs) -> None:
        self._not_here("step")

    def optim_context(self, *args, **kwargs):
        self._not_here("optim_context")

    def zero_grad(self) -> None:
        """Every wrapper's ``zero_grad``."""
        for wrapper in self.optim_wrappers.values():
            wrapper.zero_grad()

    def _prefixed(self, per_wrapper: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
        return {f"{name}.{key}": value for name, values in per_wrapper.items()
                for key, value in values.items()}

    def get_lr(self) -> Dict[str, List[float]]:
        """``{'<name>.lr': [the lr of each param group]}`` for every wrapper."""
        return self._prefixed({name: w.get_lr() for name, w in self.optim_wrappers.items()})

    def get_momentum(self) -> Dict[str, List[float]]:
        """``{'<name>.momentum': [...]}`` for every wrapper (momentum, betas[0] or 0)."""
        return self._prefixed({name: w.get_momentum() for name, w in self.optim_wrappers.items()})

    def read_back(self) -> Dict[str, float]:
        """Every wrapper's ``read_back`` metrics as ``<name>.<metric>``."""
        return self._prefixed({name: w.read_back() for name, w in self.optim_wrappers.items()})

    def state_dict(self) -> Dict[str, Dict[str, Any]]:
        """``{name: the wrapper's state_dict()}``."""
        return {name: wrapper.state_dict() for name, wrapper in self.optim_wrappers.items()}

    def load_state_dict(self, state_dict: Dict[str, Dict[str, Any]]) -> None:
        """Load each wrapper's state (KeyError naming a wrapper the state lacks)."""
        for name, wrapper in self.optim_wrappers.items():
            if name not in state_dict:
                raise KeyError(name)
            wrapper.load_state_dict(state_dict[name])

    def keys(self) -> KeysView:
        return self.optim_wrappers.keys()

    def values(self) -> ValuesView:
        return self.optim_wrappers.values()

    def items(self) -> ItemsView:
        return self.optim_wrappers.items()

    def __getitem__(self, name: str) -> Any:
        return self.optim_wrappers[name]

    def __contains__(self, name: object) -> bool:
        return name in self.optim_wrappers

    def __len__(self) -> int:
        return len(self.optim_wrappers)

    def __iter__(self) -> Iterator[str]:
        return iter(self.optim_wrappers)

    def __repr__(self) -> str:
        return f"OptimWrapperDict({', '.join(self.optim_wrappers)})"
