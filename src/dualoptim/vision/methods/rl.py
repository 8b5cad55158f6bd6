"""RL (random label): fit the forget set to random wrong labels while fine-tuning on the retain set.

Schedule: the paper's 10 epochs of (forget pass, retain pass) at a constant lr, the engine's default
``Schedule()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...engine import Method, StepInfo
from . import register_method


def random_other_labels(y: torch.Tensor, num_classes: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A label drawn uniformly among the ``num_classes - 1`` labels different from each ``y`` (vectorised)."""
    shift = torch.randint(1, num_classes, y.shape, generator=generator, device=y.device)
    return (y + shift) % num_classes


@register_method("rl", "Random label: CE towards a random wrong label on forget, CE on retain")
@dataclass
class RL(Method):
    def forget_loss(self, model: nn.Module, batch: Any, info: StepInfo) -> torch.Tensor:
        """L_f = CE(f(x_f), y~) with y~ != y_f drawn anew for every batch (torch's global RNG, seeded per run)."""
        x, y = batch
        logits = model(x)
        return F.cross_entropy(logits, random_other_labels(y, logits.shape[1]))

    def retain_loss(self, model: nn.Module, batch: Any, info: StepInfo) -> torch.Tensor:
        """L_r = CE(f(x_r), y_r)."""
        x, y = batch
        return F.cross_entropy(model(x), y)
