"""Unlearning an image classifier: the one function the CLI, the benchmark runner and Python users call.

    from dualoptim.vision.unlearn import UnlearnConfig, unlearn_classifier
    cfg = UnlearnConfig.from_preset("sfron", "adam+sgd", dataset="fashion-mnist", seed=0)
    model, result = unlearn_classifier(model, data, split, cfg)

``unlearn_classifier`` builds the method (``vision.methods``), the phased optimizer (``build_optimizer``:
a single name is the shared baseline, ``forget+retain`` is DualOptim), the forget/retain batch loaders over
the in-memory training tensors, and runs the engine's Algorithm 1 with the method's schedule. It trains the
model in place and returns it with a :class:`RunRecord`. A NaN/inf loss raises
:class:`~dualoptim.errors.DivergenceError` naming the step and phase.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..engine import Callback, Schedule, run_unlearning
from ..errors import ConfigError
from ..optim import OptimSpec, PhasedOptimizer, build_optimizer, state_bytes
from .data import ImageData, TensorLoader, make_augment
from .forget import ForgetSplit
from .methods import check_options, get_method
from .metrics import metrics_callback
from .presets import resolve_preset
from .train import augment_of, seed_everything

AUTOCAST = {None: None, "none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class UnlearnConfig:
    """Everything that determines an unlearning run (saved with its checkpoint and results).

    Attributes:
        method: registered method name (``dualoptim methods``).
        options: method options (e.g. ``{"ratio": 0.5}`` for SalUn).
        optim: optimizer spec: ``"sgd"`` shared baseline, ``"adam+sgd"`` DualOptim, any ``build_optimizer`` spec.
        forget_lr, retain_lr: learning rates of forget and retain steps.
        optim_options: extra optimizer options (``momentum``, ``weight_decay``, ``forget_betas`` ...).
        epochs: epochs of epoch-mode methods (None: the method's default schedule).
        iterations: outer iterations of iteration-mode methods (SFRon; None: the method's default).
        forget_batch_size, retain_batch_size: batch sizes of the two loaders.
        retain_batches_per_epoch: cap on retain steps per epoch (None: a full pass).
        augment: batched augmentation of training batches; ``"default"`` = the dataset's own (none for
            Fashion-MNIST, crop+flip for CIFAR).
        seed: seed of shuffling, augmentation and random labels.
        autocast: ``None``, ``"bf16"`` or ``"fp16"`` autocast of the losses.
        channels_last: NHWC memory format (faster for conv nets on CPU).
        track_grads: record forget/retain gradient norms and their cosine per step (Figures 3-4).
        eval_every: call the callbacks (default: FA/RA/TA/MIA) every this many steps (None: only at the end
            when callbacks are given).
        preset: name of the preset the values came from (provenance only).
    """

    method: str = "sfron"
    options: dict[str, Any] = field(default_factory=dict)
    optim: str = "adam+sgd"
    forget_lr: float = 1e-4
    retain_lr: float = 0.01
    optim_options: dict[str, Any] = field(default_factory=dict)
    epochs: int | None = None
    iterations: int | None = None
    forget_batch_size: int = 128
    retain_batch_size: int = 128
    retain_batches_per_epoch: int | None = None
    augment: str = "default"
    seed: int = 0
    autocast: str | None = None
    channels_last: bool = True
    track_grads: bool = False
    eval_every: int | None = None
    preset: str | None = None

    def __post_init__(self) -> None:
        for name in ("forget_lr", "retain_lr"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
        for name in ("epochs", "iterations", "eval_every", "retain_batches_per_epoch"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"{name} must be None or an integer >= 1, got {value!r}")
        for name in ("forget_batch_size", "retain_batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if self.autocast not in AUTOCAST:
            raise ConfigError(f"autocast must be one of none, bf16, fp16; got {self.autocast!r}")
        if self.augment != "default":
            make_augment(self.augment)  # raises for unknown names
        self.options = check_options(self.method, self.options)  # typed values (the CLI gives strings)
        self.make_method()  # unknown method / option names and bad values fail here, before any work
        try:  # the spec and optimizer options, checked on a dummy parameter
            build_optimizer([torch.zeros(1, requires_grad=True)], self.optim, self.forget_lr, self.retain_lr,
                            **self.optim_options)
        except ValueError as e:
            raise ConfigError(str(e)) from None

    @classmethod
    def from_preset(cls, method: str, optim: str | None = None, *, dataset: str | None = None,
                    preset: str | None = None, **overrides: Any) -> UnlearnConfig:
        """A config from the preset for ``dataset`` (see :mod:`dualoptim.vision.presets`); ``overrides`` win.

        ``options`` in ``overrides`` are merged into the preset's method options.
        """
        fields = resolve_preset(method, optim, dataset=dataset, preset=preset)
        options = {**fields.pop("options"), **overrides.pop("options", {})}
        missing = [k for k in ("forget_lr", "retain_lr") if k not in fields and overrides.get(k) is None]
        if missing:
            raise ConfigError(f"preset {fields['preset']!r} has no {' / '.join(missing)} for optimizer "
                              f"{fields['optim']!r} with method {method!r}: pass it explicitly "
                              f"(--{missing[0].replace('_', '-')})")
        fields.update({k: v for k, v in overrides.items() if v is not None})
        return cls(method=method, options=options, **fields)

    def make_method(self):
        """A fresh instance of the configured method."""
        return get_method(self.method, **self.options)

    def make_schedule(self, method) -> Schedule:
        """The method's default schedule with this config's budget."""
        budget = {k: getattr(self, k) for k in ("epochs", "iterations", "retain_batches_per_epoch")}
        return dataclasses.replace(method.default_schedule(), **{k: v for k, v in budget.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunRecord:
    """What :func:`unlearn_classifier` returns besides the model.

    Attributes:
        config: the :class:`UnlearnConfig` as a dict; schedule: the schedule actually run.
        history: one row per step (step, phase, epoch, loss, lr; grad_norm/cos with ``track_grads``).
        evals: rows returned by the callbacks (FA/RA/TA/MIA ... every ``eval_every`` steps and at the end).
        steps: optimizer steps taken; forget_steps / retain_steps: of each phase.
        seconds: time of the step loop; prepare_seconds: time of the method's preparation (teacher copy,
            saliency / Fisher masks); total_seconds: the whole call including loaders.
        optimizer: ``"dual"`` or ``"shared"``; state_bytes: bytes of optimizer state at the end.
    """

    config: dict[str, Any]
    schedule: dict[str, Any]
    history: list[dict[str, float]]
    evals: list[dict[str, float]]
    steps: int
    forget_steps: int
    retain_steps: int
    seconds: float
    prepare_seconds: float
    total_seconds: float
    optimizer: str
    state_bytes: int

    def summary(self) -> dict[str, Any]:
        """Everything but the per-step rows (for metrics JSON files)."""
        return {k: v for k, v in asdict(self).items() if k not in ("history", "evals")}


def _loader(data: ImageData, idx: torch.Tensor, batch_size: int, seed: int, cfg: UnlearnConfig,
            device: torch.device) -> TensorLoader:
    return TensorLoader(data.train_x[idx].to(device), data.train_y[idx].to(device), batch_size, shuffle=True,
                        seed=seed, augment=augment_of(data, cfg.augment), channels_last=cfg.channels_last)


def unlearn_classifier(model: nn.Module, data: ImageData, split: ForgetSplit, cfg: UnlearnConfig,
                       callbacks: Sequence[Callback] = (), progress: bool = True) -> tuple[nn.Module, RunRecord]:
    """Unlearn ``split.forget_idx`` from ``model`` (trained in place) with ``cfg``.

    Args:
        model: the original classifier (its parameters' device is used for the data).
        data: the dataset the model was trained on (indices of ``split`` refer to ``data.train_*``).
        split: the forget/retain split.
        cfg: method, optimizer, learning rates, budget, seed.
        callbacks: called every ``cfg.eval_every`` steps and at the end (model in eval mode, no grad); with
            none given and ``cfg.eval_every`` set, FA/UA/RA/TA/MIA are recorded.
        progress: show a progress bar.

    Returns:
        ``(model in eval mode, RunRecord)``.

    Raises:
        DivergenceError: a loss became NaN/inf (names the step and phase); the model is then unusable.
    """
    if len(split.forget_idx) + len(split.retain_idx) != data.num_train:
        raise ConfigError(f"the split covers {len(split.forget_idx) + len(split.retain_idx)} samples but the "
                          f"training set has {data.num_train}: it was made for another training set")
    start = time.perf_counter()
    seed_everything(cfg.seed)  # random labels (RL/SalUn) come from torch's global generator
    device = next(model.parameters()).device
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    forget = _loader(data, split.forget_idx, cfg.forget_batch_size, cfg.seed, cfg, device)
    retain = _loader(data, split.retain_idx, cfg.retain_batch_size, cfg.seed + 1, cfg, device)
    method = cfg.make_method()
    schedule = cfg.make_schedule(method)
    optimizer: PhasedOptimizer = build_optimizer(model.parameters(), cfg.optim, cfg.forget_lr, cfg.retain_lr,
                                                 **cfg.optim_options)
    if cfg.eval_every and not callbacks:
        callbacks = (metrics_callback(data, split),)
    res = run_unlearning(model, method, optimizer, forget, retain, schedule, callbacks=callbacks,
                         eval_every=cfg.eval_every, track_grads=cfg.track_grads,
                         autocast_dtype=AUTOCAST[cfg.autocast], progress=progress,
                         desc=f"{cfg.method} {cfg.optim}")
    phases = [row["phase"] for row in res.history]
    result = RunRecord(
        config=cfg.to_dict(), schedule=asdict(schedule), history=res.history, evals=res.evals, steps=res.steps,
        forget_steps=phases.count("forget"), retain_steps=phases.count("retain"), seconds=res.seconds,
        prepare_seconds=res.prepare_seconds, total_seconds=time.perf_counter() - start,
        optimizer=OptimSpec.parse(cfg.optim).mode, state_bytes=state_bytes(optimizer))
    return model, result
