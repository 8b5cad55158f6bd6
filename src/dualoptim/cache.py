"""Content-keyed model cache: get a model folder, or build it once.

A cached model lives in ``<root>/<prefix>-<key>`` where ``key`` is :func:`dualoptim.store.run_key` of
everything that determines the weights (data, model config, recipe, seed), so a changed setting builds
a new folder and a rerun finds the old one. A folder is only ever seen complete: the builder writes
into a temporary sibling folder that is renamed into place when it returns, so a killed build leaves
nothing that a later run would mistake for a finished model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from .store import run_key

T = TypeVar("T")


@dataclass(frozen=True)
class Cached(Generic[T]):
    """What :func:`get_or_build` returns: the value, whether the folder was already there, and the folder."""

    value: T
    hit: bool
    folder: Path


def key_folder(root: str | os.PathLike[str], prefix: str, **parts: Any) -> Path:
    """``<root>/<prefix>-<run_key(**parts)>``: the folder of the model these settings determine."""
    return Path(root) / f"{prefix}-{run_key(**parts)}"


def get_or_build(folder: str | os.PathLike[str], load: Callable[[Path], T], build: Callable[[Path], T]) -> Cached[T]:
    """``load(folder)`` when ``folder`` exists, else ``build(tmp)`` and move ``tmp`` to ``folder``.

    Args:
        folder: the cache folder of one model.
        load: reads a finished folder.
        build: trains the model and writes it into the (not yet existing) folder it is given; its return
            value is returned as is (no reload).

    If another process finished the same folder first, its copy is kept and ours discarded (same content key,
    same content).
    """
    folder = Path(folder)
    if folder.is_dir():
        return Cached(load(folder), True, folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".building", dir=folder.parent))
    try:
        target = tmp / folder.name  # the builder sees a fresh folder with the final name
        value = build(target)
        if not target.is_dir():
            raise RuntimeError(f"the builder of {folder} wrote nothing")
        try:
            os.replace(target, folder)
        except OSError:
            if not folder.is_dir():  # not a lost race: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Cached(value, False, folder)


__all__ = ["Cached", "get_or_build", "key_folder"]
