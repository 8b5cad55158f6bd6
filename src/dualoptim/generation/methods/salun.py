"""SalUn for class-conditional diffusion (Fan et al., 2024) as used in the DualOptim paper.

* Mask: the top ``mask_ratio`` (50%) of U-Net weights by ``|grad|`` of the diffusion loss on
  forget-class images (one global threshold); only those weights change, in both phases (a hard
  mask in the optimizer: masked weights cannot move through momentum or weight decay either).
* Forget loss ("random label"): ``MSE(eps(x_t, c_f), stopgrad eps(x_t, c'))`` with ``c' != c_f``:
  the model learns to draw another class when asked for the forgotten one. ``remap="next"`` uses
  ``c' = (c_f + 1) mod C`` (the public code), ``"random"`` a uniformly drawn other class per image.
* Retain loss: the usual epsilon-MSE on remaining-class images (condition dropout as in training,
  so the unconditional branch used by guidance is kept too).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...engine import Method, StepInfo, UnlearnContext, accumulate_grads
from ...errors import ConfigError
from . import register_method

REMAPS = ("next", "random")


@register_method("salun")
class SalUn(Method):
    def __init__(self, num_classes: int, mask_ratio: float = 0.5, remap: str = "next", mask_batches: int | None = 8,
                 cond_drop: float = 0.1) -> None:
        if not 0 < mask_ratio <= 1:
            raise ConfigError(f"mask_ratio must be in (0, 1], got {mask_ratio}")
        if remap not in REMAPS:
            raise ConfigError(f"remap must be one of {REMAPS}, got {remap!r}")
        self.num_classes, self.mask_ratio, self.remap = num_classes, mask_ratio, remap
        self.mask_batches, self.cond_drop = mask_batches, cond_drop
        self.mask: dict[torch.nn.Parameter, torch.Tensor] = {}

    def prepare(self, ctx: UnlearnContext) -> None:
        model = ctx.model
        saliency = accumulate_grads(model, ctx.forget_batches, lambda b: model.loss(b[0], b[1]), self.mask_batches,
                                    square=False)
        flat = torch.cat([s.flatten() for s in saliency.values()])
        k = max(1, round(self.mask_ratio * flat.numel()))
        threshold = torch.topk(flat, k, sorted=True).values[-1]
        self.mask = {p: s >= threshold for p, s in saliency.items()}
        ctx.optimizer.set_mask(self.mask)  # both phases

    def other_class(self, labels: torch.Tensor) -> torch.Tensor:
        if self.remap == "next":
            return (labels + 1) % self.num_classes
        shift = torch.randint(1, self.num_classes, labels.shape).to(labels.device)
        return (labels + shift) % self.num_classes

    def forget_loss(self, model, batch, info: StepInfo) -> torch.Tensor:
        x, y = batch
        x_t, t, _ = model.add_noise(x)
        with torch.no_grad():
            target = model(x_t, t, self.other_class(y))
        return F.mse_loss(model(x_t, t, y), target)

    def retain_loss(self, model, batch, info: StepInfo) -> torch.Tensor:
        x, y = batch
        return model.loss(x, y, cond_drop=self.cond_drop)
