"""The OPTIMIZERS registry: every ``torch.optim`` class by name, with the capabilities the
builder needs (fused/foreach kernels, which typed config keys it reads).

A user registers a class with ``@OPTIMIZERS.register()`` in a module listed in the config's
``CUSTOM_IMPORTS``; its capabilities are read off its constructor.
"""
import inspect
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch

from pet.lib.utils.grad_clip import GradientClipping
from pet.lib.utils.muon import MuonWithAdamW
from pet.lib.utils.registry import Registry


@dataclass(frozen=True)
class TypedKey:
    """A typed key of SOLVER.OPTIMIZER and the constructor keyword it becomes. ``only``: the
    key means that keyword only for this class and its subclasses (ASGD's ``alpha`` is not
    RMSprop's)."""

    key: str
    keyword: str
    only: Optional[type] = None


TYPED_KEYS: Tuple[TypedKey, ...] = (
    TypedKey("MOMENTUM", "momentum"),
    TypedKey("NESTEROV", "nesterov"),
    TypedKey("BETAS", "betas"),
    TypedKey("EPS", "eps"),
    TypedKey("AMSGRAD", "amsgrad"),
    TypedKey("CENTERED", "centered"),
    TypedKey("RMSPROP_ALPHA", "alpha", only=torch.optim.RMSprop),
    TypedKey("MUON.MOMENTUM", "muon_momentum"),
    TypedKey("MUON.NESTEROV", "muon_nesterov"),
    TypedKey("MUON.NS_STEPS", "ns_steps"),
    TypedKey("MUON.ADJUST_LR_FN", "adjust_lr_fn", only=MuonWithAdamW),
)
# Set by the builder itself, never through KWARGS.
BUILDER_KEYWORDS = ("self", "params", "lr", "weight_decay", "fused", "foreach")


def init_keywords(cls: type) -> List[str]:
    """The keyword arguments of ``cls``'s constructor."""
    return list(inspect.signature(cls.__init__).parameters)


def typed_keys_of(cls: type) -> Tuple[str, ...]:
    """The typed keys ``cls`` reads: those whose keyword its constructor takes."""
    keywords = init_keywords(cls)
    return tuple(t.key for t in TYPED_KEYS
                 if t.keyword in keywords and (t.only is None or issubclass(cls, t.only)))


@dataclass(frozen=True)
class OptimizerInfo:
    """A registry entry: the torch class and what it supports.

    ``fused``/``foreach``: torch has that kernel for it; ``momentum``/``betas``: it takes that
    argument (what a momentum schedule would drive); ``typed_keys``: the SOLVER.OPTIMIZER keys
    it reads; ``clipped``: the class that clips in ``step()``; ``sparse_only``: it steps only
    sparse gradients (SparseAdam); ``muon_split``: its param groups are split between Muon
    and AdamW (``use_muon``, SOLVER.OPTIMIZER.MUON).
    """

    cls: type
    clipped: type
    fused: bool
    foreach: bool
    momentum: bool
    betas: bool
    typed_keys: Tuple[str, ...] = ()
    sparse_only: bool = False
    muon_split: bool = False

    @property
    def keywords(self) -> List[str]:
        """The keyword arguments of the class's constructor."""
        return init_keywords(self.cls)

    @property
    def weight_decay(self) -> bool:
        """Whether the class takes a weight decay."""
        return "weight_decay" in self.keywords

    def typed_keyword(self, key: str) -> str:
        """The constructor keyword of the typed key ``key``."""
        return next(t.keyword for t in TYPED_KEYS if t.key == key)


_CLIPPED: Dict[type, type] = {}


def clipped_class(cls: type) -> type:
    """``cls`` with clipping in ``step()``: a module-level class (``ClippedSGD``, ...) so that
    clipped optimizers pickle like plain ones."""
    if cls not in _CLIPPED:
        name = f"Clipped{cls.__name__}"
        clipped = type(name, (GradientClipping, cls), {
            "__module__": __name__, "__qualname__": name,
            "__doc__": f"{cls.__name__} that clips gradients in ``step()``."})
        globals()[name] = clipped
        _CLIPPED[cls] = clipped
    return _CLIPPED[cls]


def optimizer_info(cls: type, fused: Optional[bool] = None, typed_keys: Optional[Tuple[str, ...]] = None,
                   sparse_only: bool = False) -> OptimizerInfo:
    """The registry entry of a ``torch.optim.Optimizer`` subclass; capabilities not declared
    are read off its constructor's arguments."""
    keywords = init_keywords(cls)
    return OptimizerInfo(cls=cls, clipped=clipped_class(cls),
                         fused="fused" in keywords if fused is None else fused,
                         foreach="foreach" in keywords, momentum="momentum" in keywords,
                         betas="betas" in keywords,
                         typed_keys=typed_keys_of(cls) if typed_keys is None else typed_keys,
                         sparse_only=sparse_only, muon_split=issubclass(cls, MuonWithAdamW))


# ``@OPTIMIZERS.register()`` on an optimizer class registers it under the class's name.
OPTIMIZERS = Registry("optimizer", make_entry=lambda obj: obj if isinstance(obj, OptimizerInfo)
                      else optimizer_info(obj))
for _name, _cls in (("SGD", torch.optim.SGD), ("ADAMW", torch.optim.AdamW), ("ADAM", torch.optim.Adam),
                    ("RMSPROP", torch.optim.RMSprop), ("ADAMAX", torch.optim.Adamax),
                    ("NADAM", torch.optim.NAdam), ("RADAM", torch.optim.RAdam),
                    ("ADAGRAD", torch.optim.Adagrad), ("ADADELTA", torch.optim.Adadelta),
                    ("ASGD", torch.optim.ASGD), ("RPROP", torch.optim.Rprop)):
    OPTIMIZERS.register(optimizer_info(_cls), name=_name)
# Adafactor's eps is a pair (eps1 for the update, eps2 for the rms), not Adam's EPS: KWARGS.eps.
OPTIMIZERS.register(optimizer_info(torch.optim.Adafactor, typed_keys=()), name="ADAFACTOR")
OPTIMIZERS.register(optimizer_info(torch.optim.SparseAdam, sparse_only=True), name="SPARSEADAM")
OPTIMIZERS.register(optimizer_info(MuonWithAdamW), name="MUON")

# Names the config may not choose, and why (one line each).
REFUSED = {
    "LBFGS": "torch.optim.LBFGS re-evaluates the loss several times per step through a closure, "
             "which a training loop of one forward/backward per step does not give",
}
