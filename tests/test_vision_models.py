"""Model registry: shapes for every model and input kind, options, errors."""

import importlib.util

import pytest
import torch

from dualoptim.errors import ConfigError
from dualoptim.vision.models import create_model, get_model_info, list_models

CONV_MODELS = ["cnn", "resnet8", "resnet20", "resnet18"]


def test_registry():
    assert set(CONV_MODELS + ["swin_t"]) <= set(list_models())
    with pytest.raises(ConfigError, match="valid: .*resnet18"):
        create_model("vgg", 10, 3, 32)


@pytest.mark.parametrize("name", CONV_MODELS)
@pytest.mark.parametrize("shape", [(1, 8), (1, 28), (3, 32)])
def test_output_shapes(name, shape):
    c, s = shape
    opts = {"width": 4} if name != "cnn" else {"width": 4, "hidden": 8}
    model = create_model(name, 7, c, s, **opts)
    out = model(torch.randn(2, c, s, s))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


def test_resnet18_cifar_stem():
    m = create_model("resnet18", 10, 3, 32)
    assert m.stem[0].kernel_size == (3, 3) and m.stem[0].stride == (1, 1)
    assert not any(isinstance(x, torch.nn.MaxPool2d) for x in m.modules())
    assert 11_000_000 < sum(p.numel() for p in m.parameters()) < 11_300_000  # ResNet-18 size


def test_width_option_changes_size():
    small = sum(p.numel() for p in create_model("resnet20", 10, 3, 32, width=8).parameters())
    big = sum(p.numel() for p in create_model("resnet20", 10, 3, 32).parameters())
    assert big > 3 * small
    assert get_model_info("resnet8").options == {"width": 16}


def test_option_errors():
    with pytest.raises(ConfigError, match="no option"):
        create_model("resnet8", 10, 1, 28, depth=3)
    with pytest.raises(ConfigError, match="positive integer"):
        create_model("cnn", 10, 1, 28, width=0)
    with pytest.raises(ConfigError, match="num_classes"):
        create_model("cnn", 1, 1, 28)
    with pytest.raises(ConfigError, match="at least 4x4"):
        create_model("cnn", 10, 1, 2)


@pytest.mark.skipif(importlib.util.find_spec("timm") is not None or importlib.util.find_spec("torchvision")
                    is not None, reason="timm/torchvision installed")
def test_swin_t_needs_timm_or_torchvision():
    with pytest.raises(ConfigError, match="timm or torchvision"):
        create_model("swin_t", 200, 3, 64)
