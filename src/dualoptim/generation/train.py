"""Training the conditional DDPM and the FA/FD classifier, each cached by content under ``runs/gen/``.

``get_or_train_ddpm(...)`` returns the checkpoint for a (dataset, image size, model config, training
config) combination, training it only when no checkpoint with that content key exists: the folder
name is ``ddpm-<run_key>`` so changing any setting trains a new model and a rerun reuses the old one.
The saved weights are the exponential moving average (EMA) of the training weights, which gives much
cleaner samples after short training. ``get_or_train_classifier`` does the same for the project's
classifier (``vision.train_classifier``) on the same converted images.
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..cache import get_or_build, key_folder
from ..errors import ConfigError, DivergenceError
from ..io import load_checkpoint, save_checkpoint
from ..store import run_key, versions
from .model import ConditionalDDPM, DDPMConfig, load_generation_data

DEFAULT_ROOT = Path("runs/gen")


@dataclass(frozen=True)
class DDPMTrainConfig:
    """The DDPM training recipe (Adam, linear warm-up then cosine decay, EMA of the weights).

    The papers train with Adam 2e-4, batch 128 for many epochs; on two shared CPU cores the default is
    a short run with a higher learning rate and an EMA, which is the usual small-budget recipe.
    """

    steps: int = 1500
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 100
    ema_decay: float = 0.995
    grad_clip: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.warmup < 0:
            raise ConfigError("steps and batch_size must be >= 1, warmup >= 0")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive number, got {self.lr}")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.grad_clip <= 0:
            raise ConfigError(f"grad_clip must be > 0, got {self.grad_clip}")


def train_ddpm(model: ConditionalDDPM, x: torch.Tensor, y: torch.Tensor, cfg: DDPMTrainConfig,
               progress: bool = True) -> dict[str, Any]:
    """Train ``model`` in place on images ``x`` (in [-1, 1]) with labels ``y``; the EMA weights are kept.

    Returns ``{"history": [{"step", "loss"} every 50 steps], "time_s", "images_per_s", "steps"}``.
    """
    from tqdm.auto import tqdm

    if len(x) != len(y) or len(y) == 0:
        raise ConfigError(f"need as many labels as images (got {len(x)} images, {len(y)} labels), at least one")
    g = torch.Generator().manual_seed(cfg.seed)  # on the CPU: the same draws on every device
    device = next(model.parameters()).device  # batches follow the model (data stays in host memory)
    model.train()
    model.net.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model.net).eval().requires_grad_(False)
    opt = torch.optim.Adam(model.net.parameters(), lr=cfg.lr)
    history, running = [], torch.zeros((), device=device)
    start = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc="train ddpm", disable=not progress, leave=False, dynamic_ncols=True)
    for step in bar:
        lr = cfg.lr * (min(1.0, (step + 1) / cfg.warmup) if step < cfg.warmup
                       else 0.5 * (1 + math.cos(math.pi * (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))))
        for group in opt.param_groups:
            group["lr"] = lr
        idx = torch.randint(0, len(y), (cfg.batch_size,), generator=g)
        xb = x[idx].to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        loss = model.loss(xb, y[idx].to(device, non_blocking=True), generator=g, cond_drop=model.config.cond_drop)
        if not torch.isfinite(loss):
            raise DivergenceError(f"DDPM training loss became {loss.item()} at step {step}; lower --lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.net.parameters(), cfg.grad_clip)
        opt.step()
        with torch.no_grad():  # the EMA warms up (decay grows with the step) so early weights fade fast
            decay = min(cfg.ema_decay, (1 + step) / (10 + step))
            for pe, p in zip(ema.parameters(), model.net.parameters()):
                pe.lerp_(p, 1 - decay)
        running += loss.detach()
        if (step + 1) % 50 == 0 or step + 1 == cfg.steps:
            n = (step % 50) + 1
            history.append({"step": step + 1, "loss": running.item() / n})
            bar.set_postfix(loss=f"{history[-1]['loss']:.4f}")
            running.zero_()
    bar.close()
    elapsed = time.perf_counter() - start
    model.net.load_state_dict(ema.state_dict())
    model.eval()
    return {"history": history, "time_s": elapsed, "images_per_s": cfg.steps * cfg.batch_size / elapsed,
            "steps": cfg.steps}


def ddpm_key(dataset: str, model_cfg: DDPMConfig, train_cfg: DDPMTrainConfig, train_subset: int | None) -> str:
    """The content key of a DDPM checkpoint (everything that determines its weights)."""
    return run_key(kind="ddpm", dataset=dataset, model=model_cfg.key_dict(), train=asdict(train_cfg),
                   train_subset=train_subset)


def save_ddpm(directory: str | os.PathLike, model: ConditionalDDPM, meta: dict[str, Any]) -> Path:
    """Write a DDPM checkpoint (safetensors weights + JSON meta with the model config)."""
    return save_checkpoint(directory, model.state_tensors(),
                           {**meta, "kind": "ddpm", "model_config": model.config.to_dict(), "versions": versions()})


def load_ddpm(directory: str | os.PathLike) -> tuple[ConditionalDDPM, dict[str, Any]]:
    """Load a checkpoint written by :func:`save_ddpm` (no code execution: safetensors + JSON)."""
    tensors, meta = load_checkpoint(directory)
    if meta.get("kind") != "ddpm":
        raise ConfigError(f"{directory} is not a DDPM checkpoint (kind={meta.get('kind')!r})")
    model = ConditionalDDPM(DDPMConfig.from_dict(meta["model_config"]))
    missing, unexpected = model.net.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise ConfigError(f"{directory}: weights do not match the model config "
                          f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    return model.eval(), meta


def get_or_train_ddpm(dataset: str = "fashion-mnist", model_cfg: DDPMConfig | None = None,
                      train_cfg: DDPMTrainConfig | None = None, *, root: str | os.PathLike = DEFAULT_ROOT,
                      data_dir: str | os.PathLike | None = None, train_subset: int | None = None,
                      data=None, progress: bool = True) -> tuple[ConditionalDDPM, dict[str, Any], Path]:
    """The cached DDPM for these settings, trained (and saved) first if it is not there yet.

    Returns ``(model, meta, checkpoint_dir)``; ``meta["cached"]`` says whether it was loaded.
    """
    model_cfg = model_cfg or DDPMConfig()
    train_cfg = train_cfg or DDPMTrainConfig()

    def build(folder: Path) -> tuple[ConditionalDDPM, dict[str, Any]]:
        nonlocal data
        if data is None:
            data = load_generation_data(dataset, model_cfg.image_size, data_dir, train_subset)
        if data.num_classes != model_cfg.num_classes or data.in_channels != model_cfg.in_channels:
            raise ConfigError(f"{dataset} has {data.num_classes} classes and {data.in_channels} channels; the model "
                              f"config says {model_cfg.num_classes} and {model_cfg.in_channels}")
        torch.manual_seed(train_cfg.seed)
        model = ConditionalDDPM(model_cfg)
        info = train_ddpm(model, data.train_x, data.train_y, train_cfg, progress=progress)
        meta = {"dataset": dataset, "train_subset": train_subset, "train_config": asdict(train_cfg),
                "time_s": info["time_s"], "images_per_s": info["images_per_s"], "history": info["history"],
                "threads": torch.get_num_threads()}
        save_ddpm(folder, model, meta)
        return model, meta

    got = get_or_build(Path(root) / f"ddpm-{ddpm_key(dataset, model_cfg, train_cfg, train_subset)}", load_ddpm, build)
    model, meta = got.value
    return model, {**meta, "cached": got.hit}, got.folder


# ------------------------------------------------------------------------------ the classifier

CLASSIFIER_MODEL = "cnn"
CLASSIFIER_EPOCHS = 4


def get_or_train_classifier(data, *, model_name: str = CLASSIFIER_MODEL, epochs: int = CLASSIFIER_EPOCHS,
                            seed: int = 0, root: str | os.PathLike = DEFAULT_ROOT, progress: bool = True
                            ) -> tuple[nn.Module, dict[str, Any]]:
    """The project's classifier (``vision`` registry + ``train_classifier``) on the converted images, cached.

    ``data`` is the output of :func:`load_generation_data`; FA and FD-classifier use this model.
    """
    from ..vision.data import stratified_subset
    from ..vision.models import create_model
    from ..vision.train import TrainConfig, train_new

    cfg = TrainConfig(epochs=epochs, seed=seed, augment="none")
    folder = key_folder(root, "classifier", kind="gen-classifier", dataset=data.name, image_size=data.image_size,
                        model=model_name, recipe=cfg.to_dict(), n_train=len(data.train_y),
                        train_subset=data.train_subset)
    shape = dict(num_classes=data.num_classes, in_channels=data.in_channels, image_size=data.image_size)

    def load(folder: Path) -> tuple[nn.Module, dict[str, Any]]:
        tensors, meta = load_checkpoint(folder)
        model = create_model(meta["model"], **shape)
        model.load_state_dict(tensors)
        return model.eval(), meta

    def build(folder: Path) -> tuple[nn.Module, dict[str, Any]]:
        model, info = train_new(model_name, data, None, cfg, seed, progress=progress, desc="train classifier")
        model.eval()
        test = stratified_subset(data.test_y, min(len(data.test_y), 5000), 0)
        with torch.no_grad():
            logits = model(data.test_x[test].to(next(model.parameters()).device)).cpu()
            acc = (logits.argmax(1) == data.test_y[test]).float().mean().item() * 100
        meta = {"kind": "gen-classifier", "model": model_name, "dataset": data.name, "image_size": data.image_size,
                "recipe": cfg.to_dict(), "test_acc": acc, "time_s": info["time_s"], "versions": versions()}
        save_checkpoint(folder, dict(model.state_dict()), meta)
        return model, meta

    return get_or_build(folder, load, build).value
