"""SGD with the fused kernel where it works (torch's own arithmetic)."""

from __future__ import annotations

from typing import Any

import torch


class FastSGD(torch.optim.SGD):
    """``torch.optim.SGD`` that uses its fused kernel only on the steps that kernel can do.

    With ``fused=True`` each step falls back to the foreach kernel when the fused one would fail:
    sparse gradients (``Embedding(sparse=True)``), and -- a torch 2.13 fused-SGD bug -- a step where only
    some parameters have a momentum buffer (after a step in which some gradients were None). The
    arithmetic is torch's SGD either way.
    """

    def _init_group(self, group: dict[str, Any], params: list[Any], grads: list[Any],
                    momentum_buffer_list: list[Any]) -> bool:
        has_sparse_grad = super()._init_group(group, params, grads, momentum_buffer_list)
        if group.setdefault("fused_when_possible", bool(group["fused"])):
            present = [b is not None for b in momentum_buffer_list]
            partial = group["momentum"] != 0 and any(present) and not all(present)
            group["fused"] = not (has_sparse_grad or partial)
            group["foreach"] = not group["fused"]
        return has_sparse_grad
