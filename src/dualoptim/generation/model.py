"""A class-conditional DDPM with classifier-free guidance, built on diffusers' ``UNet2DModel``.

The U-Net and the noise schedule are built from a :class:`DDPMConfig` (nothing is downloaded):
T = 1000 training noise levels, linear betas 1e-4 .. 0.02, epsilon prediction, a learned class
embedding with one extra "null" class (index ``num_classes``) used for the unconditional branch,
and condition dropout 0.1 during training (labels replaced by the null class), as in the CIFAR-10
DDPMs of the SalUn / SFRon / DualOptim papers.

Images live in ``[-1, 1]`` at ``config.image_size`` (see :func:`load_generation_data`): the default
16x16 Fashion-MNIST setting is a stated departure from the papers' 32x32 CIFAR-10, chosen so that a
DDPM trains on two shared CPU cores in the budget (``image_size=32`` pads 28x28 images as the papers'
setting would).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..runtime import current_model_device

ATTENTION = ("none", "mid", "lowest")
ARCHS = ("unet", "dit")


@dataclass(frozen=True)
class DDPMConfig:
    """Architecture and noise schedule of a :class:`ConditionalDDPM` (saved in every checkpoint).

    Attributes:
        image_size: side of the (square) images the model generates.
        in_channels: image channels.
        num_classes: real classes; the embedding table has ``num_classes + 1`` rows (the last is "null").
        block_out_channels: channels per U-Net level (each level after the first halves the resolution).
        layers_per_block: ResNet blocks per level.
        attention: ``none``, ``mid`` (self-attention in the middle block) or ``lowest`` (also in the
            lowest-resolution down/up blocks).
        norm_num_groups: GroupNorm groups (must divide every entry of ``block_out_channels``).
        num_train_timesteps, beta_start, beta_end: the linear beta schedule (T = 1000 in the papers).
        cond_drop: probability of replacing a label with the null class in training (classifier-free guidance).
    """

    image_size: int = 16
    in_channels: int = 1
    num_classes: int = 10
    block_out_channels: tuple[int, ...] = (16, 32, 64)
    layers_per_block: int = 1
    attention: str = "mid"
    norm_num_groups: int = 8
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    cond_drop: float = 0.1
    arch: str = "unet"
    dit_layers: int = 4
    dit_heads: int = 4
    dit_head_dim: int = 16
    patch_size: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_out_channels", tuple(int(c) for c in self.block_out_channels))
        if self.arch not in ARCHS:
            raise ConfigError(f"unknown architecture {self.arch!r}; valid: {', '.join(ARCHS)}")
        if self.arch == "dit" and (self.image_size % self.patch_size or min(self.dit_layers, self.dit_heads,
                                                                             self.dit_head_dim) < 1):
            raise ConfigError(f"DiT needs image_size ({self.image_size}) divisible by patch_size "
                              f"({self.patch_size}) and positive layers/heads/head_dim")
        if self.attention not in ATTENTION:
            raise ConfigError(f"attention must be one of {ATTENTION}, got {self.attention!r}")
        if not self.block_out_channels or any(c < 1 for c in self.block_out_channels):
            raise ConfigError(f"block_out_channels must be positive integers, got {self.block_out_channels}")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ConfigError(f"norm_num_groups={self.norm_num_groups} must divide every block width "
                              f"{self.block_out_channels}")
        down = 2 ** (len(self.block_out_channels) - 1)
        if self.image_size < 1 or self.image_size % down:
            raise ConfigError(f"image_size {self.image_size} must be a multiple of {down} "
                              f"({len(self.block_out_channels)} U-Net levels)")
        if self.num_classes < 2 or self.in_channels < 1 or self.layers_per_block < 1:
            raise ConfigError("num_classes must be >= 2, in_channels and layers_per_block >= 1")
        if self.num_train_timesteps < 2 or not 0 < self.beta_start < self.beta_end < 1:
            raise ConfigError("need num_train_timesteps >= 2 and 0 < beta_start < beta_end < 1")
        if not 0 <= self.cond_drop < 1:
            raise ConfigError(f"cond_drop must be in [0, 1), got {self.cond_drop}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["block_out_channels"] = list(self.block_out_channels)
        return d

    def key_dict(self) -> dict[str, Any]:
        """The fields that determine the network: those of the other architecture are left out, so adding
        options to one architecture does not change the cache keys of the other's checkpoints."""
        dit = ("arch", "dit_layers", "dit_heads", "dit_head_dim", "patch_size")
        unet = ("block_out_channels", "layers_per_block", "attention", "norm_num_groups")
        drop = dit if self.arch == "unet" else unet
        return {k: v for k, v in self.to_dict().items() if k not in drop}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DDPMConfig:
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"unknown DDPM config field(s) {unknown}")
        return cls(**{**d, "block_out_channels": tuple(d.get("block_out_channels", cls.block_out_channels))})

    def scheduler_config(self) -> dict[str, Any]:
        """Keyword arguments shared by diffusers' DDPM/DDIM schedulers for this model."""
        return dict(num_train_timesteps=self.num_train_timesteps, beta_start=self.beta_start,
                    beta_end=self.beta_end, beta_schedule="linear", prediction_type="epsilon")


def _import_diffusers():
    try:
        import diffusers
    except ImportError:
        raise ConfigError("image generation needs diffusers: pip install 'dualoptim[diffusion]'") from None
    return diffusers


def build_unet(cfg: DDPMConfig) -> nn.Module:
    """The diffusers ``UNet2DModel`` described by ``cfg`` (random initialisation, no download)."""
    diffusers = _import_diffusers()
    n = len(cfg.block_out_channels)
    lowest_attn = cfg.attention == "lowest"
    down = tuple("AttnDownBlock2D" if lowest_attn and i == n - 1 else "DownBlock2D" for i in range(n))
    up = tuple("AttnUpBlock2D" if lowest_attn and i == 0 else "UpBlock2D" for i in range(n))
    return diffusers.UNet2DModel(
        sample_size=cfg.image_size, in_channels=cfg.in_channels, out_channels=cfg.in_channels,
        block_out_channels=cfg.block_out_channels, layers_per_block=cfg.layers_per_block,
        down_block_types=down, up_block_types=up, add_attention=cfg.attention != "none",
        norm_num_groups=cfg.norm_num_groups, attention_head_dim=min(32, cfg.block_out_channels[-1]),
        num_class_embeds=cfg.num_classes + 1)


def build_dit(cfg: DDPMConfig) -> nn.Module:
    """A small pixel-space diffusers ``DiTTransformer2DModel`` (adaLN-Zero, class labels + null class)."""
    diffusers = _import_diffusers()
    net = diffusers.DiTTransformer2DModel(
        num_attention_heads=cfg.dit_heads, attention_head_dim=cfg.dit_head_dim, in_channels=cfg.in_channels,
        out_channels=cfg.in_channels, num_layers=cfg.dit_layers, sample_size=cfg.image_size,
        patch_size=cfg.patch_size, num_embeds_ada_norm=cfg.num_classes)
    # its label table already has the extra null row (index num_classes); the condition dropout is ours,
    # so switch off the built-in one to not drop labels twice
    for m in net.modules():
        if hasattr(m, "dropout_prob") and hasattr(m, "embedding_table"):
            m.dropout_prob = 0.0
    return net


class ConditionalDDPM(nn.Module):
    """Epsilon-prediction DDPM over a class-conditional U-Net (or DiT) with a learned null class.

    ``model(x_t, t, labels)`` returns the predicted noise; ``labels == model.null_class`` is the
    unconditional branch used by classifier-free guidance.
    """

    def __init__(self, config: DDPMConfig, net: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.net = net if net is not None else (build_dit(config) if config.arch == "dit" else build_unet(config))
        betas = torch.linspace(config.beta_start, config.beta_end, config.num_train_timesteps, dtype=torch.float64)
        self.register_buffer("alphas_cumprod", torch.cumprod(1 - betas, 0).float(), persistent=False)
        device = current_model_device()  # `--device` of a `gen` command (dualoptim.runtime.model_device)
        if device is not None:  # initialised on the CPU first: the same weights on every device
            self.to(device)

    @property
    def null_class(self) -> int:
        return self.config.num_classes

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        out = self.net(x_t, t, class_labels=labels)
        return out.sample if hasattr(out, "sample") else out

    def add_noise(self, x0: torch.Tensor, generator: torch.Generator | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(x_t, t, noise)`` with ``t`` uniform over the T training levels (one per image)."""
        n = len(x0)
        t = torch.randint(0, self.config.num_train_timesteps, (n,), generator=generator).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0)
        a = self.alphas_cumprod.to(x0.device)[t].view(n, *([1] * (x0.ndim - 1)))
        return a.sqrt() * x0 + (1 - a).sqrt() * noise, t, noise

    def drop_labels(self, labels: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
        """Replace each label by the null class with probability ``p`` (classifier-free guidance training)."""
        if p <= 0:
            return labels
        drop = torch.rand(labels.shape, generator=generator).to(labels.device) < p
        return torch.where(drop, torch.full_like(labels, self.null_class), labels)

    def per_sample_loss(self, x0: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None,
                        cond_drop: float = 0.0) -> torch.Tensor:
        """The epsilon-MSE of every image (shape ``(N,)``) at random noise levels."""
        x_t, t, noise = self.add_noise(x0, generator)
        eps = self(x_t, t, self.drop_labels(labels, cond_drop, generator))
        return (eps.float() - noise).pow(2).flatten(1).mean(1)

    def loss(self, x0: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None,
             cond_drop: float = 0.0) -> torch.Tensor:
        """The standard DDPM training loss (mean epsilon-MSE)."""
        return self.per_sample_loss(x0, labels, generator, cond_drop).mean()

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The U-Net weights (what a checkpoint stores)."""
        return {k: v.detach() for k, v in self.net.state_dict().items()}


def load_generation_data(name: str = "fashion-mnist", image_size: int = 16, data_dir: str | os.PathLike | None = None,
                         train_subset: int | None = None):
    """A vision dataset converted for diffusion: images in ``[-1, 1]`` at ``image_size`` x ``image_size``.

    Larger sizes pad with the background value (28 -> 32 as in the papers' padded setting); smaller
    sizes resize with an anti-aliased bilinear filter (28 -> 16, the CPU default). The FA/FD
    classifier is trained on exactly these images, so generated images need no further transform.
    """
    from ..vision.data import load_dataset

    data = load_dataset(name, data_dir=data_dir, train_subset=train_subset)
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)

    def convert(x: torch.Tensor) -> torch.Tensor:
        x = (x * std + mean).clamp(0, 1)
        side = x.shape[-1]
        if image_size > side:
            lo = (image_size - side) // 2
            x = F.pad(x, (lo, image_size - side - lo, lo, image_size - side - lo))
        elif image_size < side:
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True,
                              align_corners=False).clamp(0, 1)
        return (x * 2 - 1).contiguous()

    return replace(data, train_x=convert(data.train_x), test_x=convert(data.test_x), image_size=image_size,
                   mean=(0.5,) * data.in_channels, std=(0.5,) * data.in_channels)
