"""DualOptim as ONE ``torch.optim.Optimizer``: two state banks, chosen by the batch's phase.

:class:`DualOptimizer` holds two optimizers and lists every parameter twice in
``param_groups`` (forget groups, then retain groups). Engines that accept exactly one
optimizer and own its parameter list -- DeepSpeed ZeRO (which replaces each group's
``params`` by its flat partition), some ``transformers.Trainer`` paths, anything
that builds one LR scheduler -- need the classic shape instead: each parameter listed
once, all state in ``self.state[p]``. :class:`BankedOptimizer` is that shape:

* ``param_groups``: each parameter once; ``group["lr"]`` is the forget lr and
  ``group["retain_lr_scale"]`` the ratio retain lr / forget lr, so one LR scheduler
  scales both phases; ``group["forget"]`` / ``group["retain"]`` hold the other
  hyper-parameters of each phase's optimizer.
* ``state[p] = {"forget": {...}, "retain": {...}}``: two decoupled banks; a step
  reads and writes only the bank of the active phase.
* The phase follows the batch: call ``set_phase(batch_phase)`` before each
  micro-batch's backward. With gradient accumulation every micro-batch of one step
  must have the same phase; a step after mixed phases raises instead of silently
  using the wrong bank (the reference code switched banks by a step counter).

The update itself is done by a stock optimizer of each phase (``torch.optim.Adam``,
``SGD``, the registry's lean variants ...) pointed, for the duration of ``step``, at
this object's current ``params``, hyper-parameters and bank, so fused kernels are used
and the trajectory equals :class:`DualOptimizer` (tested). Within this library (``dualoptim.engine``,
``set_mask`` for saliency masks) use :class:`DualOptimizer`; this form is for engines outside it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import torch

from .base import FullStateOptimizer, check_lr, step_without_global_hooks
from .factory import _fast_kwargs, get_optimizer_info, phase_options
from .phased import PHASES, PhaseSwitch, _check_phase, _PhaseContext


class BankedOptimizer(PhaseSwitch, FullStateOptimizer):
    """One optimizer object with a forget bank and a retain bank.

    Args:
        params: parameters or parameter-group dicts, each parameter once. A group's hyper-parameters
            (``weight_decay``, ``betas`` ...) go to each phase whose optimizer accepts them,
            ``forget_<name>``/``retain_<name>`` to one phase, ``lr`` is the group's forget lr.
        forget: registry name of the forget optimizer (``"adam"``; see ``list_optimizers``).
        retain: registry name of the retain optimizer (``"sgd"``).
        forget_lr: forget learning rate.
        retain_lr: retain learning rate (default ``forget_lr``).
        fused: as :func:`~dualoptim.optim.build_optimizer`.
        **options: hyper-parameters, ``forget_``/``retain_`` prefixes target one phase
            (same rules as ``build_optimizer``).
    """

    def __init__(self, params: Iterable[Any], forget: str = "adam", retain: str = "sgd", forget_lr: float = 1e-4,
                 retain_lr: float | None = None, *, fused: bool | None = None, **options: Any) -> None:
        retain_lr = forget_lr if retain_lr is None else retain_lr
        check_lr("forget_lr", forget_lr)
        check_lr("retain_lr", retain_lr)
        infos = {"forget": get_optimizer_info(forget), "retain": get_optimizer_info(retain)}
        per_phase = phase_options(options, infos.values(), f"{forget}+{retain}")
        hyper = {ph: info.kwargs(per_phase[ph]) for ph, info in infos.items()}
        params = list(params)
        if not params:
            raise ValueError("BankedOptimizer got an empty parameter list")
        # Stock optimizers that do the arithmetic; they own no state and no params between steps.
        self._kernels = {ph: info.cls([torch.zeros(1, requires_grad=True)], lr=1.0, **hyper[ph],
                                      **_fast_kwargs(info, params, fused))
                         for ph, info in infos.items()}
        self._kernel_defaults = {ph: {k: v for k, v in k_.defaults.items() if k != "lr"}
                                 for ph, k_ in self._kernels.items()}
        self.names = {"forget": infos["forget"].name, "retain": infos["retain"].name}
        self._phase: str | None = None
        self._grad_phases: set[str] = set()
        defaults = {"lr": forget_lr, "retain_lr_scale": retain_lr / forget_lr,
                    "forget": dict(self._kernel_defaults["forget"]), "retain": dict(self._kernel_defaults["retain"])}
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group; its hyper-parameters move into the per-phase dicts ``group["forget"]``/``["retain"]``."""
        group = dict(param_group)
        moved: set[str] = set()
        for ph in PHASES:
            accepted = self._kernel_defaults[ph]
            both = {k: v for k, v in group.items() if k in accepted}
            own = {k.removeprefix(ph + "_"): v for k, v in group.items()
                   if k.startswith(ph + "_") and k.removeprefix(ph + "_") in accepted}
            moved |= set(both) | {ph + "_" + k for k in own}
            group[ph] = {**accepted, **both, **own, **group.get(ph, {})}  # a fresh dict per group and phase
        super().add_param_group({k: v for k, v in group.items() if k not in moved})

    def set_phase(self, phase: str) -> _PhaseContext:
        """Make ``phase`` the phase of the current (micro-)batch; usable as a context manager."""
        context = super().set_phase(phase)
        self._grad_phases.add(phase)
        return context

    def lr_of(self, phase: str, group: int = 0) -> float:
        """The learning rate ``phase`` uses for parameter group ``group``."""
        g = self.param_groups[group]
        return g["lr"] * (g["retain_lr_scale"] if _check_phase(phase) == "retain" else 1.0)

    # -- step ------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # noqa: D102
        if self._phase is None:
            raise RuntimeError("BankedOptimizer.step() called with no phase set; call set_phase() first")
        if len(self._grad_phases) > 1:
            raise RuntimeError("the gradients of this step come from both forget and retain micro-batches; "
                               "accumulate micro-batches of one phase per step")
        phase = self._phase
        kernel = self._kernels[phase]
        kernel.param_groups = [{**g[phase], "params": g["params"], "lr": self.lr_of(phase, i)}
                               for i, g in enumerate(self.param_groups)]
        bank = defaultdict(dict)
        for g in self.param_groups:
            for p in g["params"]:
                bank[p] = self.state[p].setdefault(phase, {})
        kernel.state = bank
        try:
            loss = step_without_global_hooks(kernel, closure)
        finally:
            kernel.state = defaultdict(dict)
            kernel.param_groups = []
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:  # noqa: D102
        super().zero_grad(set_to_none)
        self._grad_phases = set()

    # -- checkpoint ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:  # noqa: D102
        sd = super().state_dict()
        sd["phase"] = self._phase
        sd["names"] = dict(self.names)
        sd["kernels"] = {ph: k.rounder.state_dict() for ph, k in self._kernels.items() if hasattr(k, "rounder")}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # noqa: D102
        state_dict = dict(state_dict)
        names = state_dict.pop("names", self.names)
        if names != self.names:
            raise ValueError(f"state dict is for {names}, this optimizer is {self.names}")
        phase = state_dict.pop("phase", None)
        kernels = state_dict.pop("kernels", {})
        super().load_state_dict(state_dict)
        self._upgrade_loaded()
        for ph, kernel in self._kernels.items():  # lean kernels: keep bf16 state and the rounding stream
            if kernels.get(ph) is not None:
                kernel.rounder.load_state_dict(kernels[ph])
            if hasattr(kernel, "rounder"):
                for st in self.state.values():
                    for k, v in st.get(ph, {}).items():
                        if isinstance(v, torch.Tensor) and v.is_floating_point() and v.dim() > 0:
                            st[ph][k] = v.to(torch.bfloat16)
        self._phase = None if phase is None else _check_phase(phase)
        self._grad_phases = set()

    def _upgrade_loaded(self) -> None:
        """Accept state dicts of older versions, as torch's optimizers do: missing flags take this
        optimizer's values, and each phase's optimizer upgrades its bank (e.g. a plain-number ``step``)."""
        for g in self.param_groups:
            for k, v in self.defaults.items():
                if k not in PHASES:
                    g.setdefault(k, v)
            for ph in PHASES:
                g[ph] = {**self._kernel_defaults[ph], **g.get(ph, {})}
        for ph, kernel in self._kernels.items():
            groups = [{**g[ph], "params": g["params"], "lr": self.lr_of(ph, i)}
                      for i, g in enumerate(self.param_groups)]
            bank = {p: self.state[p][ph] for g in self.param_groups for p in g["params"]
                    if ph in self.state.get(p, {})}
            try:
                kernel.__setstate__({"state": bank, "param_groups": groups})
            finally:
                kernel.state, kernel.param_groups = defaultdict(dict), []

    def __repr__(self) -> str:
        return f"BankedOptimizer({self.names['forget']}+{self.names['retain']}, groups={len(self.param_groups)})"
