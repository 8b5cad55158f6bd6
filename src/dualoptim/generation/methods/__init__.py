"""Generative unlearning methods (one file each), registered by lower-case name.

Each is a :class:`dualoptim.engine.Method` over batches ``(images, labels)``: forget batches hold
images of the forgotten class, retain batches images of the remaining classes. The same method
runs with a shared optimizer (baseline) or DualOptim: only the optimizer spec differs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ...engine import Method
from ...errors import ConfigError
from ...registry import Registry

METHODS: Registry[type[Method]] = Registry("generation method")


def register_method(name: str) -> Callable[[type[Method]], type[Method]]:
    """Class decorator adding a method under ``name`` (lower case, unique)."""
    def deco(cls: type[Method]) -> type[Method]:
        cls.name = name
        return METHODS.add(name, cls)
    return deco


def list_methods() -> list[str]:
    """Registered generative unlearning methods."""
    return METHODS.names()


def create_method(name: str, **options: Any) -> Method:
    """Instantiate method ``name`` with ``options`` (its constructor arguments)."""
    return METHODS.get(name)(**options)


def accumulate_grads(model: torch.nn.Module, batches, loss_fn, limit: int | None, square: bool
                     ) -> dict[torch.nn.Parameter, torch.Tensor]:
    """Sum over up to ``limit`` batches of each parameter's gradient magnitude (``|g|``) or square (``g^2``)."""
    params = [p for p in model.parameters() if p.requires_grad]
    acc = {p: torch.zeros_like(p) for p in params}
    n = 0
    for batch in batches:
        if limit is not None and n >= limit:
            break
        model.zero_grad(set_to_none=True)
        loss_fn(batch).backward()
        for p in params:
            if p.grad is not None:
                acc[p] += p.grad.pow(2) if square else p.grad.abs()
        n += 1
    model.zero_grad(set_to_none=True)
    if n == 0:
        raise ConfigError("no batches to estimate the saliency mask from")
    return {p: a / n for p, a in acc.items()}


from . import salun, sfron  # noqa: E402,F401  (registers the methods)
