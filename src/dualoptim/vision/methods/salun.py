"""SalUn: random-label unlearning restricted to the weights most salient for the forget set.

Saliency = |gradient of -CE| accumulated over the whole forget set with the model in eval mode; the top
``ratio`` fraction of entries, ranked globally over all parameters, may change. The mask is a hard
constraint of the optimizer in BOTH phases (``optimizer.set_mask``): masked-out weights are not moved by
gradients, weight decay or earlier momentum (the public code only multiplied gradients, which leaks).
Schedule: RL's (the paper's 10 epochs of forget pass + retain pass, constant lr).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...engine import UnlearnContext, accumulate_grads
from ...errors import ConfigError
from . import option, register_method
from .rl import RL


def saliency_mask(model: nn.Module, forget_batches: Iterable[Any], ratio: float) -> dict[torch.Tensor, torch.Tensor]:
    """``{param: bool mask}`` keeping the top ``ratio`` of |sum of grad(-CE)| over ``forget_batches``, globally."""
    grad_sum = accumulate_grads(model, forget_batches, lambda b: -F.cross_entropy(model(b[0]), b[1]), None,
                                square=False, eval_mode=True, add=torch.Tensor.add_, mean=False)
    params, acc = list(grad_sum), list(grad_sum.values())
    scores = torch.cat([a.abs().flatten() for a in acc])
    keep = torch.zeros_like(scores, dtype=torch.bool)
    keep[torch.topk(scores, round(ratio * scores.numel()), sorted=False).indices] = True
    return {p: m.view_as(p) for p, m in zip(params, keep.split([p.numel() for p in params]))}


@register_method("salun", "SalUn: RL on the top-k% most forget-salient weights (hard mask, both phases)")
@dataclass
class SalUn(RL):
    ratio: float = option(0.5, "fraction of weights that may change (global top-k of |grad of -CE| on D_f)")

    def __post_init__(self) -> None:
        if not 0.0 < self.ratio <= 1.0:
            raise ConfigError(f"salun ratio must be in (0, 1], got {self.ratio}")

    def prepare(self, ctx: UnlearnContext) -> None:
        """Compute the saliency mask on the original model and install it in both optimizer phases."""
        self.mask = saliency_mask(ctx.model, ctx.forget_batches, self.ratio)
        ctx.optimizer.set_mask(self.mask)
