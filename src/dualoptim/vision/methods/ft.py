"""FT (fine-tuning): keep training on the retain set only, so the forget set is forgotten catastrophically.

Schedule: the paper's 10 epochs at a constant lr, the engine's default ``Schedule()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ...engine import Method, StepInfo
from . import register_method


@register_method("ft", "Fine-tune: cross-entropy on the retain set only (no forget step)")
@dataclass
class FT(Method):
    uses_forget: ClassVar[bool] = False

    def retain_loss(self, model: nn.Module, batch: Any, info: StepInfo) -> torch.Tensor:
        """L_r = CE(f(x_r), y_r)."""
        x, y = batch
        return F.cross_entropy(model(x), y)
