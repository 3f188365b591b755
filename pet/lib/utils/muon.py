"""TYPE MUON: one optimizer that steps the 2-D hidden weight matrices with ``torch.optim.Muon``
and every other parameter (embeddings, norms, biases, the head, any 1-D or 4-D tensor) with
``torch.optim.AdamW`` (Keller Jordan's recipe; Muon is only defined for matrices).

It is a plain ``torch.optim.Optimizer`` over param groups marked ``use_muon`` (the grouping
decides which, see ``param_groups.explain_params``), so checkpoints (``state_dict``), the lr
scheduler (it scales every group's ``initial_lr``), clipping (``clipped_class``) and
explain_solver treat it like any other optimizer. The update itself is torch's: each ``step()``
runs torch's Muon and AdamW steps on this optimizer's own groups and state.
"""
from typing import Any, Dict, Iterable, Optional, Tuple

import torch

from pet.lib.utils.grad_clip import call_step_unhooked


class MuonWithAdamW(torch.optim.Optimizer):
    """Muon for the groups with ``use_muon=True``, AdamW for the others.

    ``lr``/``weight_decay``: defaults of groups that set none. Muon's: ``muon_momentum``,
    ``muon_nesterov``, ``ns_steps``, ``ns_coefficients``, ``muon_eps``, ``adjust_lr_fn``
    (torch's names, "muon_" where AdamW has the same one). AdamW's: ``betas``, ``eps``,
    ``amsgrad``, ``maximize``, ``foreach``. Raises ValueError as torch's classes do (Muon: a
    group with ``use_muon`` holding a tensor that is not 2-D).
    """

    def __init__(self, params: Iterable[Dict[str, Any]], lr: float = 1e-3, weight_decay: float = 0.0,
                 muon_momentum: float = 0.95, muon_nesterov: bool = True, ns_steps: int = 5,
                 ns_coefficients: Tuple[float, float, float] = (3.4445, -4.775, 2.0315),
                 muon_eps: float = 1e-7, adjust_lr_fn: Optional[str] = None,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, amsgrad: bool = False,
                 maximize: bool = False, foreach: Optional[bool] = None) -> None:
        groups = [g if isinstance(g, dict) else {"params": [g]} for g in params]
        for group in groups:
            group.setdefault("use_muon", False)
        muon_groups = [g for g in groups if g["use_muon"]]
        adamw_groups = [g for g in groups if not g["use_muon"]]
        # torch's classes fill in each group's options (and check them); the groups stay ours.
        self._children = {}
        if muon_groups:
            self._children[True] = torch.optim.Muon(
                muon_groups, lr=lr, weight_decay=weight_decay, momentum=muon_momentum,
                nesterov=muon_nesterov, ns_coefficients=tuple(ns_coefficients), eps=muon_eps,
                ns_steps=ns_steps, adjust_lr_fn=adjust_lr_fn)
        if adamw_groups:
            self._children[False] = torch.optim.AdamW(
                adamw_groups, lr=lr, weight_decay=weight_decay, betas=tuple(betas), eps=eps,
                amsgrad=amsgrad, maximize=maximize, foreach=foreach)
        super().__init__(groups, dict(lr=lr, weight_decay=weight_decay, use_muon=False))
        self._bind_children()

    def __setstate__(self, state: Dict[str, Any]) -> None:
        # load_state_dict and unpickling replace the groups and the state: bind them again here,
        # outside step(), so a compiled step never assigns to an optimizer (dynamo before
        # torch 2.13 cannot trace that).
        super().__setstate__(state)
        self._bind_children()

    def _bind_children(self) -> None:
        """Bind torch's Muon and AdamW to this optimizer's groups of their side and its state."""
        children = self.__dict__.setdefault("_children", {})  # absent after unpickling
        for use_muon in (True, False):
            groups = [g for g in self.param_groups if g["use_muon"] == use_muon]
            if not groups:
                children.pop(use_muon, None)
                continue
            if use_muon not in children:
                cls = torch.optim.Muon if use_muon else torch.optim.AdamW
                children[use_muon] = cls([dict(g) for g in groups])
            child = children[use_muon]
            for group in groups:  # a group added later has only this optimizer's defaults
                for key, value in child.defaults.items():
                    group.setdefault(key, value)
            child.param_groups = groups
            child.state = self.state

    def _child(self, use_muon: bool) -> Optional[torch.optim.Optimizer]:
        """torch's Muon or AdamW of that side, bound to this optimizer's groups and state
        (bound again first if a group was added since)."""
        bound = sum(len(child.param_groups) for child in self._children.values())
        if bound != len(self.param_groups):  # add_param_group
            self._bind_children()
        return self._children.get(use_muon)

    @torch.no_grad()
    def step(self, closure=None):
        """One Muon step of the matrices and one AdamW step of the rest; returns the closure's
        loss (None without a closure)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for use_muon in (True, False):
            child = self._child(use_muon)
            if child is not None:
                # Step hooks ran around this step already: the class's step, without its own.
                call_step_unhooked(type(child).step.__get__(child))
        return loss
