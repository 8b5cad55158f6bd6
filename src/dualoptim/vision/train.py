"""Training of the original model and of Retrain (the same recipe on the retain set).

``train_classifier(model, data, train_idx, cfg, progress=True) -> dict`` trains ``model`` in place on
``data.train_x[train_idx]`` with :class:`TrainConfig` (SGD momentum 0.9, weight decay 5e-4, cosine schedule,
batch 128 by default, the paper's pre-training recipe) and returns ``{"history": [...], "time_s",
"cpu_s", "images_per_s", "steps"}``. Shuffling and augmentation come from a generator seeded with ``cfg.seed``, so
a run is reproducible given the seed of the model's initialisation (seed that with :func:`seed_everything`
before ``create_model``). A NaN/inf loss raises :class:`DivergenceError` naming the epoch and step.
``fit(model, loader, cfg)`` is that training loop over any ``(x, y)`` batches (``dualoptim.unlearn``'s Retrain).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config import from_dict
from ..errors import ConfigError, DivergenceError
from ..optim import cosine_factor
from .data import Augment, ImageData, TensorLoader, get_dataset_info, make_augment
from .models import create_model

SCHEDULES = ("cosine", "constant")


@dataclass
class TrainConfig:
    """The training recipe (saved in every checkpoint).

    Attributes:
        epochs: passes over the training set.
        batch_size: images per SGD step.
        lr: peak learning rate.
        momentum, weight_decay, nesterov: SGD settings (weight decay applies to all parameters, as in the
            reference recipe).
        schedule: ``cosine`` (per step, from ``lr`` to 0) or ``constant``.
        warmup_epochs: linear warm-up length (0 = none), before the cosine decay.
        seed: seed of shuffling and augmentation.
        augment: batched augmentation name (see ``data.make_augment``), ``"default"`` = the dataset's own.
        label_smoothing: cross-entropy label smoothing.
        bf16: bfloat16 autocast (CPU and CUDA); master weights stay float32.
        channels_last: NHWC memory format (10-40% faster for small conv nets on CPU).
    """

    epochs: int = 5
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    seed: int = 0
    augment: str = "default"
    label_smoothing: float = 0.0
    bf16: bool = False
    channels_last: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive number, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.weight_decay < 0:
            raise ConfigError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}; valid: {', '.join(SCHEDULES)}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ConfigError(f"warmup_epochs must be in [0, epochs), got {self.warmup_epochs}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.augment != "default":
            make_augment(self.augment)  # raises for unknown names

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """A recipe from a dict (a checkpoint's, a benchmark's): keys and types checked (``dualoptim.config``)."""
        return from_dict(cls, d, "recipe")


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (call before ``create_model`` for a reproducible initialisation)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the peak learning rate at ``step`` of ``total`` (linear warm-up, then cosine or constant)."""
    if step < warmup:
        return (step + 1) / warmup
    return 1.0 if schedule == "constant" else cosine_factor(max(1, total - warmup))(step - warmup)


def make_sgd(params, cfg: TrainConfig) -> torch.optim.SGD:
    """The recipe's SGD, fused where this torch build supports it."""
    kw = dict(lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
    params = list(params)
    try:
        return torch.optim.SGD(params, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.SGD(params, **kw)


def train_classifier(model: nn.Module, data: ImageData, train_idx: torch.Tensor | None, cfg: TrainConfig,
                     progress: bool = True, desc: str = "train") -> dict[str, Any]:
    """Train ``model`` in place on the training images ``train_idx`` (all when ``None``) with recipe ``cfg``
    (batches: the recipe's augmentation and memory format; see :func:`fit` for what it returns)."""
    x, y = (data.train_x, data.train_y) if train_idx is None else (data.train_x[train_idx], data.train_y[train_idx])
    if len(y) == 0:
        raise ConfigError("cannot train on an empty set of images")
    augment = augment_of(data, cfg.augment)
    loader = TensorLoader(x, y, cfg.batch_size, shuffle=True, seed=cfg.seed, augment=augment,
                          channels_last=cfg.channels_last)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return fit(model, loader, cfg, progress, desc)


def train_new(model_name: str, data: ImageData, train_idx: torch.Tensor | None, cfg: TrainConfig, init_seed: int,
              options: dict[str, Any] | None = None, progress: bool = True, desc: str = "train"
              ) -> tuple[nn.Module, dict[str, Any]]:
    """A fresh ``model_name`` for ``data``'s classes and image shape, initialised after
    :func:`seed_everything` (``init_seed``) and trained by :func:`train_classifier`: ``(model, its result)``."""
    seed_everything(init_seed)
    model = create_model(model_name, data.num_classes, data.in_channels, data.image_size, **(options or {}))
    return model, train_classifier(model, data, train_idx, cfg, progress, desc)


def fit(model: nn.Module, loader: Iterable[tuple[torch.Tensor, torch.Tensor]], cfg: TrainConfig,
        progress: bool = True, desc: str = "train") -> dict[str, Any]:
    """Train ``model`` in place on ``loader``'s ``(x, y)`` batches (moved to the model's device) with the SGD,
    schedule, epochs, label smoothing and bf16 of recipe ``cfg`` (the batches are the caller's: their size,
    order and augmentation).

    Returns:
        ``{"history": [{"epoch", "loss", "acc", "lr", "time_s"}, ...], "time_s", "cpu_s", "images_per_s",
        "steps"}`` where loss/acc are the running training averages of each epoch (with augmentation),
        ``time_s`` is the wall time of the training loop only (no data loading or evaluation) and ``cpu_s``
        the CPU time this process used meanwhile (all threads).
    """
    from tqdm.auto import tqdm

    device = next(model.parameters()).device  # batches follow the model (data stays in host memory)
    opt = make_sgd(model.parameters(), cfg)
    steps_per_epoch = len(loader)  # type: ignore[arg-type]
    total, warmup = cfg.epochs * steps_per_epoch, round(cfg.warmup_epochs * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    history, step, seen = [], 0, 0
    model.train()
    start, cpu_start = time.perf_counter(), time.process_time()
    bar = tqdm(total=total, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    try:
        for epoch in range(cfg.epochs):
            # running sums stay tensors: no host sync per step
            loss_sum, correct, count = torch.zeros((), device=device), torch.zeros((), device=device), 0
            for xb, yb in loader:
                xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
                lr = cfg.lr * lr_factor(step, total, warmup, cfg.schedule)
                for group in opt.param_groups:
                    group["lr"] = lr
                with torch.autocast(xb.device.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                    logits = model(xb)
                    loss = loss_fn(logits.float(), yb)
                if not torch.isfinite(loss):
                    raise DivergenceError(f"{desc}: training loss became {loss.item()} at epoch {epoch + 1}, "
                                          f"step {step + 1} (lr {lr:.3g}); lower the learning rate")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += loss.detach() * len(yb)
                correct += (logits.argmax(1) == yb).sum()
                count += len(yb)
                step += 1
                bar.update(1)
                if step % 20 == 0 or step == total:
                    bar.set_postfix(epoch=epoch + 1, loss=f"{loss_sum.item() / count:.3f}",
                                    acc=f"{100 * correct.item() / count:.1f}")
            seen += count
            history.append({"epoch": epoch + 1, "loss": loss_sum.item() / count, "acc": 100 * correct.item() / count,
                            "lr": lr, "time_s": time.perf_counter() - start})
    finally:
        bar.close()
    elapsed = time.perf_counter() - start
    model.eval()
    # cpu_s (all threads of this process) bounds the wall time on an idle machine when cores are shared
    return {"history": history, "time_s": elapsed, "cpu_s": time.process_time() - cpu_start,
            "images_per_s": seen / elapsed, "steps": step}


def augment_of(data: ImageData, name: str) -> Augment | None:
    """The batched augmentation ``name`` (:func:`~dualoptim.vision.data.make_augment`); ``"default"``: the one
    registered for ``data``'s dataset (none for an unregistered name)."""
    if name == "default":
        try:
            name = get_dataset_info(data.name).augment
        except ConfigError:
            name = "none"
    return make_augment(name)
