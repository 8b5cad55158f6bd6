"""Muon for every parameter shape: orthogonalized momentum for matrices, AdamW for vectors."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.optim import Optimizer

from .base import check_value, run_closure


def _orthogonalize(g: torch.Tensor, steps: int) -> torch.Tensor:
    """Quintic Newton-Schulz iteration towards the nearest semi-orthogonal matrix (Muon)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g / (g.norm() + 1e-7)
    transposed = x.shape[0] > x.shape[1]
    if transposed:
        x = x.T
    for _ in range(steps):
        s = x @ x.T
        x = a * x + (b * s + c * s @ s) @ x
    return x.T if transposed else x


class Muon(Optimizer):
    """Muon for every parameter shape.

    Tensors with >= 2 dims are flattened to (out, rest), their Nesterov momentum is
    orthogonalized (Newton-Schulz) and scaled to AdamW-like RMS (0.2 * sqrt(max(out, rest)));
    vectors (biases, norms) get an AdamW update, as Muon's authors recommend.
    """

    def __init__(self, params: Any, lr: float = 2e-2, momentum: float = 0.95, weight_decay: float = 0.0,
                 ns_steps: int = 5, betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8) -> None:
        check_value("lr", lr, 1e-30)
        check_value("momentum", momentum, 0.0, 1.0)
        check_value("weight_decay", weight_decay)
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                                  "ns_steps": ns_steps, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # noqa: D102
        loss = run_closure(closure)
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g, state = p.grad, self.state[p]
                p.mul_(1 - lr * wd)
                if p.ndim >= 2:
                    buf = state.setdefault("momentum_buffer", torch.zeros_like(p))
                    buf.mul_(group["momentum"]).add_(g)
                    update = g.add(buf, alpha=group["momentum"]).reshape(p.shape[0], -1)
                    o = _orthogonalize(update.float(), group["ns_steps"]).to(p.dtype)
                    scale = 0.2 * math.sqrt(max(o.shape))
                    p.add_(o.reshape(p.shape), alpha=-lr * scale)
                else:
                    b1, b2 = group["betas"]
                    state["step"] = state.get("step", 0) + 1
                    m = state.setdefault("exp_avg", torch.zeros_like(p))
                    v = state.setdefault("exp_avg_sq", torch.zeros_like(p))
                    m.lerp_(g, 1 - b1)
                    v.mul_(b2).addcmul_(g, g, value=1 - b2)
                    t = state["step"]
                    denom = (v / (1 - b2**t)).sqrt_().add_(group["eps"])
                    p.addcdiv_(m, denom, value=-lr / (1 - b1**t))
        return loss
