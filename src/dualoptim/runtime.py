"""What every ``dualoptim`` sub-command shares: the thread count, progress bars and ``KEY=VALUE`` options.

A sub-command adds the flags with :func:`add_runtime_args`; :func:`dualoptim.cli.main` applies ``--threads``
around the command (and restores the previous count, so in-process calls do not change the caller's threading).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from .errors import ConfigError


def add_runtime_args(p: argparse.ArgumentParser, progress: bool = True) -> None:
    """``--threads N`` (torch CPU threads) and, unless ``progress=False``, ``--no-progress``."""
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (1 is often fastest when other jobs share the CPU)")
    if progress:
        p.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the body with ``n`` torch threads (None: unchanged), restoring the previous count afterwards."""
    if n is None:
        yield
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"--threads must be an integer >= 1, got {n!r}")
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def parse_key_values(items: Iterable[str] | None, flag: str, convert: bool = True) -> dict[str, Any]:
    """``["k=v", ...]`` -> ``{"k": v}``; with ``convert`` each value is read as JSON when it parses
    (``0.5`` -> float, ``true`` -> bool, ``[1,2]`` -> list), else kept as the string."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag} expects KEY=VALUE, got {item!r}")
        if convert:
            try:
                out[key.strip()] = json.loads(value)
                continue
            except json.JSONDecodeError:
                pass
        out[key.strip()] = value
    return out
