"""One registry type for everything found by name (datasets, models, methods, optimizers).

Names are lower case and unique; an unknown name is a :class:`~dualoptim.errors.ConfigError` that lists the
valid ones, so every ``--dataset``/``--model``/``--method`` flag fails the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> entry mapping with a clear error for unknown names.

    Args:
        kind: what the entries are, used in error messages ("dataset", "model", ...).
        error: exception raised for an unknown name (default :class:`ConfigError`).
    """

    def __init__(self, kind: str, error: Callable[[str], Exception] = ConfigError) -> None:
        self.kind = kind
        self._error = error
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name`` (lower case, no ``+``, not taken); returns ``entry``."""
        if not name or name != name.lower() or "+" in name or name in self._entries:
            raise ValueError(f"invalid or duplicate {self.kind} name {name!r}")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        """The entry registered as ``name`` (case-insensitive)."""
        try:
            return self._entries[name.lower()]
        except (KeyError, AttributeError):
            raise self._error(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
