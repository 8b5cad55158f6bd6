"""Forget sets: which training samples to unlearn.

``make_forget_split(spec, train_labels, seed) -> ForgetSplit`` with ``spec`` one of

- ``random:<fraction>`` — a uniformly drawn fraction in (0, 1) of the training set (``random:0.1``), seeded;
- ``class:<k>`` — every training sample of class ``k``;
- ``file:PATH`` or an existing ``PATH`` — indices listed in a text/JSON/.npy file.

Indices always refer to the SAME training set the original model was trained on (``train_labels`` is that
set's labels, subset included): the reference code re-split its data with the unlearning seed, so part of
its "forget" set had never been seen by the original model. ``ForgetSplit.digest`` is the
sha256 of the sorted forget indices, stored with every checkpoint and result so a table can prove which
samples were forgotten. Invalid specs raise :class:`ConfigError` before anything is trained or written.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataNotFoundError


@dataclass(frozen=True)
class ForgetSplit:
    """A forget/retain partition of a training set (sorted int64 index tensors)."""

    forget_idx: torch.Tensor
    retain_idx: torch.Tensor
    spec: str
    seed: int
    digest: str

    @property
    def num_forget(self) -> int:
        return len(self.forget_idx)

    @property
    def num_retain(self) -> int:
        return len(self.retain_idx)

    def describe(self) -> dict:
        """JSON-ready summary (without the indices themselves)."""
        return {"spec": self.spec, "seed": self.seed, "digest": self.digest, "num_forget": self.num_forget,
                "num_retain": self.num_retain}


def indices_digest(indices: torch.Tensor | np.ndarray) -> str:
    """sha256 (hex) of the sorted indices as little-endian int64."""
    arr = np.sort(np.asarray(indices, dtype="<i8"))
    return hashlib.sha256(arr.tobytes()).hexdigest()


def split_from_indices(forget_idx, num_train: int, spec: str = "indices", seed: int = 0) -> ForgetSplit:
    """Validate explicit forget indices into a training set of ``num_train`` samples and build the split."""
    idx = torch.as_tensor(np.asarray(forget_idx), dtype=torch.int64).reshape(-1)
    if idx.numel() == 0:
        raise ConfigError(f"forget set {spec!r} is empty")
    bad = idx[(idx < 0) | (idx >= num_train)]
    if bad.numel():
        raise ConfigError(f"forget set {spec!r}: {bad.numel()} indices outside the training set "
                          f"[0, {num_train}), e.g. {bad[:5].tolist()}")
    uniq, counts = torch.unique(idx, return_counts=True)
    if (counts > 1).any():
        raise ConfigError(f"forget set {spec!r}: duplicated indices, e.g. {uniq[counts > 1][:5].tolist()}")
    if len(uniq) == num_train:
        raise ConfigError(f"forget set {spec!r} covers the whole training set: nothing would be retained")
    keep = torch.ones(num_train, dtype=torch.bool)
    keep[uniq] = False
    return ForgetSplit(forget_idx=uniq, retain_idx=torch.nonzero(keep).reshape(-1), spec=spec, seed=seed,
                       digest=indices_digest(uniq))


def read_index_file(path: str | Path) -> np.ndarray:
    """Integers from a ``.npy`` (no pickles), ``.json`` (a list) or text file (whitespace/comma separated)."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"forget index file not found: {path}")
    try:
        if path.suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif path.suffix == ".json":
            arr = np.asarray(json.loads(path.read_text()))
        else:
            arr = np.asarray(path.read_text().replace(",", " ").split(), dtype=np.float64)
    except (ValueError, json.JSONDecodeError) as e:
        raise ConfigError(f"forget index file {path} must hold integers only: {e}") from None
    arr = np.asarray(arr).reshape(-1)
    if arr.size and (not np.issubdtype(arr.dtype, np.number) or not np.all(np.mod(arr, 1) == 0)):
        raise ConfigError(f"forget index file {path} must hold integers only")
    return arr.astype(np.int64)


def make_forget_split(spec: str, train_labels: torch.Tensor, seed: int = 0) -> ForgetSplit:
    """The forget/retain split described by ``spec`` over a training set with labels ``train_labels``.

    Args:
        spec: ``random:<fraction>``, ``class:<k>``, ``file:PATH`` or a path to an index file.
        train_labels: labels of the training set the original model used (defines size and classes).
        seed: seed of ``random:`` draws (ignored by the other kinds, but recorded).
    """
    n = len(train_labels)
    kind, _, arg = spec.partition(":")
    if kind == "random":
        try:
            fraction = float(arg)
        except ValueError:
            raise ConfigError(f"forget spec {spec!r}: expected random:<fraction>, e.g. random:0.1") from None
        if not 0.0 < fraction < 1.0:
            raise ConfigError(f"forget spec {spec!r}: the fraction must be in (0, 1), got {fraction}")
        k = round(fraction * n)
        if not 0 < k < n:
            raise ConfigError(f"forget spec {spec!r} selects {k} of {n} samples; choose a fraction giving 1..{n - 1}")
        g = torch.Generator().manual_seed(seed)
        return split_from_indices(torch.randperm(n, generator=g)[:k], n, spec, seed)
    if kind == "class":
        try:
            c = int(arg)
        except ValueError:
            raise ConfigError(f"forget spec {spec!r}: expected class:<k> with an integer k") from None
        present = sorted(torch.unique(train_labels).tolist())
        if c not in present:
            raise ConfigError(f"forget spec {spec!r}: class {c} is not in the training set (classes {present})")
        return split_from_indices(torch.nonzero(train_labels == c).reshape(-1), n, spec, seed)
    looks_like_path = Path(spec).is_file() or "/" in spec or spec.endswith((".txt", ".json", ".npy"))
    if kind == "file" or (spec and looks_like_path):
        return split_from_indices(read_index_file(arg if kind == "file" else spec), n, spec, seed)
    raise ConfigError(f"unknown forget spec {spec!r}; use random:<fraction>, class:<k>, file:PATH or an index "
                      "file path")
