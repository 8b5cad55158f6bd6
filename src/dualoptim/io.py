"""Files that are either complete or absent: atomic writes and safe checkpoints.

A checkpoint is a folder holding ``model.safetensors`` (tensors only: loading executes
no code) and ``meta.json`` (everything else). It is written into a temporary sibling
folder and swapped in with one rename, so an interrupted save never leaves a
half-written checkpoint behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .errors import ConfigError, DataNotFoundError

WEIGHTS = "model.safetensors"
META = "meta.json"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the permissions of a normal file
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Atomically write UTF-8 ``text`` to ``path``."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON (NaN/inf are rejected: they are not JSON)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n")


def save_checkpoint(directory: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor],
                    meta: Mapping[str, Any]) -> Path:
    """Write ``tensors`` and ``meta`` as a checkpoint folder, replacing any previous one atomically."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    try:
        mask = _umask()
        os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes 0700; give the permissions of a normal folder
        contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        save_file(contiguous, str(tmp / WEIGHTS))
        (tmp / META).write_text(json.dumps(dict(meta), indent=2, sort_keys=True, allow_nan=False) + "\n")
        for f in tmp.iterdir():
            os.chmod(f, 0o666 & ~mask)
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        for attempt in range(5):  # another process may write the same checkpoint at the same time
            old = None
            if directory.exists():
                old = directory.with_name(f".{directory.name}.old-{os.getpid()}-{attempt}")
                try:
                    os.replace(directory, old)
                except FileNotFoundError:
                    old = None  # the other writer moved it first
            try:
                os.replace(tmp, directory)
            except OSError:
                if attempt == 4:
                    raise
                continue
            finally:
                if old is not None:
                    shutil.rmtree(old, ignore_errors=True)
            break
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(directory.parent)
    return directory


def load_checkpoint(directory: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a checkpoint folder written by :func:`save_checkpoint` without executing code.

    Raises:
        DataNotFoundError: the folder or one of its two files is missing.
        ConfigError: a file is corrupt or truncated, or not in the expected format.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    if not directory.is_dir():
        hint = " (a file was given: pass the checkpoint folder)" if directory.exists() else ""
        raise DataNotFoundError(f"checkpoint folder not found: {directory}{hint}")
    for name in (WEIGHTS, META):
        if not (directory / name).is_file():
            raise DataNotFoundError(f"{directory} is not a dualoptim checkpoint: {name} is missing")
    try:
        meta = json.loads((directory / META).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{directory / META} is corrupt: {e}") from None
    if not isinstance(meta, dict):
        raise ConfigError(f"{directory / META} must hold a JSON object")
    try:
        tensors = load_file(str(directory / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as e:
        raise ConfigError(f"{directory / WEIGHTS} is corrupt or truncated: {e}") from None
    return tensors, meta
