"""GA (gradient ascent): maximise the cross-entropy on the forget set, nothing else.

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


@register_method("ga", "Gradient ascent: minimise -CE on the forget set only (no retain step)")
@dataclass
class GA(Method):
    uses_retain: ClassVar[bool] = False

    def forget_loss(self, model: nn.Module, batch: Any, info: StepInfo) -> torch.Tensor:
        """L_f = -CE(f(x_f), y_f)."""
        x, y = batch
        return -F.cross_entropy(model(x), y)
