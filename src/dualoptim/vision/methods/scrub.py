"""SCRUB (Kurmanji et al. 2023): a student moves away from a frozen teacher on the forget set (max step) and
stays close to it on the retain set (min step).

Two sets of defaults are selectable with ``variant``: ``"dualoptim"`` (default; the DualOptim paper's code:
T=1, gamma=1, alpha=0.5, a max step in every epoch) and ``"upstream"`` (the SCRUB repository: T=4,
gamma=0.99, alpha=0.001, max steps in the first ``msteps`` = 2 epochs only). ``T``, ``gamma``, ``alpha`` and
``msteps`` override single values of the chosen variant.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...engine import Method, Schedule, StepInfo, UnlearnContext
from ...errors import ConfigError
from . import option, register_method

VARIANTS: dict[str, dict[str, Any]] = {
    "dualoptim": {"T": 1.0, "gamma": 1.0, "alpha": 0.5, "msteps": None},
    "upstream": {"T": 4.0, "gamma": 0.99, "alpha": 0.001, "msteps": 2},
}


@register_method("scrub", "SCRUB: max KL to a frozen teacher on forget, min CE + KL on retain",
                 shared_optim="adam", dual_optim="adam+adam")
@dataclass
class SCRUB(Method):
    variant: str = option("dualoptim", "defaults: 'dualoptim' (T=1, gamma=1, alpha=0.5, max step every epoch) "
                                       "or 'upstream' (T=4, gamma=0.99, alpha=0.001, msteps=2)")
    T: float | None = option(None, "distillation temperature (KL scaled by T^2); None = the variant's")
    gamma: float | None = option(None, "weight of CE in the retain (min) step; None = the variant's")
    alpha: float | None = option(None, "weight of KL in the retain (min) step; None = the variant's")
    msteps: int | None = option(None, "max steps only in the first msteps epochs; None = the variant's "
                                      "(dualoptim: every epoch)")

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ConfigError(f"unknown scrub variant {self.variant!r}; valid: {', '.join(VARIANTS)}")
        for key, value in VARIANTS[self.variant].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if not self.T > 0 or self.gamma < 0 or self.alpha < 0:
            raise ConfigError(f"scrub needs T > 0, gamma >= 0, alpha >= 0; got T={self.T}, gamma={self.gamma}, "
                              f"alpha={self.alpha}")
        if self.msteps is not None and self.msteps < 0:
            raise ConfigError(f"scrub msteps must be >= 0, got {self.msteps}")

    def prepare(self, ctx: UnlearnContext) -> None:
        """Freeze a copy of the original model as the teacher (eval mode: its BatchNorm statistics never move)."""
        self.teacher = copy.deepcopy(ctx.model).eval().requires_grad_(False)

    def _kl(self, student_logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """KL(p_T || p_S) at temperature T, times T^2, averaged over the batch."""
        with torch.no_grad():
            teacher_logits = self.teacher(x)
        return F.kl_div(F.log_softmax(student_logits / self.T, dim=1), F.log_softmax(teacher_logits / self.T, dim=1),
                        reduction="batchmean", log_target=True) * self.T**2

    def forget_loss(self, model: nn.Module, batch: Any, info: StepInfo) -> torch.Tensor:
        """Max step: L_f = -KL(p_T || p_S) on the forget batch."""
        x, _ = batch
        return -self._kl(model(x), x)

    def retain_loss(self, model: nn.Module, batch: Any, info: StepInfo) -> torch.Tensor:
        """Min step: L_r = gamma * CE(f(x_r), y_r) + alpha * KL(p_T || p_S)."""
        x, y = batch
        logits = model(x)
        return self.gamma * F.cross_entropy(logits, y) + self.alpha * self._kl(logits, x)

    def default_schedule(self) -> Schedule:
        """Paper: 10 epochs; max (forget) passes only in the first ``msteps`` epochs when set."""
        return Schedule(mode="epoch", epochs=10, forget_epochs=self.msteps)
