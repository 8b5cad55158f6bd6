"""Training: learns digits, deterministic given seeds, divergence detection, recipe validation."""

import pytest
import torch
from torch import nn

from dualoptim.errors import ConfigError, DivergenceError
from dualoptim.vision import train
from dualoptim.vision.metrics import accuracy
from dualoptim.vision.models import create_model
from dualoptim.vision.train import TrainConfig, lr_factor, seed_everything, train_classifier

FAST = dict(epochs=3, batch_size=64, lr=0.05)


def fit(digits, seed=0, **kw):
    seed_everything(seed)
    model = create_model("cnn", 10, 1, 8, width=8, hidden=32)
    result = train_classifier(model, digits, None, TrainConfig(seed=seed, **{**FAST, **kw}), progress=False)
    return model, result


def test_learns_digits(digits):
    model, result = fit(digits)
    assert accuracy(model, digits.test_x, digits.test_y) > 85
    h = result["history"]
    assert [e["epoch"] for e in h] == [1, 2, 3] and h[-1]["loss"] < h[0]["loss"]
    assert result["steps"] == 3 * 22 and result["images_per_s"] > 0 and not model.training
    assert h[-1]["lr"] < 0.05 * 0.1  # cosine decays to ~0


def test_deterministic_given_seed(digits):
    a, _ = fit(digits, seed=1, epochs=1)
    b, _ = fit(digits, seed=1, epochs=1)
    c, _ = fit(digits, seed=2, epochs=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_trains_only_on_given_indices(digits):
    idx = torch.nonzero(digits.train_y < 5).reshape(-1)
    seed_everything(0)
    model = create_model("cnn", 10, 1, 8, width=8, hidden=32)
    train_classifier(model, digits, idx, TrainConfig(**FAST), progress=False)
    pred = model(digits.test_x).argmax(1)
    assert (pred < 5).all()  # never saw classes 5..9


class NaNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(64, 10))

    def forward(self, x):
        return x.flatten(1) @ self.w * float("nan")


def test_nan_loss_raises_divergence(digits):
    with pytest.raises(DivergenceError, match="epoch 1, step 1"):
        train_classifier(NaNNet(), digits, None, TrainConfig(epochs=1, channels_last=False), progress=False)


def test_bf16_autocast_runs(digits):
    model, result = fit(digits, epochs=1, bf16=True)
    assert torch.isfinite(torch.tensor(result["history"][0]["loss"]))
    assert next(model.parameters()).dtype == torch.float32  # master weights stay fp32


@pytest.mark.parametrize("kw,match", [
    ({"epochs": 0}, "epochs"), ({"batch_size": 0}, "batch_size"), ({"lr": -1}, "lr"), ({"lr": float("nan")}, "lr"),
    ({"momentum": 1.0}, "momentum"), ({"weight_decay": -1}, "weight_decay"), ({"schedule": "step"}, "schedule"),
    ({"augment": "rotate"}, "augmentation"), ({"warmup_epochs": 5, "epochs": 5}, "warmup"),
])
def test_config_errors(kw, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**kw)


def test_config_round_trip_and_unknown_fields():
    cfg = TrainConfig(epochs=2, lr=0.3)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="recipe.optimizer is not a known field"):
        TrainConfig.from_dict({"epochs": 2, "optimizer": "adam"})


def test_lr_factor():
    assert lr_factor(0, 100, 0, "cosine") == 1.0
    assert abs(lr_factor(50, 100, 0, "cosine") - 0.5) < 1e-12
    assert lr_factor(0, 100, 10, "cosine") == 0.1 and lr_factor(9, 100, 10, "cosine") == 1.0
    assert lr_factor(70, 100, 0, "constant") == 1.0


def test_fit_gives_the_same_model_from_tensors_and_from_a_dataset(digits):
    """One training loop serves the benchmark (TensorLoader) and dualoptim.unlearn's Retrain (user datasets)."""
    from torch.utils.data import TensorDataset

    from dualoptim.vision.data import DatasetLoader, TensorLoader

    cfg = TrainConfig(epochs=2, batch_size=64, lr=0.05, channels_last=False)
    # standard strides: a 1-channel batch that is also channels_last-contiguous takes other conv kernels
    x, y = digits.train_x[:300].clone(memory_format=torch.contiguous_format), digits.train_y[:300]
    models = []
    for loader in (TensorLoader(x, y, 64), DatasetLoader(TensorDataset(x, y), "retain", 64, False, 0,
                                                         torch.device("cpu"), torch.float32)):
        seed_everything(0)
        models.append(create_model("cnn", 10, 1, 8, width=4, hidden=16))
        result = train.fit(models[-1], loader, cfg, progress=False)
        assert result["steps"] == 2 * 5 and not models[-1].training
    a, b = (m.state_dict() for m in models)
    assert all(torch.equal(a[k], b[k]) for k in a)
