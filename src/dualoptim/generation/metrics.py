"""Evaluation of class-wise generative unlearning: FA, FD-classifier and (optional) Inception FID.

* **FA** (forget accuracy, %): the share of images generated for the forgotten class that the
  project's classifier assigns to that class (lower = forgotten; the papers use 500 samples).
* **FD-classifier**: the Fréchet distance between Gaussians fitted to the classifier's penultimate
  features (the input of its last linear layer) of generated and real images of the remaining
  classes. It is NOT the FID: the features come from our own Fashion-MNIST classifier, not from
  Inception-v3, so its values are not comparable to published FIDs; it ranks image quality on one
  dataset. With few samples it is biased upwards (it depends on the sample count, which is recorded).
* **Inception FID**: through torchmetrics, only when the user gives a local Inception weights file
  (every FID package downloads them otherwise; this machine has no network).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from ..errors import ConfigError, DataNotFoundError


def _last_linear(model: nn.Module) -> nn.Linear:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(f"{type(model).__name__} has no nn.Linear layer to take penultimate features from")
    return linears[-1]


@torch.no_grad()
def classifier_outputs(classifier: nn.Module, images: torch.Tensor, batch_size: int = 1024
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits, features)`` of ``images`` (on the CPU, wherever the classifier runs); features are the input of
    the classifier's last linear layer."""
    device = next(classifier.parameters()).device
    feats: list[torch.Tensor] = []
    hook = _last_linear(classifier).register_forward_hook(lambda m, inp, out: feats.append(inp[0].detach()))
    was_training = classifier.training
    classifier.eval()
    try:
        logits = [classifier(images[i:i + batch_size].to(device)) for i in range(0, len(images), batch_size)]
    finally:
        hook.remove()
        classifier.train(was_training)
    return torch.cat(logits).float().cpu(), torch.cat(feats).flatten(1).double().cpu()


def forget_accuracy(classifier: nn.Module, images: torch.Tensor, forget_class: int) -> float:
    """FA in %: share of ``images`` (generated for ``forget_class``) classified as ``forget_class``."""
    if len(images) == 0:
        raise ConfigError("FA needs at least one generated image")
    logits, _ = classifier_outputs(classifier, images)
    return float((logits.argmax(1) == forget_class).double().mean() * 100)


def _sqrtm_psd(a: torch.Tensor) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(a)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance_stats(mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor, cov2: torch.Tensor) -> float:
    """``||mu1 - mu2||^2 + Tr(C1 + C2 - 2 (C1 C2)^(1/2))`` in float64.

    ``Tr((C1 C2)^(1/2))`` is computed as the sum of square roots of the eigenvalues of the symmetric
    PSD matrix ``C1^(1/2) C2 C1^(1/2)`` (same eigenvalues as ``C1 C2``), which avoids the complex
    round-off of a general matrix square root.
    """
    mu1, mu2, cov1, cov2 = (t.double() for t in (mu1, mu2, cov1, cov2))
    s1 = _sqrtm_psd(cov1)
    m = s1 @ cov2 @ s1
    tr_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum()
    value = (mu1 - mu2).pow(2).sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * tr_sqrt
    return float(value.clamp_min(0))


def gaussian_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and sample covariance (ddof=1) of ``(N, D)`` features."""
    if features.ndim != 2 or len(features) < 2:
        raise ConfigError(f"need at least 2 feature vectors of shape (N, D), got {tuple(features.shape)}")
    f = features.double()
    return f.mean(0), torch.cov(f.T).reshape(f.shape[1], f.shape[1])


def frechet_distance(features1: torch.Tensor, features2: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two ``(N, D)`` feature sets."""
    if features1.shape[1:] != features2.shape[1:]:
        raise ConfigError(f"feature sizes differ: {tuple(features1.shape)} vs {tuple(features2.shape)}")
    return frechet_distance_stats(*gaussian_stats(features1), *gaussian_stats(features2))


def inception_fid(generated: torch.Tensor, real: torch.Tensor, weights_path: str | os.PathLike,
                  batch_size: int = 256) -> float:
    """The real FID (Inception-v3 pool features, torchmetrics) from a local weights file.

    Images are in ``[-1, 1]``; grey images are repeated to 3 channels; torchmetrics resizes them to 299.
    ``weights_path`` is the ``pt_inception-2015-12-05`` file torchmetrics/torch-fidelity use.
    """
    if not os.path.isfile(weights_path):
        raise DataNotFoundError(f"Inception weights file not found: {weights_path}")
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError:
        raise ConfigError("Inception FID needs torchmetrics with its image extra: "
                          "pip install 'torchmetrics[image]' (FD-classifier works without it)") from None
    fid = FrechetInceptionDistance(feature=2048, normalize=True, feature_extractor_weights_path=str(weights_path))
    for images, real_flag in ((real, True), (generated, False)):
        for i in range(0, len(images), batch_size):
            x = (images[i:i + batch_size].float() + 1) / 2
            fid.update(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x, real=real_flag)
    return float(fid.compute())
