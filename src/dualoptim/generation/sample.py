"""DDIM sampling with classifier-free guidance.

``eps = (1 + w) * eps(x_t, c) - w * eps(x_t, null)``, deterministic DDIM (eta = 0) with diffusers'
``DDIMScheduler`` built from the model's own noise schedule. Departures from the papers (1000 ancestral
steps, w = 2.0), both for the CPU-sized default model: 50 DDIM steps, and w = 0.5 by default because
w = 2 over-saturates that model's samples (docs/benchmarks.md); pass ``guidance=2.0`` for the papers'
value. Every result records the :class:`SamplerConfig` it was produced with.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError


@dataclass(frozen=True)
class SamplerConfig:
    """How images are sampled: DDIM ``steps``, guidance scale ``guidance`` (w), ``eta`` and batch size."""

    steps: int = 50
    guidance: float = 0.5
    eta: float = 0.0
    batch_size: int = 512
    sampler: str = "ddim"

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ConfigError(f"steps and batch_size must be >= 1, got {self.steps}, {self.batch_size}")
        if self.guidance < 0 or self.eta < 0:
            raise ConfigError(f"guidance and eta must be >= 0, got {self.guidance}, {self.eta}")
        if self.sampler != "ddim":
            raise ConfigError(f"unknown sampler {self.sampler!r}; valid: ddim")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def guided_eps(model: nn.Module, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, guidance: float
               ) -> torch.Tensor:
    """The classifier-free-guided noise prediction (one forward pass over the cond + null batch)."""
    if guidance == 0:
        return model(x, t, labels)
    null = torch.full_like(labels, model.null_class)
    eps_c, eps_u = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null])).chunk(2)
    return (1 + guidance) * eps_c - guidance * eps_u


def initial_noise(labels: torch.Tensor, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Gaussian noise per image; the j-th image of class k gets draw j of a generator seeded by (seed, k)."""
    noise = torch.empty((len(labels), *shape))
    for k in torch.unique(labels).tolist():
        idx = (labels == k).nonzero().flatten()
        g = torch.Generator().manual_seed(seed * 100_003 + int(k))
        noise[idx] = torch.randn((len(idx), *shape), generator=g)
    return noise


@torch.no_grad()
def sample(model: nn.Module, labels: torch.Tensor | list[int], cfg: SamplerConfig | None = None, *,
           seed: int = 0, progress: bool = False) -> torch.Tensor:
    """Generate one image per label; returns ``(N, C, H, W)`` in ``[-1, 1]``.

    The initial noise of the j-th image of class k depends only on ``(seed, k, j)`` (see
    :func:`initial_noise`), so two models, or two label layouts, sampled with the same seed start the
    j-th image of each class from the same noise: before/after grids compare like with like.
    """
    from diffusers import DDIMScheduler
    from tqdm.auto import tqdm

    cfg = cfg or SamplerConfig()
    labels = torch.as_tensor(labels, dtype=torch.long)
    if labels.ndim != 1:
        raise ConfigError(f"labels must be a 1-D list of class indices, got shape {tuple(labels.shape)}")
    mc = model.config
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) > mc.num_classes):
        raise ConfigError(f"labels must be in [0, {mc.num_classes}] ({mc.num_classes} = unconditional)")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    scheduler = DDIMScheduler(**mc.scheduler_config(), clip_sample=True)
    scheduler.set_timesteps(cfg.steps)
    noise = initial_noise(labels, (mc.in_channels, mc.image_size, mc.image_size), seed)
    step_gen = torch.Generator().manual_seed(seed + 1)  # only used when eta > 0
    out = []
    chunks = range(0, len(labels), cfg.batch_size)
    bar = tqdm(total=len(chunks) * cfg.steps, desc="sampling", disable=not progress, leave=False, dynamic_ncols=True)
    for lo in chunks:
        y = labels[lo:lo + cfg.batch_size].to(device)
        x = noise[lo:lo + cfg.batch_size].to(device)
        for t in scheduler.timesteps:
            eps = guided_eps(model, x, t.expand(len(y)).to(device), y, cfg.guidance)
            x = scheduler.step(eps, t, x, eta=cfg.eta, generator=step_gen).prev_sample
            bar.update(1)
        out.append(x.clamp(-1, 1).cpu())
    bar.close()
    model.train(was_training)
    return torch.cat(out) if out else noise
