"""Classifier registry: ``create_model(name, num_classes, in_channels, image_size, **options)``.

Every model is a plain ``nn.Module`` mapping ``(N, C, H, W)`` images to ``(N, num_classes)`` logits.

| name | what | options |
|---|---|---|
| ``cnn`` | 2 conv-BN-ReLU-maxpool blocks + MLP head (fast CPU default) | ``width`` (32), ``hidden`` (128) |
| ``resnet8`` | CIFAR ResNet, 3 stages x 1 basic block | ``width`` (16) |
| ``resnet20`` | CIFAR ResNet (He et al. 2016), 3 stages x 3 blocks | ``width`` (16) |
| ``resnet18`` | ResNet-18 with the CIFAR stem (3x3 conv, stride 1, no max-pool) | ``width`` (64) |
| ``swin_t`` | Swin-T from timm (else torchvision) | ``pretrained`` (False), timm kwargs |
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..registry import Registry
from ..runtime import current_model_device


class ConvBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.MaxPool2d(2))


class SmallCNN(nn.Module):
    """Two conv blocks (each halves the resolution) and a two-layer head."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int, width: int = 32, hidden: int = 128):
        super().__init__()
        self.features = nn.Sequential(ConvBlock(in_channels, width), ConvBlock(width, 2 * width))
        side = image_size // 4
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * side * side, hidden), nn.ReLU(inplace=True),
                                  nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class BasicBlock(nn.Module):
    """The ResNet basic block (two 3x3 convs) with a 1x1 projection shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """A CIFAR-style ResNet: 3x3 stem at full resolution, stages of basic blocks, global average pool."""

    def __init__(self, blocks: list[int], widths: list[int], num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(inplace=True))
        layers, cin = [], widths[0]
        for i, (n, w) in enumerate(zip(blocks, widths)):
            for j in range(n):
                layers.append(BasicBlock(cin, w, stride=2 if (i > 0 and j == 0) else 1))
                cin = w
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def _resnet(blocks: list[int]) -> Callable[..., nn.Module]:
    """The builder of a ResNet with ``blocks[i]`` basic blocks in stage ``i``, widths doubling from ``width``."""
    def build(num_classes: int, in_channels: int, image_size: int, width: int) -> nn.Module:
        return ResNet(blocks, [width * 2**i for i in range(len(blocks))], num_classes, in_channels)

    return build


def _cnn(num_classes: int, in_channels: int, image_size: int, width: int = 32, hidden: int = 128) -> nn.Module:
    if image_size < 4:
        raise ConfigError(f"cnn needs images of at least 4x4 pixels, got {image_size}")
    return SmallCNN(num_classes, in_channels, image_size, width, hidden)


def _swin_t(num_classes: int, in_channels: int, image_size: int, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    try:
        import timm
    except ImportError:
        timm = None
    if timm is not None:
        # window 4 fits the 16x16 token grid of 64x64 inputs (TinyImageNet); 7 is timm's 224x224 default
        kwargs.setdefault("window_size", 7 if image_size % 224 == 0 else 4)
        return timm.create_model("swin_tiny_patch4_window7_224", pretrained=pretrained, num_classes=num_classes,
                                 in_chans=in_channels, img_size=image_size, **kwargs)
    try:
        import torchvision
    except ImportError:
        raise ConfigError("model 'swin_t' needs timm or torchvision: pip install 'dualoptim[vision]'") from None
    if in_channels != 3 or kwargs:
        raise ConfigError("torchvision's swin_t takes 3-channel images and no extra options; install timm for more")
    weights = torchvision.models.Swin_T_Weights.DEFAULT if pretrained else None
    model = torchvision.models.swin_t(weights=weights)
    model.head = nn.Linear(model.head.in_features, num_classes)
    return model


@dataclass(frozen=True)
class ModelInfo:
    """A registered classifier: builder ``f(num_classes, in_channels, image_size, **options)`` and its options."""

    name: str
    builder: Callable[..., nn.Module]
    description: str
    options: dict[str, Any] = field(default_factory=dict)  # option -> default
    open_options: bool = False  # True: unknown options are passed through (timm kwargs)


MODELS: Registry[ModelInfo] = Registry("model")
list_models = MODELS.names  # registered model names, sorted
get_model_info = MODELS.get  # the entry of a name; ConfigError listing valid names if unknown


def register_model(info: ModelInfo) -> ModelInfo:
    """Add ``info`` to the registry under ``info.name`` (lower case, unique)."""
    return MODELS.add(info.name, info)


def create_model(name: str, num_classes: int, in_channels: int, image_size: int, **options: Any) -> nn.Module:
    """Build classifier ``name`` for ``num_classes`` classes of ``in_channels`` x ``image_size``^2 images."""
    info = get_model_info(name)
    unknown = sorted(set(options) - set(info.options))
    if unknown and not info.open_options:
        raise ConfigError(f"model {info.name!r} has no option(s) {unknown}; valid: {sorted(info.options) or 'none'}")
    if num_classes < 2 or in_channels < 1 or image_size < 1:
        raise ConfigError(f"invalid model shape: num_classes={num_classes}, in_channels={in_channels}, "
                          f"image_size={image_size}")
    for k in ("width", "hidden"):
        if k in options and (not isinstance(options[k], int) or options[k] < 1):
            raise ConfigError(f"model option {k} must be a positive integer, got {options[k]!r}")
    model = info.builder(num_classes, in_channels, image_size, **{**info.options, **options})  # CPU: same weights
    device = current_model_device()  # `--device` of a vision command (dualoptim.runtime.model_device)
    return model if device is None else model.to(device)


register_model(ModelInfo("cnn", _cnn, "2 conv blocks + MLP head (fast CPU default)", {"width": 32, "hidden": 128}))
register_model(ModelInfo("resnet8", _resnet([1, 1, 1]), "CIFAR ResNet-8 (3 stages x 1 block)", {"width": 16}))
register_model(ModelInfo("resnet20", _resnet([3, 3, 3]), "CIFAR ResNet-20 (3 stages x 3 blocks)", {"width": 16}))
register_model(ModelInfo("resnet18", _resnet([2, 2, 2, 2]), "ResNet-18, CIFAR stem (3x3 conv, no max-pool)",
                         {"width": 64}))
register_model(ModelInfo("swin_t", _swin_t, "Swin-T (timm or torchvision)", {"pretrained": False},
                         open_options=True))
