"""SFRon: adaptive gradient ascent on the forget set, restricted by a Fisher-ratio mask, interleaved with
fine-tuning on the retain set.

Iteration mode: every iteration takes one retain step (CE); every ``t_in``-th iteration a forget step comes
first. The forget loss is ``-alpha_t * sum_i w_i CE_i`` with detached weights ``w_i = CE_i^-lam / sum_j
CE_j^-lam`` (samples already forgotten get less weight) and ``alpha_t = alpha (1 + cos(pi t / T)) / 2``.
The forget step may only move weights where the diagonal Fisher information of the forget set is at least
that of the retain set (``F_f / F_r >= 1``), a hard mask of the optimizer's forget phase; its gradient is
clipped to norm ``clip`` first. Both learning rates follow a cosine schedule. With DualOptim the paper sets
``alpha = 1`` and tunes only the forget lr (its shared-SGD CIFAR-10 setting uses ``alpha = 31``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...engine import Method, Schedule, StepInfo, UnlearnContext, accumulate_grads
from ...errors import ConfigError
from ...optim import PhasedOptimizer
from . import option, register_method


def diagonal_fisher(model: nn.Module, batches: Iterable[Any], max_batches: int | None = None) -> list[torch.Tensor]:
    """Diagonal Fisher estimate per parameter: mean over batches of the squared batch-mean CE gradient (eval mode)."""
    fisher = accumulate_grads(model, batches, lambda b: F.cross_entropy(model(b[0]), b[1]), max_batches,
                              square=True, eval_mode=True, add=lambda total, g: total.addcmul_(g, g))
    return list(fisher.values())


@register_method("sfron", "SFRon: weighted GA with Fisher-ratio mask + retain CE, iteration mode (forget every t_in)")
@dataclass
class SFRon(Method):
    alpha: float = option(1.0, "forget-loss scale, cosine-decayed over the iterations (paper: 1 with DualOptim, "
                               "31 with shared SGD on CIFAR-10)")
    lam: float = option(0.5, "exponent of the adaptive sample weights w_i ~ CE_i^-lam")
    t_in: int = option(5, "a forget step every t_in-th iteration")
    clip: float = option(7.0, "max gradient norm of a forget step (0 = no clipping)")
    fisher_batches: int | None = option(None, "batches per set for the Fisher estimates (None = all)")

    def __post_init__(self) -> None:
        if not (self.alpha > 0 and self.lam >= 0 and self.clip >= 0):
            raise ConfigError(f"sfron needs alpha > 0, lam >= 0, clip >= 0; got {self.alpha}, {self.lam}, {self.clip}")
        if self.t_in < 1:
            raise ConfigError(f"sfron t_in must be >= 1, got {self.t_in}")
        if self.fisher_batches is not None and self.fisher_batches < 1:
            raise ConfigError(f"sfron fisher_batches must be None or >= 1, got {self.fisher_batches}")

    def prepare(self, ctx: UnlearnContext) -> None:
        """Fisher estimates on D_f and D_r, and the forget-phase mask F_f / F_r >= 1."""
        f_f = diagonal_fisher(ctx.model, ctx.forget_batches, self.fisher_batches)
        f_r = diagonal_fisher(ctx.model, ctx.retain_batches, self.fisher_batches)
        params = [p for p in ctx.model.parameters() if p.requires_grad]
        # ratio >= 1 written without division; 0/0 (a weight no loss touches) is not salient
        self.mask = {p: (ff >= fr) & (ff > 0) for p, ff, fr in zip(params, f_f, f_r)}
        ctx.optimizer.set_mask(self.mask, phase="forget")
        self.iterations = ctx.schedule.iterations

    def forget_loss(self, model: nn.Module, batch: Any, info: StepInfo) -> torch.Tensor:
        """L_f = -alpha_t * sum_i w_i CE_i (weights detached)."""
        x, y = batch
        ce = F.cross_entropy(model(x), y, reduction="none")
        w = ce.detach().float().clamp_min(1e-12).pow(-self.lam)
        alpha_t = self.alpha * 0.5 * (1 + math.cos(math.pi * info.epoch / self.iterations))
        return -alpha_t * (w / w.sum() * ce).sum()

    def retain_loss(self, model: nn.Module, batch: Any, info: StepInfo) -> torch.Tensor:
        """L_r = CE(f(x_r), y_r)."""
        x, y = batch
        return F.cross_entropy(model(x), y)

    def before_step(self, model: nn.Module, optimizer: PhasedOptimizer, info: StepInfo) -> None:
        """Clip the (masked) forget gradient to norm ``clip``."""
        if info.phase == "forget" and self.clip > 0:
            with torch.no_grad():
                for p, m in self.mask.items():
                    if p.grad is not None:
                        p.grad.mul_(m)
            torch.nn.utils.clip_grad_norm_(model.parameters(), self.clip)

    def default_schedule(self) -> Schedule:
        """Paper: T_out = 1500 iterations, forget every t_in-th, cosine lr on both phases."""
        return Schedule(mode="iteration", iterations=1500, forget_every=self.t_in, forget_lr_schedule="cosine",
                        retain_lr_schedule="cosine")
