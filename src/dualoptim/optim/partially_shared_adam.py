"""The paper's Table-17 ablation: Adam whose first and/or second moments are shared or kept per phase."""

from __future__ import annotations

import math
from typing import Any

import torch

from .base import FullStateOptimizer, check_value, run_closure


class PartiallySharedAdam(FullStateOptimizer):
    """Adam whose first (``m``) and/or second (``v``) moments are kept per phase.

    The paper's Table-17 ablation. ``decouple`` names the moments kept separately for
    the forget and retain phases: ``"mv"`` (= DualOptim with two Adams), ``"m"``, ``"v"``
    or ``""`` (= one shared Adam). Bias correction counts the updates each moment
    buffer has received. The active phase is set by the wrapping
    :class:`~dualoptim.optim.SharedOptimizer` through ``current_phase`` -- the
    reference code read the forget buffers in retain steps; here each decoupled moment
    is only ever read and written by its own phase (tested).
    """

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, decouple: str = "mv") -> None:
        if set(decouple) - {"m", "v"}:
            raise ValueError(f"decouple must be a subset of 'mv', got {decouple!r}")
        check_value("lr", lr, 1e-30)
        check_value("weight_decay", weight_decay)
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})
        self.decouple = decouple
        self.current_phase: str | None = None

    def _key(self, moment: str) -> str:
        if moment not in self.decouple:
            return moment
        if self.current_phase is None:
            raise RuntimeError("PartiallySharedAdam needs a phase: wrap it in SharedOptimizer")
        return f"{moment}_{self.current_phase}"

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # noqa: D102
        loss = run_closure(closure)
        km, kv = self._key("m"), self._key("v")
        for group in self.param_groups:
            (b1, b2), lr = group["betas"], group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g, state = p.grad, self.state[p]
                if group["weight_decay"]:
                    g = g.add(p, alpha=group["weight_decay"])
                m = state.setdefault(km, torch.zeros_like(p))
                v = state.setdefault(kv, torch.zeros_like(p))
                tm = state[f"step_{km}"] = state.get(f"step_{km}", 0) + 1
                tv = state[f"step_{kv}"] = state.get(f"step_{kv}", 0) + 1
                m.lerp_(g, 1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = (v.sqrt() / math.sqrt(1 - b2**tv)).add_(group["eps"])
                p.addcdiv_(m, denom, value=-lr / (1 - b1**tm))
        return loss
