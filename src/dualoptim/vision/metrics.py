"""Unlearning metrics for classifiers, all in percent.

``evaluate(model, data, split) -> {"FA", "UA", "RA", "TA", "MIA", "MIA_SVC"}``:

- FA: accuracy on the forget set D_f; UA = 100 - FA (unlearning accuracy); RA: accuracy on the retain set
  D_r; TA: accuracy on the test set. No augmentation; the model is in eval mode.
- MIA (default, the DualOptim/SFRon tables' variant), **entropy-LR member rate**: feature = Shannon entropy
  of the softmax output; ``LogisticRegression(class_weight="balanced")`` trained on D_r (label 1, member)
  vs the test set (label 0, non-member); MIA = % of D_f predicted *member*. Lower = more forgotten; the
  target is Retrain's value, not 0.
- MIA_SVC, **SVC-confidence non-member rate** (SalUn's "MIA-efficacy"): feature = softmax probability of
  the true class; ``SVC(C=3, gamma="auto")`` (RBF) trained on |test| samples of D_r (member, drawn with
  ``seed``) vs the test set (non-member); MIA_SVC = % of D_f predicted *non-member*. Higher = more forgotten.

Speed: one batched forward pass per split (batches of 256 in channels_last: on 2 CPU cores that was ~1.5x
faster than 1024 and ~2x faster than NCHW for the Fashion-MNIST cnn); both MIA variants reuse those softmax
outputs. The SVC variant dominates the cost on 10k-image test sets (an RBF SVC on 2 x 10k points: ~40 s on the
shared 2-core machine); ``svc_max_samples`` caps it, ``mia_svc=False`` skips it. The
feature-level functions (:func:`mia_entropy_lr`, :func:`mia_svc_confidence`) take probabilities, so
callers that already have outputs pay no extra forward pass.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from ..engine import Callback, Event
from ..errors import DivergenceError
from ..stats import DEFAULT_METRICS
from .data import ImageData
from .forget import ForgetSplit

METRICS = ("FA", "UA", "RA", "TA", "MIA", "MIA_SVC")
DESCRIPTIONS = {
    "FA": "forget accuracy: accuracy on D_f (%)",
    "UA": "unlearning accuracy: 100 - FA (%)",
    "RA": "retain accuracy: accuracy on D_r (%)",
    "TA": "test accuracy (%)",
    "MIA": "entropy-LR member rate: % of D_f an entropy logistic regression calls member (target: Retrain)",
    "MIA_SVC": "SVC-confidence non-member rate (SalUn MIA-efficacy): % of D_f an RBF SVC calls non-member",
}


@torch.no_grad()
def predict_probs(model: nn.Module, x: torch.Tensor, batch_size: int = 256, channels_last: bool = True
                  ) -> torch.Tensor:
    """Softmax outputs (float32, N x classes, on the CPU) of ``model`` in eval mode, batched on the model's
    device; restores the mode after.

    With ``channels_last`` the model's weights are also put in channels_last (values unchanged), so a model
    evaluated right after training and the same model loaded from its checkpoint give bit-identical outputs
    (the SVC MIA is sensitive to last-bit differences between convolution kernels).
    """
    was_training = model.training
    model.eval()
    if channels_last and x.ndim == 4:
        model.to(memory_format=torch.channels_last)
    try:
        device = next(model.parameters()).device
        out = []
        for lo in range(0, len(x), batch_size):
            xb = x[lo:lo + batch_size].to(device, non_blocking=True)
            if channels_last and xb.ndim == 4:
                xb = xb.contiguous(memory_format=torch.channels_last)
            out.append(torch.softmax(model(xb).float(), dim=1).cpu())
        probs = torch.cat(out) if out else torch.empty(0, 0)
        if not torch.isfinite(probs).all():
            raise DivergenceError("the model's outputs contain NaN/inf: its weights diverged (lower the learning "
                                  "rates)")
        return probs
    finally:
        model.train(was_training)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)`` in percent (NaN for an empty set)."""
    if len(y) == 0:
        return float("nan")
    return 100.0 * (predict_probs(model, x, batch_size).argmax(1) == y).double().mean().item()


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of each row of ``probs``."""
    p = probs.double().clamp_min(1e-30)
    return -(probs.double() * p.log()).sum(1)


def true_class_prob(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return probs.gather(1, labels.reshape(-1, 1).long()).reshape(-1)


def _fit_predict(clf, member: np.ndarray, nonmember: np.ndarray, target: np.ndarray) -> np.ndarray:
    xs = np.concatenate([member, nonmember]).reshape(-1, 1)
    ys = np.concatenate([np.ones(len(member)), np.zeros(len(nonmember))])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on degenerate (constant) features
        clf.fit(xs, ys)
    return clf.predict(target.reshape(-1, 1))


def mia_entropy_lr(retain_probs: torch.Tensor, test_probs: torch.Tensor, forget_probs: torch.Tensor) -> float:
    """Entropy-LR **member** rate (%): share of forget samples a logistic regression on output entropy,
    fit on retain (member) vs test (non-member) with balanced class weights, predicts as member."""
    return entropy_member_rates(retain_probs, test_probs, forget_probs)[0]


def entropy_member_rates(retain_probs: torch.Tensor, test_probs: torch.Tensor, *targets: torch.Tensor
                         ) -> list[float]:
    """The attack of :func:`mia_entropy_lr`, fitted once: the member rate (%) of each of ``targets``."""
    from sklearn.linear_model import LogisticRegression

    feats = [entropy(t).numpy() for t in targets]
    pred = _fit_predict(LogisticRegression(class_weight="balanced"), entropy(retain_probs).numpy(),
                        entropy(test_probs).numpy(), np.concatenate(feats))
    bounds = np.cumsum([0] + [len(f) for f in feats])
    return [100.0 * float(pred[lo:hi].mean()) for lo, hi in zip(bounds[:-1], bounds[1:])]


def mia_svc_confidence(retain_probs: torch.Tensor, retain_y: torch.Tensor, test_probs: torch.Tensor,
                       test_y: torch.Tensor, forget_probs: torch.Tensor, forget_y: torch.Tensor, seed: int = 0,
                       max_samples: int | None = None) -> float:
    """SVC-confidence **non-member** rate (%), SalUn's MIA-efficacy.

    An RBF ``SVC(C=3, gamma="auto")`` on the true-class probability is fit on ``n`` retain samples (member,
    drawn with ``seed``) vs ``n`` test samples (non-member), ``n = min(|test|, |retain|, max_samples)``;
    returns the share of forget samples predicted non-member.
    """
    from sklearn.svm import SVC

    g = torch.Generator().manual_seed(seed)
    n = min(len(test_y), len(retain_y), max_samples or len(test_y))
    r = torch.randperm(len(retain_y), generator=g)[:n]
    t = torch.randperm(len(test_y), generator=g)[:n]
    pred = _fit_predict(SVC(C=3, gamma="auto", kernel="rbf"), true_class_prob(retain_probs[r], retain_y[r]).numpy(),
                        true_class_prob(test_probs[t], test_y[t]).numpy(),
                        true_class_prob(forget_probs, forget_y).numpy())
    return 100.0 * float(1.0 - pred.mean())


@dataclass(frozen=True)
class Outputs:
    """Softmax outputs of one model on the forget, retain and test sets (computed once, reused)."""

    forget: torch.Tensor
    retain: torch.Tensor
    test: torch.Tensor


def compute_outputs(model: nn.Module, data: ImageData, split: ForgetSplit, batch_size: int = 256) -> Outputs:
    return Outputs(forget=predict_probs(model, data.train_x[split.forget_idx], batch_size),
                   retain=predict_probs(model, data.train_x[split.retain_idx], batch_size),
                   test=predict_probs(model, data.test_x, batch_size))


def metrics_from_outputs(out: Outputs, data: ImageData, split: ForgetSplit, mia_svc: bool = True, seed: int = 0,
                         svc_max_samples: int | None = None) -> dict[str, float]:
    """:func:`metrics_from_probs` of the outputs on ``data``'s forget, retain (``split``) and test sets."""
    return metrics_from_probs((out.forget, data.train_y[split.forget_idx]),
                              (out.retain, data.train_y[split.retain_idx]), (out.test, data.test_y), mia_svc, seed,
                              svc_max_samples)


Pair = tuple[torch.Tensor, torch.Tensor]


def metrics_from_probs(forget: Pair, retain: Pair, test: Pair | None = None, mia_svc: bool = True, seed: int = 0,
                       svc_max_samples: int | None = None) -> dict[str, float]:
    """FA, UA, RA and, given a non-empty test set, TA, MIA and (unless ``mia_svc=False``) MIA_SVC, in %, from
    ``(softmax outputs, labels)`` of each set (both attacks need held-out non-members)."""
    def acc(p: torch.Tensor, y: torch.Tensor) -> float:
        return 100.0 * (p.argmax(1) == y).double().mean().item()

    (pf, yf), (pr, yr) = forget, retain
    fa = acc(pf, yf)
    res = {"FA": fa, "UA": 100.0 - fa, "RA": acc(pr, yr)}
    if test is not None and len(test[1]):
        pt, yt = test
        res.update(TA=acc(pt, yt), MIA=mia_entropy_lr(pr, pt, pf))
        if mia_svc:
            res["MIA_SVC"] = mia_svc_confidence(pr, yr, pt, yt, pf, yf, seed=seed, max_samples=svc_max_samples)
    return res


@torch.no_grad()
def loader_probs(model: nn.Module, batches: Iterable[Pair]) -> Pair:
    """Softmax outputs (float32, CPU) and labels of ``model`` over ``(x, y)`` batches, in eval mode (restored)."""
    was = model.training
    model.eval()
    try:
        out = [(torch.softmax(model(x).float(), dim=1).cpu(), y.cpu()) for x, y in batches]
    finally:
        model.train(was)
    return torch.cat([p for p, _ in out]), torch.cat([y for _, y in out])


def sets_probs(model: nn.Module, loaders: Iterable[Any]) -> tuple[Pair | None, ...]:
    """:func:`loader_probs` of ``model`` on each loader's ``.evaluation()`` batches (``None`` stays ``None``)."""
    return tuple(None if b is None else loader_probs(model, b.evaluation()) for b in loaders)


def all_metrics(outputs: Sequence[Pair | None], seed: int = 0) -> dict[str, float | None]:
    """Every metric of :data:`METRICS` from the forget, retain and test outputs (None where there is no test set)."""
    return {**dict.fromkeys(METRICS), **metrics_from_probs(*outputs, seed=seed)}


def curve_callback(model: nn.Module, loaders: Iterable[Any], samples: int, seed: int = 0) -> Callback:
    """An engine callback for process curves: FA, RA, TA, MIA (:func:`metrics_from_probs`, no SVC attack) of
    ``model`` on the first ``samples`` samples of the forget, retain and test loaders (``.evaluation()``
    order; ``None`` for no test set), taken once."""
    def head(loader: Any) -> Pair:
        xs, ys = [], []
        for x, y in loader.evaluation():
            xs.append(x)
            ys.append(y)
            if sum(map(len, ys)) >= samples:
                break
        return torch.cat(xs)[:samples], torch.cat(ys)[:samples]

    parts = [None if b is None else head(b) for b in loaders]

    def callback(event: Event) -> dict[str, float]:
        m = metrics_from_probs(*[None if p is None else loader_probs(model, [p]) for p in parts], mia_svc=False,
                               seed=seed)
        return {k: m[k] for k in DEFAULT_METRICS if k in m}

    return callback


def evaluate(model: nn.Module, data: ImageData, split: ForgetSplit, batch_size: int = 256, mia_svc: bool = True,
             seed: int = 0, svc_max_samples: int | None = None) -> dict[str, float]:
    """FA, UA, RA, TA, MIA (entropy-LR member rate) and, unless ``mia_svc=False``, MIA_SVC (SVC-confidence
    non-member rate), all in %, from one forward pass per split (see the module docstring for definitions)."""
    return metrics_from_outputs(compute_outputs(model, data, split, batch_size), data, split, mia_svc, seed,
                                svc_max_samples)


def metrics_callback(data: ImageData, split: ForgetSplit, samples: int | None = None, seed: int = 0,
                     keys: Sequence[str] | None = None) -> Callback:
    """An engine callback: FA, UA, RA, TA, MIA (:func:`evaluate`, no SVC attack) of the model at each evaluation,
    only ``keys`` when given. With ``samples``, forget and retain metrics come from a fixed random subsample of
    at most ``samples`` indices of each (drawn once with ``seed``; process curves stay cheap), TA from the whole
    test set."""
    if samples is not None:
        g = torch.Generator().manual_seed(seed)

        def pick(idx: torch.Tensor) -> torch.Tensor:
            return idx[torch.randperm(len(idx), generator=g)[:samples]].sort().values

        split = replace(split, forget_idx=pick(split.forget_idx), retain_idx=pick(split.retain_idx))

    def callback(event: Event) -> dict[str, float]:
        m = evaluate(event.model, data, split, mia_svc=False)
        return m if keys is None else {k: m[k] for k in keys}

    return callback
