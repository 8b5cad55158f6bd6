"""Files that are either complete or absent: atomic writes, safe checkpoints, safe output folders.

A checkpoint is a folder holding ``model.safetensors`` (tensors only: loading executes
no code), ``meta.json`` (everything else, including the sha256 of the weights file, checked
on load) and the ``.dualoptim`` marker. It is written into a temporary sibling folder and
swapped in with one rename, so an interrupted save never leaves a half-written checkpoint
behind.

:func:`check_output` runs before a command does any work: it refuses an output that is,
contains or lies inside one of the command's inputs, refuses to replace a folder that
dualoptim did not write (no marker), and checks that the output can be written at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from .errors import ConfigError, DataNotFoundError, DualOptimWarning

WEIGHTS = "model.safetensors"
META = "meta.json"
MARKER = ".dualoptim"  # in every output folder dualoptim writes: --overwrite replaces only such folders
INTEGRITY = "integrity"  # meta.json key: {file name: {"sha256", "bytes"}}, checked on load, not returned
# folders written before the marker existed, recognised by their own metadata file
_LEGACY_MARKERS = ("dualoptim_llm.json",)
_LEGACY_KINDS = ("dualoptim.classifier", "ddpm", "gen-classifier")


class IntegrityWarning(DualOptimWarning):
    """A checkpoint cannot be verified (written before weight digests were recorded)."""


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


@contextmanager
def atomic_dir(directory: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary folder next to ``directory`` to fill; when the body succeeds it replaces ``directory`` in one
    rename (files fsynced, a normal folder's permissions; another process writing the same folder at the same
    time is tolerated), when it fails it is removed and ``directory`` is left as it was."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    try:
        yield tmp
        mask = _umask()
        os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes 0700; give the permissions of a normal folder
        for f in tmp.iterdir():
            if f.is_file():
                os.chmod(f, 0o666 & ~mask)
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        for attempt in range(5):  # another process may write the same folder at the same time
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


def save_checkpoint(directory: str | os.PathLike[str], tensors: Mapping[str, torch.Tensor],
                    meta: Mapping[str, Any]) -> Path:
    """Write ``tensors`` and ``meta`` as a checkpoint folder, replacing any previous one atomically."""
    from safetensors.torch import save_file

    with atomic_dir(directory) as tmp:
        contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        save_file(contiguous, str(tmp / WEIGHTS))
        weights = (tmp / WEIGHTS).read_bytes()
        meta = {**meta, INTEGRITY: {WEIGHTS: {"sha256": hashlib.sha256(weights).hexdigest(), "bytes": len(weights)}}}
        (tmp / META).write_text(json.dumps(meta, indent=2, sort_keys=True, allow_nan=False) + "\n")
        (tmp / MARKER).write_text(f"written by dualoptim ({meta.get('kind', 'checkpoint')})\n")
    return Path(directory)


def load_checkpoint(directory: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a checkpoint folder written by :func:`save_checkpoint` without executing code.

    The weights file must match the sha256 recorded in ``meta.json``. A checkpoint written before digests
    were recorded loads with an :class:`IntegrityWarning` (its weights cannot be verified). The digest
    detects corruption (flipped bits, a replaced or truncated file); it does not authenticate: whoever
    can rewrite the weights can rewrite ``meta.json`` too.

    Returns:
        ``(tensors, meta)``; ``meta`` without the integrity record.

    Raises:
        DataNotFoundError: the folder or one of its two files is missing.
        ConfigError: a file is corrupt or truncated, does not match its digest, or is not in the expected format.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

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
    record = meta.pop(INTEGRITY, None)
    data = (directory / WEIGHTS).read_bytes()
    if record is None:
        warnings.warn(f"{directory} was written without a weights digest (an older dualoptim): its weights "
                      f"cannot be checked for corruption; save it again to add one", IntegrityWarning, stacklevel=2)
    else:
        entry = record.get(WEIGHTS) if isinstance(record, dict) else None
        want, size = (entry.get("sha256"), entry.get("bytes")) if isinstance(entry, dict) else (None, None)
        if size is not None and size != len(data):
            raise ConfigError(f"{directory / WEIGHTS} is corrupt or truncated: {len(data)} bytes, {META} records "
                              f"{size}")
        have = hashlib.sha256(data).hexdigest()
        if have != want:
            raise ConfigError(f"{directory / WEIGHTS} is corrupt or was modified: its sha256 {have[:16]}... does not "
                              f"match the {str(want)[:16]}... recorded in {META} (changed or damaged after saving)")
    try:
        tensors = dict(sorted(load(data).items()))  # name order, as safetensors' load_file gives
    except (SafetensorError, OSError, ValueError) as e:
        raise ConfigError(f"{directory / WEIGHTS} is corrupt or truncated: {e}") from None
    return tensors, meta


def is_dualoptim_output(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder dualoptim wrote (it holds the marker, or an older dualoptim's metadata)."""
    path = Path(path)
    if (path / MARKER).is_file() or any((path / name).is_file() for name in _LEGACY_MARKERS):
        return True
    try:  # checkpoints written before the marker: meta.json names a dualoptim kind
        meta = json.loads((path / META).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("kind") in _LEGACY_KINDS


def _relation(target: Path, source: Path) -> str | None:
    if target == source:
        return "is"
    if source in target.parents:
        return "lies inside"
    if target in source.parents:
        return "contains"
    return None


def check_output(path: str | os.PathLike[str], *, inputs: Iterable[str | os.PathLike[str] | None] = (),
                 overwrite: bool = False, kind: str = "folder", flag: str = "--out") -> Path:
    """Check, before any work starts, that a command may write ``path``; nothing is created.

    Args:
        path: the output.
        inputs: the command's inputs (checkpoints, data folders, config files); ``None`` and paths that do not
            exist are skipped. Paths are compared resolved (symbolic links followed).
        overwrite: ``kind="folder"`` only: replace an existing folder, which must be a dualoptim output.
        kind: ``"folder"`` (replaced as a whole), ``"root"`` (a folder that files are added to, never
            deleted: an existing one is fine) or ``"file"`` (one file, replaced atomically).
        flag: the option that named ``path`` (for the messages).

    Raises:
        ConfigError: the output is, contains or lies inside an input; exists (folder, without ``overwrite``);
            is not a dualoptim folder (with ``overwrite``); has the wrong type; or cannot be written.
    """
    if kind not in ("folder", "root", "file"):
        raise ValueError(f"kind must be folder, root or file, got {kind!r}")
    path = Path(path)
    target = path.resolve()
    for source in inputs:
        if source is None or not Path(source).exists():
            continue
        relation = _relation(target, Path(source).resolve())
        if relation == "contains" and kind != "folder":
            relation = None  # adding files to a folder that holds an input does not touch the input
        if relation is not None:
            raise ConfigError(f"{flag} {path} {relation} the input {source}: writing it could destroy the input; "
                              f"choose another {flag}")
    if path.exists():
        if kind == "file" and path.is_dir():
            raise ConfigError(f"{flag} {path} is a folder; give a file name")
        if kind != "file" and not path.is_dir():
            raise ConfigError(f"{flag} {path} exists and is not a folder")
        if kind == "folder" and not overwrite:
            raise ConfigError(f"{path} already exists; pass --overwrite to replace it")
        if kind == "folder" and not is_dualoptim_output(path):
            raise ConfigError(f"{path} was not written by dualoptim (no {MARKER} marker): --overwrite only replaces "
                              f"dualoptim output folders, never other folders; move it away or choose another {flag}")
    probe_in = path if kind == "root" and path.is_dir() else target.parent
    while not probe_in.exists() and probe_in != probe_in.parent:
        probe_in = probe_in.parent  # the folders that will be created
    try:
        if not probe_in.is_dir():
            raise NotADirectoryError(f"{probe_in} is not a folder")
        fd, probe = tempfile.mkstemp(prefix=".dualoptim-probe-", dir=probe_in)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(f"{flag} {path} cannot be written ({probe_in}: {e.strerror or e}); choose a writable "
                          f"location") from None
    return path
