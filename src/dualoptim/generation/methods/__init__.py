"""Generative unlearning methods (one file each), registered by lower-case name.

Each is a :class:`dualoptim.engine.Method` over batches ``(images, labels)``: forget batches hold
images of the forgotten class, retain batches images of the remaining classes. The same method
runs with a shared optimizer (baseline) or DualOptim: only the optimizer spec differs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...engine import Method
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


from . import salun, sfron  # noqa: E402,F401  (registers the methods)
