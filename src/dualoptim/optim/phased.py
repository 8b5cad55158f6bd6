"""Phase-aware optimizers: the shared baseline and DualOptim.

Unlearning alternates *forget* steps (on D_f) and *retain* steps (on D_r). Both
classes here expose the same phase API on top of the ``torch.optim`` contract:

* :class:`SharedOptimizer` -- the paper's baseline: ONE optimizer state (momentum,
  Adam moments) serves both phases; each phase may have its own hyper-parameters.
* :class:`DualOptimizer` -- DualOptim: two optimizers over the same parameters with
  fully decoupled states; ``step()`` only advances the active phase's optimizer.

Both expose ``param_groups`` as the forget groups followed by the retain groups,
each tagged ``group["phase"]``, so ``torch.optim.lr_scheduler`` classes drive both
phases (use :func:`dualoptim.optim.phase_lambda_lr` for per-phase schedules).

Masks (``set_mask``) are *hard* constraints: a masked-out entry is restored to its
pre-step value after every step of that phase, so neither weight decay nor
momentum/moments accumulated earlier can move it (the public reference code only
multiplied gradients, which leaks). Gradients of masked-out entries are also
zeroed before the step so the optimizer state only sees the trainable subspace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch.optim import Optimizer

from .base import FullStateOptimizer, check_lr, step_without_global_hooks

PHASES = ("forget", "retain")
Mask = Mapping[torch.Tensor, torch.Tensor]


def own_value(value: Any) -> Any:
    """A copy of a group value that one phase/optimizer can own: tensors (a tensor ``lr``, tensor
    ``betas``) are cloned, so a scheduler updating one in place leaves the other phase alone."""
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, tuple):
        return tuple(own_value(v) for v in value)
    return value


def _check_phase(phase: str) -> str:
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; expected one of {PHASES}")
    return phase


class _PhaseContext:
    """Returned by ``set_phase``: a no-op when used as a call, restores the previous phase in ``with``."""

    def __init__(self, opt: PhaseSwitch, previous: str | None) -> None:
        self._opt, self._previous = opt, previous

    def __enter__(self) -> PhaseSwitch:
        return self._opt

    def __exit__(self, *exc: object) -> None:
        self._opt._phase = self._previous


class PhaseSwitch:
    """The active phase, set with ``set_phase`` (a plain call, or ``with`` to restore the previous one)."""

    _phase: str | None = None

    @property
    def phase(self) -> str | None:
        """The active phase (``"forget"``, ``"retain"`` or ``None`` before the first ``set_phase``)."""
        return self._phase

    def set_phase(self, phase: str) -> _PhaseContext:
        """Make ``phase`` active. Also usable as ``with opt.set_phase("forget"): ...``,
        which restores the previous phase on exit."""
        previous = self._phase
        self._phase = _check_phase(phase)
        return _PhaseContext(self, previous)


class PhasedOptimizer(PhaseSwitch, FullStateOptimizer):
    """Common base: the active phase, hard masks, and the parts of ``Optimizer`` both share.

    Subclasses provide ``param_groups`` (tagged with ``"phase"``), ``_step_phase`` and
    ``_state_dict``/``_load_state_dict``. ``torch.optim.Optimizer.__init__`` is run over the unique
    parameters only to install the hook machinery of the running torch version. ``defaults``
    holds the hyper-parameters every group has (LR schedulers read it, e.g. ``cycle_momentum``).
    """

    def __init__(self, params: list[torch.Tensor], defaults: dict[str, Any]) -> None:
        self._phase: str | None = None
        self._masks: dict[str, dict[torch.Tensor, torch.Tensor]] = {p: {} for p in PHASES}
        self._building = True
        super().__init__(params, defaults)
        self._building = False
        self._params = params

    # -- the torch.optim attributes that subclasses redirect ------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:  # noqa: D102
        if self._building:  # Optimizer.__init__ registering the unique params: nothing to do
            return
        raise NotImplementedError(
            f"{type(self).__name__} cannot grow after construction; build it over all parameters"
        )

    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.phase_groups("forget") + self.phase_groups("retain")

    @param_groups.setter
    def param_groups(self, value: list[dict[str, Any]]) -> None:
        if not self._building:
            raise AttributeError("param_groups of a phased optimizer cannot be replaced")

    def phase_groups(self, phase: str) -> list[dict[str, Any]]:
        """The parameter groups (hyper-parameters) used by ``phase``."""
        raise NotImplementedError

    def _active_phase(self) -> str:
        if self._phase is None:
            raise RuntimeError(
                f"{type(self).__name__}.step() called with no phase set; call "
                "set_phase('forget') or set_phase('retain') first"
            )
        return self._phase

    # -- masks --------------------------------------------------------------------
    def set_mask(self, mask: Mask | None, phase: str | None = None) -> None:
        """Constrain which entries may change.

        ``mask`` maps parameter tensors to boolean tensors of the same shape (True = may
        change); parameters absent from the mapping are unconstrained. ``phase=None``
        applies the mask to both phases; ``mask=None`` removes the mask of the phase(s).
        """
        phases = PHASES if phase is None else (_check_phase(phase),)
        checked: dict[torch.Tensor, torch.Tensor] = {}
        if mask is not None:
            known = {id(p) for p in self._params}
            for p, m in mask.items():
                if id(p) not in known:
                    raise ValueError("mask has a tensor that is not a parameter of this optimizer")
                if not isinstance(m, torch.Tensor) or m.dtype != torch.bool:
                    raise ValueError(f"mask entries must be bool tensors, got {getattr(m, 'dtype', type(m))}")
                if m.shape != p.shape:
                    raise ValueError(f"mask shape {tuple(m.shape)} != parameter shape {tuple(p.shape)}")
                if not bool(m.all()):  # all-True masks cost nothing: skip them
                    checked[p] = m.to(p.device)
        for ph in phases:
            self._masks[ph] = dict(checked)

    def get_mask(self, phase: str) -> dict[torch.Tensor, torch.Tensor]:
        """The (non-trivial) mask entries of ``phase``."""
        return dict(self._masks[_check_phase(phase)])

    def _kept(self, phase: str) -> dict[torch.Tensor, torch.Tensor]:
        """``~mask`` (the entries that must not change) per masked parameter of ``phase``, computed once per
        mask: a step then costs no mask inversion. ``set_mask``/``load_state_dict`` replace the mask dict, which
        invalidates the cache."""
        masks = self._masks[phase]
        cache = self.__dict__.setdefault("_kept_cache", {})
        hit = cache.get(phase)
        if hit is None or hit[0] is not masks:
            hit = cache[phase] = (masks, {p: ~m for p, m in masks.items()})
        return hit[1]

    def _mask_grads(self, phase: str) -> None:
        with torch.no_grad():
            for p, keep in self._kept(phase).items():
                if p.grad is not None:
                    p.grad.masked_fill_(keep, 0)

    @contextmanager
    def _masked(self, phase: str) -> Iterator[None]:
        kept = self._kept(phase)
        self._mask_grads(phase)
        with torch.no_grad():
            # a full copy + where is ~3x faster than masked_select/masked_scatter_ (no compaction) and gives
            # bit-identical parameters: kept entries get their old values back, the others keep the step's
            frozen = {p: p.clone() for p in kept}
        yield
        with torch.no_grad():
            for p, old in frozen.items():
                torch.where(kept[p], old, p, out=p)

    # -- step ---------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Perform one optimization step of the active phase (see ``set_phase``).

        ``closure`` is handed to the phase's optimizer (LBFGS re-evaluates it); the gradients it
        computes are masked like any other.
        """
        phase = self._active_phase()
        if closure is not None and self._masks[phase]:
            user_closure = closure

            def closure() -> Any:
                loss = user_closure()
                self._mask_grads(phase)
                return loss

        with self._masked(phase):
            return self._step_phase(phase, closure)

    def _step_phase(self, phase: str, closure: Callable[[], Any] | None) -> Any:
        raise NotImplementedError

    def zero_grad(self, set_to_none: bool = True) -> None:  # noqa: D102
        for p in self._params:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.detach_().zero_()

    # -- state dict (with torch's state-dict hooks) -------------------------------
    def state_dict(self) -> dict[str, Any]:  # type: ignore[override]
        """Both phases' states and hyper-parameters, the active phase and the masks."""
        for pre_hook in self._optimizer_state_dict_pre_hooks.values():
            pre_hook(self)
        index = {id(p): i for i, p in enumerate(self._params)}
        masks = {ph: {index[id(p)]: m.clone() for p, m in ms.items()} for ph, ms in self._masks.items()}
        state_dict = {**self._state_dict(), "phase": self._phase, "masks": masks}
        for post_hook in self._optimizer_state_dict_post_hooks.values():
            result = post_hook(self, state_dict)
            if result is not None:
                state_dict = result
        return state_dict

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:  # type: ignore[override]
        """Restore a state saved by :meth:`state_dict` (over parameters of the same shapes)."""
        state_dict = dict(state_dict)
        for pre_hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = pre_hook(self, state_dict)
            if result is not None:
                state_dict = result
        self._load_state_dict(state_dict)
        phase = state_dict.get("phase")
        self._phase = None if phase is None else _check_phase(phase)
        for ph, ms in state_dict.get("masks", {}).items():
            self._masks[_check_phase(ph)] = {
                self._params[int(i)]: m.to(self._params[int(i)].device).bool() for i, m in ms.items()
            }
        for post_hook in self._optimizer_load_state_dict_post_hooks.values():
            post_hook(self)

    def _state_dict(self) -> dict[str, Any]:
        """The subclass's states and hyper-parameters (``state_dict`` adds the phase and the masks)."""
        raise NotImplementedError

    def _load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore what :meth:`_state_dict` saved (``load_state_dict`` then restores the phase and the masks)."""
        raise NotImplementedError


def _unique_params(groups: list[dict[str, Any]]) -> list[torch.Tensor]:
    seen: dict[int, torch.Tensor] = {}
    for g in groups:
        for p in g["params"]:
            seen.setdefault(id(p), p)
    return list(seen.values())


class DualOptimizer(PhasedOptimizer):
    """DualOptim: two optimizers with decoupled states over the same parameters.

    Args:
        forget: the optimizer used in forget steps (the paper: Adam).
        retain: the optimizer used in retain steps (the paper: the pre-training optimizer).

    Example::

        opt = DualOptimizer(forget=torch.optim.Adam(model.parameters(), lr=1e-4),
                            retain=torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9))
        with opt.set_phase("forget"):
            forget_loss(model, xf, yf).backward(); opt.step(); opt.zero_grad()
        with opt.set_phase("retain"):
            retain_loss(model, xr, yr).backward(); opt.step(); opt.zero_grad()
    """

    def __init__(self, forget: Optimizer, retain: Optimizer) -> None:
        if not isinstance(forget, Optimizer) or not isinstance(retain, Optimizer):
            raise ValueError("DualOptimizer(forget=..., retain=...) takes two torch.optim.Optimizer objects")
        if forget is retain:
            raise ValueError("forget and retain must be two different optimizer objects (decoupled states)")
        if isinstance(forget, PhasedOptimizer) or isinstance(retain, PhasedOptimizer):
            raise ValueError("DualOptimizer takes plain optimizers, not phased ones")
        fp, rp = _unique_params(forget.param_groups), _unique_params(retain.param_groups)
        if {id(p) for p in fp} != {id(p) for p in rp} or len(fp) != len(rp):
            raise ValueError(
                f"forget and retain optimizers must be built over the same parameters "
                f"(forget has {len(fp)} tensors, retain has {len(rp)}, or they differ)"
            )
        self.forget, self.retain = forget, retain
        for ph, opt in (("forget", forget), ("retain", retain)):
            for g in opt.param_groups:
                g["phase"] = ph
        super().__init__(fp, {k: v for k, v in forget.defaults.items() if k in retain.defaults})

    def phase_groups(self, phase: str) -> list[dict[str, Any]]:  # noqa: D102
        return self.optimizer_for(phase).param_groups

    def optimizer_for(self, phase: str) -> Optimizer:
        """The optimizer that performs steps of ``phase``."""
        return self.forget if _check_phase(phase) == "forget" else self.retain

    def _step_phase(self, phase: str, closure: Callable[[], Any] | None) -> Any:
        return step_without_global_hooks(self.optimizer_for(phase), closure)

    @property
    def state(self) -> dict[torch.Tensor, dict[str, Any]]:  # type: ignore[override]
        """Per parameter: ``{"forget": <forget state>, "retain": <retain state>}`` (a fresh view)."""
        return {p: {"forget": self.forget.state.get(p, {}), "retain": self.retain.state.get(p, {})}
                for p in self._params}

    @state.setter
    def state(self, value: Any) -> None:
        if not self._building:
            raise AttributeError("set the state with load_state_dict()")

    def _state_dict(self) -> dict[str, Any]:
        return {"forget": self.forget.state_dict(), "retain": self.retain.state_dict()}

    def _load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        if "forget" not in state_dict or "retain" not in state_dict:
            raise ValueError("not a DualOptimizer state dict (needs 'forget' and 'retain' entries)")
        self.forget.load_state_dict(state_dict["forget"])
        self.retain.load_state_dict(state_dict["retain"])

    def __repr__(self) -> str:
        return f"DualOptimizer(\n forget={self.forget!r},\n retain={self.retain!r}\n)"


class SharedOptimizer(PhasedOptimizer):
    """The baseline: one optimizer state shared by both phases.

    Each phase keeps its own copy of every parameter group's hyper-parameters (so
    ``forget_lr``/``retain_lr`` and per-phase schedules work); before a step the active
    phase's hyper-parameters are copied into the wrapped optimizer. Momentum buffers and
    Adam moments are shared, exactly as when one optimizer's lr is switched per phase.

    Args:
        optimizer: the wrapped optimizer (e.g. SGD with momentum).
        forget_lr: lr of forget steps (default: the optimizer's lr).
        retain_lr: lr of retain steps (default: the optimizer's lr).
    """

    def __init__(self, optimizer: Optimizer, forget_lr: float | None = None,
                 retain_lr: float | None = None) -> None:
        if not isinstance(optimizer, Optimizer) or isinstance(optimizer, PhasedOptimizer):
            raise ValueError("SharedOptimizer wraps one plain torch.optim.Optimizer")
        check_lr("forget_lr", forget_lr)
        check_lr("retain_lr", retain_lr)
        self.optimizer = optimizer
        self._views: dict[str, list[dict[str, Any]]] = {}
        for ph, lr in (("forget", forget_lr), ("retain", retain_lr)):
            views = []
            for g in optimizer.param_groups:
                v = {k: own_value(x) if k != "params" else x for k, x in g.items()}
                v["phase"] = ph
                if lr is not None:
                    v["lr"] = lr
                views.append(v)
            self._views[ph] = views
        super().__init__(_unique_params(optimizer.param_groups), dict(optimizer.defaults))

    def phase_groups(self, phase: str) -> list[dict[str, Any]]:  # noqa: D102
        return self._views[_check_phase(phase)]

    def _step_phase(self, phase: str, closure: Callable[[], Any] | None) -> Any:
        for group, view in zip(self.optimizer.param_groups, self._views[phase]):
            for k, v in view.items():
                if k not in ("params", "phase"):
                    group[k] = v
        if hasattr(self.optimizer, "current_phase"):  # phase-aware optimizers (PartiallySharedAdam)
            self.optimizer.current_phase = phase
        return step_without_global_hooks(self.optimizer, closure)

    @property
    def state(self) -> Any:  # type: ignore[override]
        """The one shared state of the wrapped optimizer."""
        return self.optimizer.state

    @state.setter
    def state(self, value: Any) -> None:
        if not self._building:
            raise AttributeError("set the state with load_state_dict()")

    def _state_dict(self) -> dict[str, Any]:
        views = {ph: [{k: v for k, v in g.items() if k != "params"} for g in gs]
                 for ph, gs in self._views.items()}
        return {"optimizer": self.optimizer.state_dict(), "phase_groups": views}

    def _load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        if "optimizer" not in state_dict or "phase_groups" not in state_dict:
            raise ValueError("not a SharedOptimizer state dict (needs 'optimizer' and 'phase_groups')")
        self.optimizer.load_state_dict(state_dict["optimizer"])
        for ph, saved in state_dict["phase_groups"].items():
            views = self._views[_check_phase(ph)]
            if len(saved) != len(views):
                raise ValueError("saved state has a different number of parameter groups")
            for view, s in zip(views, saved):
                view.update(s)

    def __repr__(self) -> str:
        lrs = {ph: [g["lr"] for g in gs] for ph, gs in self._views.items()}
        return f"SharedOptimizer({self.optimizer!r}, lrs={lrs})"
