"""Lion (Chen et al. 2023): the sign of an interpolated momentum."""

from __future__ import annotations

from typing import Any

import torch
from torch.optim import Optimizer

from .base import check_value, run_closure


class Lion(Optimizer):
    """Lion (Chen et al. 2023): sign of an interpolated momentum, decoupled weight decay."""

    def __init__(self, params: Any, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0) -> None:
        check_value("lr", lr, 1e-30)
        check_value("beta1", betas[0], 0.0, 1.0)
        check_value("beta2", betas[1], 0.0, 1.0)
        check_value("weight_decay", weight_decay)
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # noqa: D102
        loss = run_closure(closure)
        for group in self.param_groups:
            lr, (b1, b2), wd = group["lr"], group["betas"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                p.mul_(1 - lr * wd)
                p.add_(torch.sign(m.mul(b1).add_(p.grad, alpha=1 - b1)), alpha=-lr)
                m.mul_(b2).add_(p.grad, alpha=1 - b2)
        return loss
