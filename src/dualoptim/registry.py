"""One registry type for everything found by name (datasets, models, methods, losses, optimizers, presets).

Names are lower case and unique; an unknown name is a :class:`~dualoptim.errors.ConfigError` that lists the
valid ones, so every ``--dataset``/``--model``/``--method``/``--optim``/``--preset`` flag fails the same way.
A benchmark preset registry holds zero-argument functions that return a fresh config:
``BENCH_PRESETS.get("quick")()``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> entry mapping with a clear error for unknown names.

    Args:
        kind: what the entries are, used in error messages ("dataset", "model", ...).
        entries: entries to register now (name -> entry), as :meth:`add` does one by one.
    """

    def __init__(self, kind: str, entries: Mapping[str, T] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        for name, entry in (entries or {}).items():
            self.add(name, entry)

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
            raise ConfigError(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)
