"""What ``dualoptim.unlearn`` checks and normalises in a user's inputs before any work.

- :func:`extract_logits` / :class:`LogitsModel`: the logits tensor in any model output (tensor, dict, Hugging
  Face output, tuple with ``output_key``), so methods can call ``model(x)``.
- :func:`check_disjoint`: forget and retain share no sample (by index for Subsets / DataLoaders of one
  dataset, by content, one hash per sample, for tensor pairs and TensorDatasets).
- :func:`check_settings` (``unlearn``'s scalar arguments) and :func:`user_sets`: all checks that need no
  training (trainable float parameters, disjoint sets, finite logits that fit the labels) and the inputs as
  loaders (``data.as_loader``) on the model's device.
- :func:`untrained_model`: what a Retrain reference is trained from (a factory's model or a re-initialised copy);
  :func:`retrain_plan` / :func:`train_retrain`: ``unlearn``'s ``retrain=`` argument checked, then trained.
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from ..errors import ConfigError
from .data import Data, DatasetLoader, TensorLoader, as_loader
from .train import TrainConfig, fit

Loader = TensorLoader | DatasetLoader


def extract_logits(out: Any, output_key: str | int | None = None) -> torch.Tensor:
    """The logits tensor in a model's output (see :func:`dualoptim.unlearn`'s ``output_key``)."""
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


def _identity(data: Any) -> tuple[Any, torch.Tensor] | None:
    """``(base dataset, indices into it)`` when identifiable (Subset chains, datasets, data loaders)."""
    if isinstance(data, DataLoader):
        data = data.dataset
    if isinstance(data, Subset):
        inner = _identity(data.dataset)
        return None if inner is None else (inner[0], inner[1][torch.as_tensor(list(data.indices), dtype=torch.long)])
    if isinstance(data, Dataset) and hasattr(data, "__len__"):
        return data, torch.arange(len(data))  # type: ignore[arg-type]
    return None


def _inputs(data: Any) -> torch.Tensor | None:
    """The input tensor of a tensor pair or a TensorDataset (else None: content is not checked)."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return data[0]
    return data.tensors[0] if isinstance(data, TensorDataset) and data.tensors else None


def sample_hashes(x: torch.Tensor) -> list[bytes]:
    """One 16-byte BLAKE2b digest per sample of ``x`` (its raw bytes; dtype and shape included)."""
    if not len(x):
        return []
    flat = x.detach().cpu().contiguous().reshape(len(x), -1)
    head = f"{flat.dtype}{tuple(x.shape[1:])}".encode()
    rows = flat.view(torch.uint8).numpy() if flat.numel() else flat.numpy()
    return [hashlib.blake2b(head + row.tobytes(), digest_size=16).digest() for row in rows]


def check_disjoint(forget: Any, retain: Any) -> None:
    """Raise :class:`ConfigError` when ``forget`` and ``retain`` share samples: by index for Subsets/DataLoaders of
    one base dataset, by content (a hash per sample: ~1 s per 100k 28x28 images on one CPU core) for tensor pairs
    and TensorDatasets."""
    if forget is retain:
        raise ConfigError("forget and retain are the same object: the retain set must exclude the forget samples")
    if isinstance(forget, (tuple, list)) and isinstance(retain, (tuple, list)) and forget and retain:
        if isinstance(forget[0], torch.Tensor) and forget[0] is retain[0]:
            raise ConfigError("forget and retain use the same input tensor: the retain set must exclude the forget "
                              "samples")
    f, r = _identity(forget), _identity(retain)
    if f is not None and r is not None and f[0] is r[0]:
        common = torch.unique(f[1][torch.isin(f[1], r[1])])
        if len(common):
            raise ConfigError(f"forget and retain overlap: {len(common)} samples of the same dataset are in both "
                              f"(e.g. indices {common[:5].tolist()}); the retain set must be the training set minus "
                              "the forget set")
        return
    xf, xr = _inputs(forget), _inputs(retain)
    if xf is None or xr is None or xf.shape[1:] != xr.shape[1:] or xf.dtype != xr.dtype:
        return
    retain_set = set(sample_hashes(xr))
    dup = [i for i, h in enumerate(sample_hashes(xf)) if h in retain_set]
    if dup:
        raise ConfigError(f"forget and retain overlap by content: {len(dup)} forget sample(s) (e.g. positions "
                          f"{dup[:5]}) have an identical input in the retain set; remove them from the retain set "
                          "(a copy left there keeps teaching the model what should be forgotten)")


@dataclass
class Sets:
    """The user's forget, retain and (optional) test data as loaders on the model's device."""

    forget: Loader
    retain: Loader
    test: Loader | None


def user_sets(model: nn.Module, forget: Data, retain: Data, test: Data | None, batch_size: int, seed: int,
              output_key: str | int | None) -> tuple[LogitsModel, Sets]:
    """``model`` wrapped to return logits and the three inputs as loaders (forget and retain shuffled with
    ``seed`` and ``seed + 1``), after every check that needs no training: trainable floating-point parameters,
    disjoint forget/retain (:func:`check_disjoint`), finite logits whose class count fits the labels (tensor
    pairs: every label; datasets/loaders: the first batch, as a full pass would cost an epoch)."""
    params = list(model.parameters())
    if not params:
        raise ConfigError("the model has no parameters to unlearn")
    if not any(p.requires_grad for p in params):
        raise ConfigError("every parameter of the model is frozen (requires_grad=False), so unlearning cannot change "
                          "it: unfreeze what may change, e.g. model.requires_grad_(True) or the last layers only")
    device, dtype = params[0].device, params[0].dtype
    if not dtype.is_floating_point:
        raise ConfigError(f"the model's parameters are {dtype}; unlearning needs floating-point parameters")
    check_disjoint(forget, retain)
    sets = Sets(as_loader(forget, "forget", batch_size, True, seed, device, dtype),
                as_loader(retain, "retain", batch_size, True, seed + 1, device, dtype),
                None if test is None else as_loader(test, "test", batch_size, False, seed, device, dtype))
    net = LogitsModel(model, output_key)
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
        labels = b.y if isinstance(b, TensorLoader) else (y if b is sets.forget else next(iter(b.evaluation()))[1])
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= classes):
            raise ConfigError(f"{name} labels must be class indices in [0, {classes}) for a model with "
                              f"{classes} outputs; got range [{int(labels.min())}, {int(labels.max())}]")
    if not math.isfinite(float(logits.float().sum())):
        raise ConfigError("the model outputs NaN/inf logits before unlearning")
    return net, sets


def check_settings(*, calibrate: str, batch_size: int, train_epochs: int | None, eval_every: int | None) -> None:
    """``unlearn``'s scalar settings, each with one clear :class:`ConfigError`."""
    if calibrate not in ("auto", "off"):
        raise ConfigError(f"calibrate must be 'auto' or 'off', got {calibrate!r}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if train_epochs is not None and (isinstance(train_epochs, bool) or not isinstance(train_epochs, int)
                                     or train_epochs < 1):
        raise ConfigError(f"train_epochs must be an integer >= 1 (the epochs the original model was trained for), "
                          f"got {train_epochs!r}")
    if eval_every is not None and eval_every < 1:
        raise ConfigError(f"eval_every must be >= 1, got {eval_every}")


def untrained_model(retrain: Any, model: nn.Module, seed: int) -> nn.Module:
    """The model Retrain starts from, on ``model``'s device and dtype: ``retrain()`` for a factory, else a
    re-initialised deep copy of ``model`` (every parameter's module must define ``reset_parameters``)."""
    if callable(retrain):
        fresh = retrain()
        if not isinstance(fresh, nn.Module):
            raise ConfigError(f"retrain factory returned {type(fresh).__name__}, not an nn.Module")
    else:
        fresh = copy.deepcopy(model)
        owners = [(name, m) for name, m in fresh.named_modules() if any(True for _ in m.parameters(recurse=False))]
        missing = [name or type(m).__name__ for name, m in owners if not hasattr(m, "reset_parameters")]
        if missing:
            raise ConfigError(f"retrain=True cannot re-initialise module(s) {missing[:5]} (no reset_parameters()); "
                              "pass retrain=<a function returning a fresh, untrained model> or a Retrain model you "
                              "trained")
        torch.manual_seed(seed)
        for _, m in owners:
            m.reset_parameters()  # type: ignore[operator]
        for m in fresh.modules():  # BatchNorm running statistics
            if hasattr(m, "reset_running_stats"):
                m.reset_running_stats()
    p = next(model.parameters())
    return fresh.to(device=p.device, dtype=p.dtype)


Retrain = bool | nn.Module | Callable[[], nn.Module]


def retrain_plan(retrain: Retrain | None, recipe: TrainConfig | Mapping[str, Any] | None, model: nn.Module
                 ) -> tuple[nn.Module | None, TrainConfig | None]:
    """``(the given Retrain model or None, the recipe to train one with or None)`` for ``unlearn(retrain=...)``,
    checked before any work: a given Retrain must be on ``model``'s device."""
    device = next(model.parameters()).device
    if isinstance(retrain, nn.Module):
        where = next(retrain.parameters(), torch.empty(0, device=device)).device
        if where != device:
            raise ConfigError(f"the Retrain model is on {where} but the model on {device}: move it first")
        return retrain, None
    if retrain is False or retrain is None:
        return None, None
    return None, recipe if isinstance(recipe, TrainConfig) else TrainConfig(**(recipe or {}))


def train_retrain(retrain: Retrain, recipe: TrainConfig, model: nn.Module, retain: Data,
                  output_key: str | int | None, seed: int, progress: bool) -> tuple[nn.Module, dict[str, Any]]:
    """Train the Retrain reference (:func:`untrained_model`) on ``retain`` with ``recipe``: ``(it, timings)``."""
    fresh = untrained_model(retrain, model, seed)
    p = next(model.parameters())
    batches = as_loader(retain, "retain", recipe.batch_size, True, recipe.seed, p.device, p.dtype)
    done = fit(LogitsModel(fresh, output_key), batches, recipe, progress, "retrain")
    return fresh, {"retrain_s": done["time_s"], "retrain_steps": done["steps"]}
