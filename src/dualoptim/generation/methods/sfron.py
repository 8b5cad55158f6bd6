"""SFRon for class-conditional diffusion (Huang et al., 2024) as used in the DualOptim paper.

* Mask: ``1[F_f / F_r >= 1]`` with ``F`` the diagonal empirical Fisher (mean squared gradient of the
  diffusion loss) on forget and on remaining images: weights that matter more to the forgotten
  class than to the rest. It constrains the forget steps; retain steps may change every weight.
* Forget loss (adaptive negative loss): ``-alpha_t * sum_i w_i * ||eps - eps(x_t, c_f)||^2`` with
  ``w_i = loss_i^(-lambda) / sum_j loss_j^(-lambda)`` (detached): images the model still denoises
  well get more weight. ``alpha_t = alpha (1 + cos(pi t / T)) / 2`` over the T forget steps
  (``alpha_schedule="cosine"``, as the classification SFRon in ``vision.methods``) or ``alpha``
  (``"constant"``).
* Retain loss: epsilon-MSE on remaining-class images. Gradient norms are clipped to ``clip`` (1.0)
  before every step, which bounds the unbounded negative loss.
"""

from __future__ import annotations

import math

import torch

from ...engine import Method, StepInfo, UnlearnContext, accumulate_grads
from ...errors import ConfigError
from . import register_method


@register_method("sfron")
class SFRon(Method):
    def __init__(self, alpha: float = 1.0, lam: float = 0.5, clip: float = 1.0, alpha_schedule: str = "cosine",
                 fisher_batches: int | None = 8, cond_drop: float = 0.1) -> None:
        if alpha <= 0 or lam < 0 or clip <= 0:
            raise ConfigError(f"need alpha > 0, lam >= 0, clip > 0; got {alpha}, {lam}, {clip}")
        if alpha_schedule not in ("constant", "cosine"):
            raise ConfigError(f"alpha_schedule must be 'constant' or 'cosine', got {alpha_schedule!r}")
        self.alpha, self.lam, self.clip, self.alpha_schedule = alpha, lam, clip, alpha_schedule
        self.fisher_batches, self.cond_drop = fisher_batches, cond_drop
        self.mask: dict[torch.nn.Parameter, torch.Tensor] = {}

    def prepare(self, ctx: UnlearnContext) -> None:
        model = ctx.model
        loss = lambda b: model.loss(b[0], b[1])
        fisher_f = accumulate_grads(model, ctx.forget_batches, loss, self.fisher_batches, square=True)
        fisher_r = accumulate_grads(model, ctx.retain_batches, loss, self.fisher_batches, square=True)
        # F_f / F_r >= 1 written without division; 0/0 (a weight no loss touches) is not salient
        self.mask = {p: (fisher_f[p] >= fisher_r[p]) & (fisher_f[p] > 0) for p in fisher_f}
        ctx.optimizer.set_mask(self.mask, phase="forget")

    def alpha_t(self, info: StepInfo) -> float:
        if self.alpha_schedule == "constant":
            return self.alpha
        return self.alpha * 0.5 * (1 + math.cos(math.pi * info.progress))

    def forget_loss(self, model, batch, info: StepInfo) -> torch.Tensor:
        x, y = batch
        losses = model.per_sample_loss(x, y)
        w = losses.detach().clamp_min(1e-8).pow(-self.lam)
        return -self.alpha_t(info) * (w / w.sum() * losses).sum()

    def retain_loss(self, model, batch, info: StepInfo) -> torch.Tensor:
        x, y = batch
        return model.loss(x, y, cond_drop=self.cond_drop)

    def before_step(self, model, optimizer, info: StepInfo) -> None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), self.clip)
