"""What every dualoptim optimizer shares: full-state pickles, the ``step(closure)`` contract, inner steps
without torch's global hooks (the phased and banked optimizers delegate to inner optimizers), the
``ValueError`` checks of a hyper-parameter and of a learning rate, and FSDP2's DTensors recognised."""

from __future__ import annotations

import math
import sys
from typing import Any

import torch
from torch.optim import Optimizer


def run_closure(closure: Any) -> Any:
    """Evaluate an optimizer ``step(closure)``'s closure with gradients enabled (None without one)."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


#: torch's hook registries; ``Optimizer.__getstate__`` leaves them out of pickles and copies (so do we).
_HOOK_ATTRS = frozenset({
    "_optimizer_step_pre_hooks", "_optimizer_step_post_hooks", "_optimizer_state_dict_pre_hooks",
    "_optimizer_state_dict_post_hooks", "_optimizer_load_state_dict_pre_hooks", "_optimizer_load_state_dict_post_hooks",
})


class FullStateOptimizer(Optimizer):
    """An ``Optimizer`` whose pickles and ``copy.deepcopy`` keep every attribute.

    torch's ``Optimizer.__getstate__`` keeps only ``defaults``, ``state`` and ``param_groups``; an
    optimizer with more (the phase, the two inner optimizers, a rounding stream) would come back broken.
    Hooks are left out, as torch does; ``Optimizer.__setstate__`` re-creates them empty.
    """

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in _HOOK_ATTRS}


def step_without_global_hooks(opt: Optimizer, closure: Any = None) -> Any:
    """``opt.step(closure)`` without torch's *global* step hooks (its own hooks still run).

    The phased optimizers delegate to inner optimizers; the outer ``step`` already fired the hooks
    registered with ``torch.optim.optimizer.register_optimizer_step_pre_hook``/``post_hook``, so they
    fire once per step. An inner optimizer whose ``step`` was replaced on the instance (e.g. by an LR
    scheduler built on it directly) is called as is.
    """
    raw = getattr(type(opt).step, "__wrapped__", None)
    if raw is None or not getattr(type(opt).step, "hooked", False) or "step" in vars(opt):
        return opt.step(closure)
    args: tuple[Any, ...] = (opt, closure)
    kwargs: dict[str, Any] = {}
    for hook in list(opt._optimizer_step_pre_hooks.values()):
        result = hook(opt, args, kwargs)
        if result is not None:
            args, kwargs = result
    out = raw(*args, **kwargs)
    opt._optimizer_step_code()
    for hook in list(opt._optimizer_step_post_hooks.values()):
        hook(opt, args, kwargs)
    return out


def check_value(name: str, value: float, low: float = 0.0, high: float | None = None) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``low <= value`` (and ``value < high`` when given)."""
    if not value >= low or (high is not None and not value < high):
        raise ValueError(f"invalid {name}: {value}")


def check_lr(name: str, lr: float | None) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``lr`` is None or a finite number > 0."""
    if lr is not None and not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {lr!r}")


def is_dtensor(t: Any) -> bool:
    """Whether ``t`` is a DTensor (an FSDP2 parameter or gradient)."""
    mod = sys.modules.get("torch.distributed.tensor")  # not imported => no tensor can be a DTensor
    return mod is not None and isinstance(t, mod.DTensor)
