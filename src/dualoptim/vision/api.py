"""``dualoptim.unlearn``: unlearn any torch classifier on the user's own data, with an audit.

    import dualoptim
    out = dualoptim.unlearn(model, forget=forget_set, retain=retain_set, test=test_set,
                            method="salun", optim="adam+sgd", retrain=True)
    out.model                      # the unlearned model (the same object, changed in place, eval mode)
    out.audit.write_html("audit.html")

Inputs (``forget``, ``retain``, ``test``) may each be a map-style ``torch.utils.data.Dataset`` yielding
``(x, y)``, a ``DataLoader`` yielding ``(x, y)`` batches (its own batch size and shuffling are kept), or an
``(x, y)`` pair of tensors. Batches follow the model: they are moved to the device of its parameters and
floating-point inputs are cast to their dtype. ``model(x)`` must return logits of shape ``(N, classes)``;
dicts and Hugging Face outputs with a ``logits`` entry are accepted, anything else needs ``output_key``.

Everything reuses the library's pieces: the method registry (``vision.methods``), ``build_optimizer``,
the Algorithm-1 engine (``run_unlearning``) and the metric functions of ``vision.metrics``.
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from ..engine import Callback, Event, Schedule, UnlearnResult, run_unlearning
from ..errors import ConfigError, DivergenceError
from ..optim import OptimSpec, build_optimizer
from .audit import Audit, compute_metrics, degenerate_warnings
from .calibrate import (
    MAX_EPOCHS,
    MONITOR_SAMPLES,
    RETAIN_PASSES,
    Monitor,
    final_verdict,
    forget_kind,
    ladder,
    probe_forget_lr,
    subsample,
)
from .methods import get_method, get_method_info
from .presets import resolve_preset
from .train import TrainConfig, lr_factor, make_sgd

# Method-agnostic DualOptim defaults (docs/defaults.md). Forget optimizer: the paper's Adam lr (1e-4, its
# range is 1e-4..1.5e-4) was used with ~350 forget steps (ResNet-18, CIFAR-10 10%: 35 batches x 10 epochs,
# SFRon 1500 / 5 = 300). Adam moves each weight by about lr per step, so on a smaller forget set (fewer steps)
# the default keeps the paper's total travel: lr = 1e-4 * 350 / forget_steps, between 1x and 10x of 1e-4.
DEFAULT_FORGET_LR = {"adam": 1e-4, "adamw": 1e-4, "adam-bf16": 1e-4, "adamw-bf16": 1e-4, "sgd": 0.01,
                     "sgd-bf16": 0.01}
PAPER_FORGET_STEPS = 350
MAX_FORGET_LR_SCALE = 10.0
DEFAULT_RETAIN_LR = {"sgd": 0.01, "sgd-bf16": 0.01, "adam": 1e-4, "adamw": 1e-4, "adam-bf16": 1e-4,
                     "adamw-bf16": 1e-4}


# ------------------------------------------------------------------------------------------- outputs

def extract_logits(out: Any, output_key: str | int | None = None) -> torch.Tensor:
    """The logits tensor in a model's output (see :func:`unlearn`'s ``output_key``)."""
    if output_key is not None:
        try:
            if isinstance(out, Mapping) or isinstance(output_key, int):
                out = out[output_key]
            else:
                out = getattr(out, output_key)
        except (KeyError, IndexError, AttributeError, TypeError):
            raise ConfigError(f"output_key={output_key!r} not found in the model's output of type "
                              f"{type(out).__name__}") from None
    elif not isinstance(out, torch.Tensor):
        logits = getattr(out, "logits", None)  # Hugging Face ModelOutput
        if logits is None and isinstance(out, Mapping):
            logits = out.get("logits")
        if not isinstance(logits, torch.Tensor):
            raise ConfigError(
                f"the model returned a {type(out).__name__}; dualoptim.unlearn expects model(x) to return a logits "
                "tensor of shape (N, num_classes) (a dict or Hugging Face output with a 'logits' entry also works). "
                "Pass output_key='name' (dict key or attribute) or output_key=0 (tuple position) to pick the logits")
        out = logits
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"the model's output is {shape}; dualoptim.unlearn expects logits of shape "
                          "(N, num_classes), one row of class scores per input")
    return out


class LogitsModel(nn.Module):
    """Wraps a model so that ``forward`` returns its logits tensor (methods call ``model(x)``)."""

    def __init__(self, model: nn.Module, output_key: str | int | None = None) -> None:
        super().__init__()
        self.model = model
        self.output_key = output_key

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return extract_logits(self.model(x), self.output_key)


# ---------------------------------------------------------------------------------------------- data

Data = Dataset | DataLoader | tuple[torch.Tensor, torch.Tensor] | Sequence[torch.Tensor]


def _xy(batch: Any, name: str) -> tuple[Any, Any]:
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise ConfigError(f"{name}: batches must be (inputs, labels) pairs, got {type(batch).__name__}; wrap the "
                      "dataset so that dataset[i] returns (x, y)")


class Batches:
    """Re-iterable ``(x, y)`` batches of one user input, moved to the model's device and dtype.

    Tensor pairs are batched by indexing (no per-sample Python); datasets go through a ``DataLoader``;
    a user ``DataLoader`` is used as given.
    """

    def __init__(self, data: Any, name: str, batch_size: int, shuffle: bool, seed: int, device: torch.device,
                 dtype: torch.dtype) -> None:
        self.name, self.device, self.dtype = name, device, dtype
        self.tensors: tuple[torch.Tensor, torch.Tensor] | None = None
        self.loader: DataLoader | None = None
        self.generator = torch.Generator().manual_seed(seed)
        self.batch_size, self.shuffle = batch_size, shuffle
        if isinstance(data, DataLoader):
            self.loader = data
            n = len(data.dataset) if hasattr(data.dataset, "__len__") else len(data)  # type: ignore[arg-type]
        elif isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
            x, y = data
            if len(x) != len(y):
                raise ConfigError(f"{name}: {len(x)} inputs but {len(y)} labels")
            self.tensors = (self._x(x), y.to(device=device, dtype=torch.long))
            n = len(y)
        elif isinstance(data, Dataset):
            if not hasattr(data, "__len__"):
                raise ConfigError(f"{name}: an iterable-style dataset has no length; pass a DataLoader instead")
            n = len(data)  # type: ignore[arg-type]
            if n:
                self.loader = DataLoader(data, batch_size=batch_size, shuffle=shuffle, generator=self.generator)
        else:
            raise ConfigError(f"{name} must be a torch Dataset, a DataLoader or an (x, y) pair of tensors, got "
                              f"{type(data).__name__}")
        if n == 0:
            raise ConfigError(f"the {name} set is empty")
        self.num_samples = n

    def _x(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True)
        return x.to(self.dtype) if x.is_floating_point() else x

    def __len__(self) -> int:
        if self.tensors is not None:
            return -(-self.num_samples // self.batch_size)
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.tensors is not None:
            x, y = self.tensors
            order = torch.randperm(len(y), generator=self.generator).to(self.device) if self.shuffle else None
            for lo in range(0, len(y), self.batch_size):
                if order is None:
                    yield x[lo:lo + self.batch_size], y[lo:lo + self.batch_size]
                else:
                    idx = order[lo:lo + self.batch_size]
                    yield x[idx], y[idx]
            return
        for batch in self.loader:  # type: ignore[union-attr]
            x, y = _xy(batch, self.name)
            yield self._x(torch.as_tensor(x)), torch.as_tensor(y).to(self.device, dtype=torch.long)

    def evaluation(self) -> Batches:
        """The same data in order (tensor pairs, datasets) for metrics."""
        if self.tensors is None and isinstance(self.loader, DataLoader) and self.loader.generator is self.generator:
            ev = copy.copy(self)
            ev.loader = DataLoader(self.loader.dataset, batch_size=self.batch_size, shuffle=False)
            return ev
        if self.tensors is not None and self.shuffle:
            ev = copy.copy(self)
            ev.shuffle = False
            return ev
        return self


def _identity(data: Any) -> tuple[Any, torch.Tensor] | None:
    """``(base dataset, indices into it)`` when identifiable (Subset chains, datasets, data loaders)."""
    if isinstance(data, DataLoader):
        data = data.dataset
    if isinstance(data, Subset):
        inner = _identity(data.dataset)
        if inner is None:
            return None
        base, idx = inner
        return base, idx[torch.as_tensor(list(data.indices), dtype=torch.long)]
    if isinstance(data, Dataset) and hasattr(data, "__len__"):
        return data, torch.arange(len(data))  # type: ignore[arg-type]
    return None


def check_disjoint(forget: Any, retain: Any) -> None:
    """Raise :class:`ConfigError` when ``forget`` and ``retain`` share samples: by index for Subsets/DataLoaders of
    one base dataset, by content (a hash per sample) for tensor pairs and separate TensorDatasets."""
    if forget is retain:
        raise ConfigError("forget and retain are the same object: the retain set must exclude the forget samples")
    if isinstance(forget, (tuple, list)) and isinstance(retain, (tuple, list)) and forget and retain:
        if isinstance(forget[0], torch.Tensor) and forget[0] is retain[0]:
            raise ConfigError("forget and retain use the same input tensor: the retain set must exclude the forget "
                              "samples")
    f, r = _identity(forget), _identity(retain)
    if f is None or r is None or f[0] is not r[0]:
        _check_content_overlap(forget, retain)
        return
    common = torch.from_numpy(__import__("numpy").intersect1d(f[1].numpy(), r[1].numpy()))
    if len(common):
        raise ConfigError(f"forget and retain overlap: {len(common)} samples of the same dataset are in both (e.g. "
                          f"indices {common[:5].tolist()}); the retain set must be the training set minus the forget "
                          "set")


def _inputs(data: Any) -> torch.Tensor | None:
    """The input tensor of a tensor pair or a TensorDataset (else None: content is not checked)."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return data[0]
    if isinstance(data, TensorDataset) and data.tensors:
        return data.tensors[0]
    return None


def sample_hashes(x: torch.Tensor) -> list[bytes]:
    """One 16-byte BLAKE2b digest per sample of ``x`` (its raw bytes; dtype and shape included)."""
    if not len(x):
        return []
    flat = x.detach().cpu().contiguous().reshape(len(x), -1)
    head = f"{flat.dtype}{tuple(x.shape[1:])}".encode()
    rows = flat.view(torch.uint8).numpy() if flat.numel() else flat.numpy()
    return [hashlib.blake2b(head + row.tobytes(), digest_size=16).digest() for row in rows]


def _check_content_overlap(forget: Any, retain: Any) -> None:
    """Tensor pairs / TensorDatasets: refuse forget samples whose exact input also occurs in the retain set.

    Cost: one pass over both inputs' bytes and one hash per sample (~1 s per 100k 28x28 images on one CPU core).
    """
    xf, xr = _inputs(forget), _inputs(retain)
    if xf is None or xr is None or xf.shape[1:] != xr.shape[1:] or xf.dtype != xr.dtype:
        return
    retain_set = set(sample_hashes(xr))
    dup = [i for i, h in enumerate(sample_hashes(xf)) if h in retain_set]
    if dup:
        raise ConfigError(f"forget and retain overlap by content: {len(dup)} forget sample(s) (e.g. positions "
                          f"{dup[:5]}) have an identical input in the retain set; remove them from the retain set "
                          "(a copy left there keeps teaching the model what should be forgotten)")


# -------------------------------------------------------------------------------------- defaults

def default_lrs(method: str, optim: str, forget_steps: int | None = None) -> tuple[float, float]:
    """Untuned default (forget_lr, retain_lr) for ``method`` with optimizer spec ``optim`` (docs/defaults.md).

    With an Adam-family forget optimizer and ``forget_steps`` (the number of forget steps the run will take)
    the forget lr is scaled by ``PAPER_FORGET_STEPS / forget_steps``, clipped to [1, 10].
    """
    spec = OptimSpec.parse(optim)
    if spec.shared_state:  # the shared baseline: the paper's per-method learning rates (presets.cifar10-paper)
        fields = resolve_preset(get_method_info(method).name, optim, preset="cifar10-paper")
        if "forget_lr" not in fields or "retain_lr" not in fields:
            raise ConfigError(f"no default learning rates for {method} with the shared optimizer {optim!r}; pass "
                              "forget_lr= and retain_lr=")
        return fields["forget_lr"], fields["retain_lr"]
    f, r = spec.names
    if f not in DEFAULT_FORGET_LR or r not in DEFAULT_RETAIN_LR:
        raise ConfigError(f"no default learning rates for {optim!r} (defaults exist for forget optimizers "
                          f"{sorted(DEFAULT_FORGET_LR)} and retain optimizers {sorted(DEFAULT_RETAIN_LR)}); pass "
                          "forget_lr= and retain_lr=")
    scale = 1.0
    if f.startswith("adam") and forget_steps:
        scale = min(max(PAPER_FORGET_STEPS / forget_steps, 1.0), MAX_FORGET_LR_SCALE)
    return DEFAULT_FORGET_LR[f] * scale, DEFAULT_RETAIN_LR[r]


def forget_steps(schedule: Schedule, forget_batches: int) -> int:
    """How many forget steps ``schedule`` takes with ``forget_batches`` batches per forget pass."""
    if schedule.mode == "iteration":
        return len(range(0, schedule.iterations, schedule.forget_every)) * schedule.forget_steps
    if schedule.mode == "joint":
        return schedule.epochs * forget_batches
    passes = schedule.epochs if schedule.forget_epochs is None else min(schedule.forget_epochs, schedule.epochs)
    return passes * forget_batches


# --------------------------------------------------------------------------------------- retrain

def _fresh_copy(model: nn.Module, seed: int) -> nn.Module:
    """A re-initialised deep copy (every parameter's module must define ``reset_parameters``)."""
    fresh = copy.deepcopy(model)
    owners = [(name, m) for name, m in fresh.named_modules() if any(True for _ in m.parameters(recurse=False))]
    missing = [name or type(m).__name__ for name, m in owners if not hasattr(m, "reset_parameters")]
    if missing:
        raise ConfigError(f"retrain=True cannot re-initialise module(s) {missing[:5]} (no reset_parameters()); pass "
                          "retrain=<a function returning a fresh, untrained model> or a Retrain model you trained")
    torch.manual_seed(seed)
    for _, m in owners:
        m.reset_parameters()  # type: ignore[operator]
    for m in fresh.modules():  # BatchNorm running statistics
        if hasattr(m, "reset_running_stats"):
            m.reset_running_stats()
    return fresh


def train_retrain(model: nn.Module, batches: Batches, recipe: TrainConfig, output_key: str | int | None = None,
                  progress: bool = True) -> dict[str, float]:
    """Train ``model`` in place on ``batches`` (the retain set) with SGD + ``recipe`` (lr schedule, wd, epochs)."""
    from tqdm.auto import tqdm

    net = LogitsModel(model, output_key)
    opt = make_sgd(net.parameters(), recipe)
    total = recipe.epochs * len(batches)
    warmup = round(recipe.warmup_epochs * len(batches))
    step, start = 0, time.perf_counter()
    net.train()
    device_type = next(net.parameters()).device.type
    with tqdm(total=total, desc="retrain", disable=not progress, leave=False, dynamic_ncols=True) as bar:
        for epoch in range(recipe.epochs):
            for x, y in batches:
                for g in opt.param_groups:
                    g["lr"] = recipe.lr * lr_factor(step, total, warmup, recipe.schedule)
                with torch.autocast(device_type, dtype=torch.bfloat16, enabled=recipe.bf16):
                    loss = F.cross_entropy(net(x).float(), y, label_smoothing=recipe.label_smoothing)
                if not torch.isfinite(loss):
                    raise DivergenceError(f"retrain: loss became {loss.item()} at epoch {epoch + 1}, step {step + 1}; "
                                          "lower retrain_recipe.lr")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                bar.update(1)
    net.eval()
    return {"retrain_s": time.perf_counter() - start, "retrain_steps": step}


# ------------------------------------------------------------------------------------------ unlearn

@dataclass
class UnlearnOutcome:
    """What :func:`unlearn` returns.

    Attributes:
        model: the unlearned model (the one passed in, changed in place, in eval mode).
        audit: metrics of the original / unlearned / Retrain models, Gap to Retrain, timings, settings.
        result: the engine's per-step history and callback rows.
        retrain_model: the Retrain reference (trained or given), or None.
    """

    model: nn.Module
    audit: Audit
    result: UnlearnResult
    retrain_model: nn.Module | None = None


@dataclass
class _Sets:
    forget: Batches
    retain: Batches
    test: Batches | None


def _probs(net: nn.Module, batches: Batches) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax outputs (float32, CPU) and labels of ``net`` on ``batches``, eval mode, no grad."""
    was = net.training
    net.eval()
    probs, labels = [], []
    with torch.no_grad():
        for x, y in batches.evaluation():
            probs.append(torch.softmax(net(x).float(), dim=1).cpu())
            labels.append(y.cpu())
    net.train(was)
    return torch.cat(probs), torch.cat(labels)


Outputs = tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor],
                tuple[torch.Tensor, torch.Tensor] | None]


def _outputs(net: nn.Module, sets: _Sets) -> Outputs:
    """Softmax outputs and labels on the forget, retain and (if any) test set."""
    return _probs(net, sets.forget), _probs(net, sets.retain), (_probs(net, sets.test) if sets.test else None)


def _metrics(net: nn.Module, sets: _Sets, seed: int, outputs: Outputs | None = None) -> dict[str, float | None]:
    (pf, yf), (pr, yr), t = outputs or _outputs(net, sets)
    pt, yt = t if t is not None else (None, None)
    return compute_metrics(pf, yf, pr, yr, pt, yt, seed=seed)


def calibrated_schedule(schedule: Schedule, forget_batches: int, retain_batches: int) -> Schedule:
    """The method's schedule with its forget:retain balance (docs/defaults.md, rule v2): at most ``MAX_EPOCHS``
    epochs, or ``RETAIN_PASSES`` passes over the retain set of iterations (SFRon's 1500 overfit small sets)."""
    if schedule.mode == "iteration":
        cap = max(schedule.forget_every, RETAIN_PASSES * retain_batches)
        return Schedule(**{**schedule.__dict__, "iterations": min(schedule.iterations, cap)})
    return Schedule(**{**schedule.__dict__, "epochs": min(schedule.epochs, MAX_EPOCHS)})


def _curve_callback(net: nn.Module, sets: _Sets, samples: int, seed: int) -> Callback:
    """Process-curve metrics (FA, RA, TA, MIA) on the first ``samples`` samples of each set."""
    def head(b: Batches | None) -> tuple[torch.Tensor, torch.Tensor] | None:
        if b is None:
            return None
        xs, ys, n = [], [], 0
        for x, y in b.evaluation():
            xs.append(x)
            ys.append(y)
            n += len(y)
            if n >= samples:
                break
        return torch.cat(xs)[:samples], torch.cat(ys)[:samples]

    parts = {"forget": head(sets.forget), "retain": head(sets.retain), "test": head(sets.test)}

    def callback(event: Event) -> dict[str, float]:
        out = {}
        for k, v in parts.items():
            out[k] = None if v is None else (torch.softmax(net(v[0]).float(), 1).cpu(), v[1].cpu())
        m = compute_metrics(*out["forget"], *out["retain"], *(out["test"] or (None, None)), seed=seed, svc=False)
        return {k: v for k, v in m.items() if k in ("FA", "RA", "TA", "MIA") and v is not None}

    return callback


def unlearn(model: nn.Module, *, forget: Data, retain: Data, test: Data | None = None, method: str = "salun",
            optim: str | None = None, forget_lr: float | None = None, retain_lr: float | None = None,
            calibrate: str = "auto", epochs: int | None = None, iterations: int | None = None,
            batch_size: int = 128, method_options: Mapping[str, Any] | None = None,
            optim_options: Mapping[str, Any] | None = None, output_key: str | int | None = None,
            retrain: bool | nn.Module | Callable[[], nn.Module] = False,
            retrain_recipe: TrainConfig | Mapping[str, Any] | None = None, seed: int = 0,
            callbacks: Sequence[Callback] = (), eval_every: int | None = None, curve_samples: int = 1000,
            track_grads: bool = False, progress: bool = True) -> UnlearnOutcome:
    """Remove the influence of ``forget`` from ``model`` (trained on ``forget`` + ``retain``) and audit it.

    With nothing but the data and the method, the run is calibrated without a Retrain (docs/defaults.md):
    held-out data (``test``) define what "never seen" looks like, a short probe on a slice picks the forget
    lr, and unlearning stops once the forget set scores like held-out data (sample-wise) or its classes are
    no longer predicted (class-wise), or when held-out accuracy of what must be kept drops. The audit's
    ``verdict`` says whether that happened ("forgotten: ..." / "NOT forgotten: ..." / "utility lost: ...").

    Args:
        model: a trained classifier; ``model(x)`` returns logits ``(N, num_classes)``. Changed in place (also
            when an error stops the run part-way): pass ``copy.deepcopy(model)`` to keep the original.
        forget, retain, test: a map-style Dataset of ``(x, y)``, a DataLoader of ``(x, y)`` batches, or an
            ``(x, y)`` tensor pair. ``retain`` must not contain the forget samples (checked by index for Subsets
            of one dataset, by content for tensor pairs and TensorDatasets: one hash per sample). ``test``
            (held-out data the original never trained on, e.g. a validation set) is optional but needed for
            the sample-wise target, TA and both membership-inference attacks.
        method: a registered method (``ft``, ``ga``, ``rl``, ``salun``, ``scrub``, ``sfron``).
        optim: ``"adam+sgd"``-style DualOptim spec or a single name (shared-optimizer baseline), see
            ``build_optimizer``; default: the method's DualOptim spec (``adam+sgd``; ``adam+adam`` for SCRUB).
        forget_lr, retain_lr: step sizes. A given ``forget_lr`` switches calibration off (and the capped
            budget and early stop with it); a missing ``retain_lr`` is the default (:func:`default_lrs`).
        calibrate: ``"auto"`` (calibrate unless ``forget_lr`` is given) or ``"off"`` (untuned fixed defaults).
        epochs / iterations: override the method's schedule length (epoch-style / iteration-style methods).
        batch_size: batch size for Datasets and tensor pairs (DataLoaders keep their own).
        method_options: method options, e.g. ``{"ratio": 0.5}`` for SalUn (SFRon defaults to alpha = 1).
        optim_options: ``build_optimizer`` options, e.g. ``{"retain_weight_decay": 0}``.
        output_key: how to find logits in a non-tensor output: a dict key / attribute name or a tuple index.
        retrain: ``False``; a trained Retrain ``nn.Module`` to compare with; a function returning a fresh
            untrained model; or ``True`` to train a re-initialised copy of ``model`` on ``retain`` with
            ``retrain_recipe`` (use your original training recipe: a :class:`TrainConfig` or its fields).
            Only the audit's Gap reads it; calibration never does.
        seed: seeds shuffling, random labels, the calibration subsamples and the SVC attack's sampling.
        callbacks: engine callbacks ``f(event) -> dict | None`` every ``eval_every`` steps and at the end.
        eval_every: also record FA/RA/TA/MIA every that many steps on ``curve_samples`` samples per set
            (the audit's process plot).
        track_grads: record gradient norms and forget/retain cosine per step in ``result.history``.
        progress: show progress bars.

    Raises:
        ConfigError: unusable inputs (empty or overlapping sets, a model output that is not logits, a model
            whose parameters are all frozen, ...).
        DivergenceError: a loss became NaN/inf.
    """
    total_start = time.perf_counter()
    params = list(model.parameters())
    if not params:
        raise ConfigError("the model has no parameters to unlearn")
    if not any(p.requires_grad for p in params):
        raise ConfigError("every parameter of the model is frozen (requires_grad=False), so unlearning cannot change "
                          "it: unfreeze what may change, e.g. model.requires_grad_(True) or the last layers only")
    device, dtype = params[0].device, params[0].dtype
    if not dtype.is_floating_point:
        raise ConfigError(f"the model's parameters are {dtype}; unlearning needs floating-point parameters")
    if calibrate not in ("auto", "off"):
        raise ConfigError(f"calibrate must be 'auto' or 'off', got {calibrate!r}")
    info = get_method_info(method)
    options = dict(method_options or {})
    if info.name == "sfron":
        options.setdefault("alpha", 1.0)  # the paper's method-agnostic DualOptim setting
    m = get_method(info.name, **options)
    optim = optim or info.dual_optim
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if eval_every is not None and eval_every < 1:
        raise ConfigError(f"eval_every must be >= 1, got {eval_every}")
    check_disjoint(forget, retain)
    sets = _Sets(Batches(forget, "forget", batch_size, True, seed, device, dtype),
                 Batches(retain, "retain", batch_size, True, seed + 1, device, dtype),
                 None if test is None else Batches(test, "test", batch_size, False, seed, device, dtype))
    net = LogitsModel(model, output_key)
    _probe(net, sets)

    schedule: Schedule = m.default_schedule()  # type: ignore[attr-defined]
    calibrating = calibrate == "auto" and forget_lr is None
    if calibrating and epochs is None and iterations is None:
        schedule = calibrated_schedule(schedule, len(sets.forget), len(sets.retain))
    if epochs is not None:
        schedule = Schedule(**{**schedule.__dict__, "epochs": epochs})
    if iterations is not None:
        schedule = Schedule(**{**schedule.__dict__, "iterations": iterations})
    lr_source = "given" if forget_lr is not None and retain_lr is not None else "default (docs/defaults.md)"
    n_forget_steps = forget_steps(schedule, len(sets.forget)) if m.uses_forget else 0
    if forget_lr is None or retain_lr is None:
        try:
            d_forget, d_retain = default_lrs(info.name, optim, n_forget_steps)
        except ConfigError:
            spec = OptimSpec.parse(optim)
            if not (calibrating and spec.forget in DEFAULT_FORGET_LR and spec.retain in DEFAULT_RETAIN_LR):
                raise
            # calibration probes the forget lr; the retain lr is the optimizer family's default
            d_forget, d_retain = DEFAULT_FORGET_LR[spec.forget], DEFAULT_RETAIN_LR[spec.retain]
        forget_lr = d_forget if forget_lr is None else forget_lr
        retain_lr = d_retain if retain_lr is None else retain_lr
    recipe = None
    if retrain is True:
        recipe = retrain_recipe if isinstance(retrain_recipe, TrainConfig) else TrainConfig(**(retrain_recipe or {}))

    t0 = time.perf_counter()
    original_out = _outputs(net, sets)
    original_metrics = _metrics(net, sets, seed, original_out)
    kind, classes = forget_kind(original_out[0][1], original_out[1][1])
    eval_s = time.perf_counter() - t0

    unlearn_start, unlearn_cpu = time.perf_counter(), time.process_time()
    monitor, calibration = None, {"mode": "off", "kind": kind, "classes": classes}
    if calibrate == "off":
        calibration["reason"] = "calibrate='off'"
    elif not calibrating:
        calibration["reason"] = "forget_lr given"
    if calibrating and m.uses_forget:
        monitor = _make_monitor(net, sets, kind, classes, seed)
        candidates = ladder(OptimSpec.parse(optim).forget)
        if monitor.measure()["status"] in ("target met", "overshot"):  # nothing to do: the run stops at step 0
            forget_lr, probe_rows = candidates[0], []
        else:
            make_opt = lambda mod, lr: build_optimizer(mod.parameters(), optim, lr, retain_lr,  # noqa: E731
                                                       **dict(optim_options or {}))
            forget_lr, probe_rows = probe_forget_lr(
                net, lambda: get_method(info.name, **options), make_opt, next(iter(sets.forget)),
                next(iter(sets.retain)), monitor, candidates, seed)
        lr_source = "calibrated (probe, docs/defaults.md)"
        monitor.every = max(2, sum(_plan_steps(m, schedule, len(sets.forget), len(sets.retain))) // 10)
        monitor.max_scale = candidates[-1] / forget_lr
        calibration.update(mode="auto", reason="no forget_lr given", forget_lr=forget_lr, probe=probe_rows,
                           heldout="test" if sets.test is not None else None, check_every=monitor.every)
    elif calibrating:
        calibration["reason"] = f"{info.name} has no forget phase"
    calibrate_s = time.perf_counter() - unlearn_start

    torch.manual_seed(seed)
    optimizer = build_optimizer(net.parameters(), optim, forget_lr, retain_lr, **dict(optim_options or {}))
    cbs = list(callbacks)
    if eval_every is not None:
        cbs.insert(0, _curve_callback(net, sets, curve_samples, seed))
    result = run_unlearning(net, m, optimizer, sets.forget, sets.retain, schedule, callbacks=cbs,
                            eval_every=eval_every, track_grads=track_grads, progress=progress,
                            desc=f"unlearn {info.name} [{optim}]", stop=monitor)
    unlearn_total_s = time.perf_counter() - unlearn_start
    unlearn_total_cpu_s = time.process_time() - unlearn_cpu
    if monitor is not None:
        calibration.update(stop_reason=result.stop_reason or "budget spent", checks=monitor.checks)
    t0 = time.perf_counter()
    unlearned_out = _outputs(net, sets)
    unlearned_metrics = _metrics(net, sets, seed, unlearned_out)
    verdict, verdict_details = final_verdict(original_out, unlearned_out)
    eval_s += time.perf_counter() - t0
    num_classes = original_out[0][0].shape[1]
    warnings = (degenerate_warnings("original", original_metrics, num_classes)
                + degenerate_warnings("unlearned", unlearned_metrics, num_classes, model))

    timings = {"unlearn_s": result.seconds, "unlearn_steps": result.steps, "calibrate_s": calibrate_s,
               "unlearn_total_s": unlearn_total_s, "unlearn_total_cpu_s": unlearn_total_cpu_s}
    retrain_model, retrain_metrics = None, None
    if retrain is not False and retrain is not None:
        if isinstance(retrain, nn.Module):
            retrain_model = retrain
            where = next(retrain.parameters(), torch.empty(0, device=device)).device
            if where != device:
                raise ConfigError(f"the Retrain model is on {where} but the model on {device}: move it first")
        else:
            retrain_model = retrain() if callable(retrain) and retrain is not True else _fresh_copy(model, seed)
            if not isinstance(retrain_model, nn.Module):
                raise ConfigError(f"retrain factory returned {type(retrain_model).__name__}, not an nn.Module")
            retrain_model.to(device=device, dtype=dtype)
            recipe = recipe or (retrain_recipe if isinstance(retrain_recipe, TrainConfig)
                                else TrainConfig(**(retrain_recipe or {})))
            rb = Batches(retain, "retain", recipe.batch_size, True, recipe.seed, device, dtype)
            timings.update(train_retrain(retrain_model, rb, recipe, output_key, progress))
        t0 = time.perf_counter()
        retrain_metrics = _metrics(LogitsModel(retrain_model, output_key), sets, seed)
        eval_s += time.perf_counter() - t0
        warnings += degenerate_warnings("Retrain", retrain_metrics, num_classes, retrain_model)
    timings["eval_s"] = eval_s
    timings["total_s"] = time.perf_counter() - total_start

    hyper = {"forget_lr": forget_lr, "retain_lr": retain_lr, "lr_source": lr_source, "forget_steps": n_forget_steps,
             "batch_size": batch_size, "seed": seed,
             "method_options": {k: v for k, v in m.__dict__.items() if k in {o.name for o in info.options}},
             "optim_options": dict(optim_options or {}), "schedule": dict(schedule.__dict__),
             "retrain_recipe": recipe.to_dict() if recipe is not None else None,
             "retrain": "trained" if recipe is not None else ("given" if retrain_model is not None else None)}
    audit = Audit.build(method=info.name, optim=optim, hyperparameters=hyper, original=original_metrics,
                        unlearned=unlearned_metrics, retrain=retrain_metrics,
                        sizes={"forget": sets.forget.num_samples, "retain": sets.retain.num_samples,
                               "test": sets.test.num_samples if sets.test is not None else 0},
                        timings=timings, process=[dict(r) for r in result.evals] if eval_every else [],
                        verdict=verdict, verdict_details=verdict_details,
                        calibration=calibration, warnings=warnings)
    model.eval()
    return UnlearnOutcome(model=model, audit=audit, result=result, retrain_model=retrain_model)


def _plan_steps(m: Any, schedule: Schedule, forget_batches: int, retain_batches: int) -> tuple[int, int]:
    from ..engine import _plan

    return _plan(m, schedule, forget_batches, retain_batches)


def _make_monitor(net: nn.Module, sets: _Sets, kind: str, classes: list[int], seed: int) -> Monitor:
    """Fixed random subsamples (at most MONITOR_SAMPLES per group) for the checks during unlearning."""
    (forget,) = subsample(sets.forget.evaluation(), MONITOR_SAMPLES, seed)
    heldout = retain = None
    if sets.test is not None:
        if kind == "class":
            cls = torch.tensor(classes, dtype=torch.long)
            parts = subsample(sets.test.evaluation(), MONITOR_SAMPLES, seed + 1,
                              group=lambda y: (~torch.isin(y.cpu(), cls)).long(), groups=2)
            parts = [p for p in parts if len(p[1])]
            heldout = (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))
        else:
            (heldout,) = subsample(sets.test.evaluation(), MONITOR_SAMPLES, seed + 1)
    else:
        (retain,) = subsample(sets.retain.evaluation(), MONITOR_SAMPLES, seed + 2)
    return Monitor(net, forget, heldout, kind, classes, retain)


def _probe(net: LogitsModel, sets: _Sets) -> None:
    """Check once, before any work, that the model returns logits matching the labels."""
    x, y = next(iter(sets.forget.evaluation()))
    was = net.training
    net.eval()
    try:
        with torch.no_grad():
            logits = net(x[:2])
    finally:
        net.train(was)
    classes = logits.shape[1]
    if classes < 2:
        raise ConfigError(f"the model outputs {classes} score per input; expected logits (N, num_classes >= 2)")
    for name, b in (("forget", sets.forget), ("retain", sets.retain), ("test", sets.test)):
        if b is None:
            continue
        # tensor pairs: every label; datasets/loaders: the first batch (a full pass would cost an epoch)
        labels = b.tensors[1] if b.tensors is not None else (y if b is sets.forget else next(iter(b.evaluation()))[1])
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= classes):
            raise ConfigError(f"{name} labels must be class indices in [0, {classes}) for a model with "
                              f"{classes} outputs; got range [{int(labels.min())}, {int(labels.max())}]")
    if not math.isfinite(float(logits.float().sum())):
        raise ConfigError("the model outputs NaN/inf logits before unlearning")
