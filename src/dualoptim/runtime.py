"""What every ``dualoptim`` sub-command shares: the thread count, the device, progress bars and ``KEY=VALUE``
options.

A sub-command adds the flags with :func:`add_runtime_args`; :func:`dualoptim.cli.main` applies ``--threads`` and
a classifier or ``gen`` command's ``--device`` around the command (and restores the previous values, so
in-process calls do not change the caller's threading or device).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    import torch


def add_runtime_args(p: argparse.ArgumentParser, progress: bool = True, device: bool = False) -> None:
    """``--threads N`` (torch CPU threads), unless ``progress=False`` ``--no-progress``, and with ``device``
    ``--device`` (where :func:`model_device` puts the models this command builds or loads)."""
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (1 is often fastest when other jobs share the CPU)")
    if progress:
        p.add_argument("--no-progress", dest="progress", action="store_false", help="hide progress bars")
    if device:
        p.add_argument("--device", dest="model_device", default="cpu", metavar="DEVICE",
                       help="cpu (default: the measured tables' device) | cuda | cuda:N | auto (the GPU when there "
                            "is one): the models and the batches they see go there")


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` -> this process's GPU when CUDA is available (``LOCAL_RANK`` under torchrun), else the CPU.

    Asking for ``cuda`` on a machine without CUDA is an error, never a silent CPU run.
    """
    import torch

    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except RuntimeError as e:
        raise ConfigError(f"unknown device {spec!r} ({e}); valid: auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {spec}: CUDA is not available on this machine (use --device cpu)")
        if device.index is None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


_MODEL_DEVICE: list[torch.device | None] = [None]


@contextmanager
def model_device(spec: str | None) -> Iterator[None]:
    """Inside the body, :func:`current_model_device` is ``spec``'s device (None: unchanged). Classifiers built
    by ``vision.create_model`` (fresh, cached or loaded from a checkpoint) go there; everything downstream (training,
    unlearning, evaluation) follows the model's device."""
    if spec is None:
        yield
        return
    before = _MODEL_DEVICE[0]
    _MODEL_DEVICE[0] = resolve_device(spec)
    try:
        yield
    finally:
        _MODEL_DEVICE[0] = before


def current_model_device() -> torch.device | None:
    """The device set by :func:`model_device`, or None (models stay where they are built: the CPU)."""
    return _MODEL_DEVICE[0]


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
