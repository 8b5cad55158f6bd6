"""Classifier checkpoints: weights + metadata in one atomically written folder.

``save_classifier(directory, model, meta, split=None)`` writes ``model.safetensors`` (state dict under
``model.*``; the forget indices under ``split.forget_idx`` when a split is given) and ``meta.json`` through
:func:`dualoptim.io.save_checkpoint` (temp folder + rename: never half-written, no pickle).
``load_classifier(directory, expect=None) -> (model, meta, forget_idx | None)`` rebuilds the model from its
metadata and checks it against the weights and against ``expect`` (e.g. ``{"model": "cnn",
"num_classes": 10}``), raising :class:`ConfigError` that names the field on a mismatch.

Metadata fields (``ClassifierMeta``): dataset, train_subset/subset_seed (the exact training set), model,
model_options, num_classes, in_channels, image_size, recipe (``TrainConfig`` dict), role (``original``,
``retrain``, ``unlearned``), init_seed, split (spec, seed, digest, counts) or None, original (the original
checkpoint's split-free identity: path and weights digest), metrics, timings, dualoptim/torch versions.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import from_dict
from ..errors import ConfigError
from ..io import load_checkpoint, save_checkpoint
from ..store import versions
from .data import ImageData, load_dataset
from .forget import ForgetSplit, indices_digest
from .models import create_model, get_model_info

KIND = "dualoptim.classifier"
FORMAT = 1
ROLES = ("original", "retrain", "unlearned")


@dataclass
class ClassifierMeta:
    """What a classifier checkpoint says about itself (``meta.json``)."""

    dataset: str
    model: str
    num_classes: int
    in_channels: int
    image_size: int
    model_options: dict[str, Any] = field(default_factory=dict)
    train_subset: int | None = None
    subset_seed: int | None = None
    recipe: dict[str, Any] = field(default_factory=dict)
    role: str = "original"
    init_seed: int = 0
    split: dict[str, Any] | None = None
    original: dict[str, Any] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ConfigError(f"unknown checkpoint role {self.role!r}; valid: {', '.join(ROLES)}")

    @classmethod
    def of(cls, data: ImageData, model: str, model_options: dict[str, Any], **fields: Any) -> ClassifierMeta:
        """The metadata of a ``model`` trained on ``data`` (its name, image shape and exact training subset);
        ``fields`` sets the others (role, init_seed, recipe, ...)."""
        return cls(dataset=data.name, model=model, num_classes=data.num_classes, in_channels=data.in_channels,
                   image_size=data.image_size, model_options=model_options, train_subset=data.train_subset,
                   subset_seed=data.subset_seed, **fields)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": KIND, "format": FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "checkpoint") -> ClassifierMeta:
        if d.get("kind") != KIND:
            raise ConfigError(f"{where} is not a dualoptim classifier checkpoint (kind={d.get('kind')!r})")
        if d.get("format") != FORMAT:
            raise ConfigError(f"{where} has format {d.get('format')!r}; this dualoptim reads format {FORMAT}")
        fields = {k: v for k, v in d.items() if k not in ("kind", "format")}
        try:  # every field's type is checked: meta.json is untrusted input
            return from_dict(cls, fields)
        except ConfigError as e:
            raise ConfigError(f"{where}: metadata {e}") from None


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over the (sorted) names and bytes of a state dict (identifies an original model)."""
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_classifier(directory: str | os.PathLike[str], model: nn.Module, meta: ClassifierMeta,
                    split: ForgetSplit | None = None) -> Path:
    """Atomically write ``model``'s weights, ``meta`` and (if given) ``split``'s forget indices to ``directory``."""
    if split is not None:
        meta.split = split.describe()
    if not meta.versions:
        meta.versions = versions()
    # record every option, defaults included, so a later change of a default cannot break loading
    meta.model_options = {**get_model_info(meta.model).options, **meta.model_options}
    tensors = {f"model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    if split is not None:
        tensors["split.forget_idx"] = split.forget_idx.to(torch.int64)
    return save_checkpoint(directory, tensors, meta.to_dict())


def load_classifier(directory: str | os.PathLike[str], expect: dict[str, Any] | None = None
                    ) -> tuple[nn.Module, ClassifierMeta, torch.Tensor | None]:
    """Load a classifier checkpoint: ``(model in eval mode, meta, forget indices or None)``.

    Args:
        directory: the checkpoint folder.
        expect: metadata values the caller requires (``model``, ``num_classes``, ``dataset``, ...); any
            difference raises :class:`ConfigError` naming the field and both values.
    """
    tensors, raw = load_checkpoint(directory)
    meta = ClassifierMeta.from_dict(raw, where=str(directory))
    for key, want in (expect or {}).items():
        have = getattr(meta, key, None)
        if have != want:
            raise ConfigError(f"checkpoint {directory} has {key}={have!r}, expected {want!r}")
    model = create_model(meta.model, meta.num_classes, meta.in_channels, meta.image_size, **meta.model_options)
    state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise ConfigError(f"checkpoint {directory}: weights do not match model {meta.model!r} "
                          f"{meta.model_options}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    for k, v in state.items():
        if v.shape != own[k].shape:
            raise ConfigError(f"checkpoint {directory}: weight {k} has shape {tuple(v.shape)} but model "
                              f"{meta.model!r} (num_classes={meta.num_classes}) expects {tuple(own[k].shape)}")
    model.load_state_dict(state)
    model.eval()
    forget_idx = tensors.get("split.forget_idx")
    if forget_idx is not None and meta.split is not None and indices_digest(forget_idx) != meta.split.get("digest"):
        raise ConfigError(f"checkpoint {directory}: stored forget indices do not match their digest")
    return model, meta, forget_idx


def dataset_for(meta: ClassifierMeta, data_dir: str | os.PathLike[str] | None = None) -> ImageData:
    """The exact training/test data ``meta``'s model was trained on (same dataset and training subset)."""
    data = load_dataset(meta.dataset, data_dir, train_subset=meta.train_subset, subset_seed=meta.subset_seed or 0)
    got = {"num_classes": data.num_classes, "in_channels": data.in_channels, "image_size": data.image_size}
    for key, have in got.items():
        if getattr(meta, key) != have:
            raise ConfigError(f"dataset {meta.dataset} has {key}={have} but the checkpoint's model was built "
                              f"for {key}={getattr(meta, key)}")
    return data
