"""Named benchmarks (``dualoptim bench --preset NAME``).

- ``quick`` -- the README's main job: Fashion-MNIST (10,000-image stratified training subset,
  full test set), the ``cnn`` model, 10% random forget, 5 trials (seeds 0-4), Retrain + SFRon,
  SalUn, SCRUB each with the shared optimizer and with DualOptim; process curves and gradient
  statistics recorded. Sized for <= 15 minutes on 2 CPU cores from a cold cache.
- ``offline-full`` / ``offline-full-50`` -- all six methods on the full Fashion-MNIST training
  set, 10% / 50% random forget.
- ``paper-cifar10`` -- the paper's CIFAR-10 / ResNet-18 settings (200-epoch original and
  Retrain; for GPU users; CIFAR-10 must be available locally or downloadable).
- ``sensitivity`` -- Gap and Std versus the forget learning rate over a 100x grid centred on each side's
  tuned value, SalUn and SFRon with and without DualOptim (the paper's claim that DualOptim removes
  sensitivity).
- ``smoke`` -- a seconds-long run on scikit-learn's digits (tests, first try-out).

Learning rates and budgets come from :mod:`dualoptim.vision.presets` (``unlearn_preset``);
``runs[i].config`` overrides them.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import ConfigError
from .bench import BenchConfig, RunSpec
from .methods import get_method_info
from .presets import PRESETS, mode_of
from .report import row_label

QUICK_METHODS = ("sfron", "salun", "scrub")
ALL_METHODS = ("ft", "ga", "rl", "scrub", "salun", "sfron")


def _pairs(methods: tuple[str, ...], **config) -> list[RunSpec]:
    """Each method with its paper shared optimizer and its DualOptim spec."""
    runs = []
    for m in methods:
        info = get_method_info(m)
        runs += [RunSpec(m, info.shared_optim, dict(config)), RunSpec(m, info.dual_optim, dict(config))]
    return runs


def _fmnist(name: str, description: str, **kw) -> BenchConfig:
    # The dataset's default model and recipe (docs/benchmarks.md): cnn width 16, SGD lr 0.1 cosine, 5 epochs
    # on the full set; 10 on the 10k subset (6x fewer images per epoch, so more passes to converge).
    epochs = 10 if kw.get("train_subset") else 5
    base = dict(dataset="fashion-mnist", model="cnn", model_options={"width": 16}, recipe={"epochs": epochs},
                unlearn_preset="fashion-mnist-quick")
    return BenchConfig(name=name, description=description, **{**base, **kw})


def quick() -> BenchConfig:
    return _fmnist("quick", "Fashion-MNIST 10k subset, cnn, 10% random forget, 5 trials: SFRon/SalUn/SCRUB x "
                   "{shared, DualOptim}", train_subset=10_000, runs=_pairs(QUICK_METHODS), eval_every=40,
                   track_grads=True, curve_samples=1000, svc_samples=2000)


def offline_full() -> BenchConfig:
    return _fmnist("offline-full", "full Fashion-MNIST, cnn, 10% random forget, 5 trials, all six methods",
                   runs=_pairs(ALL_METHODS), forget="random:0.1", svc_samples=5000)


def offline_full_50() -> BenchConfig:
    return _fmnist("offline-full-50", "full Fashion-MNIST, cnn, 50% random forget, 5 trials, all six methods",
                   runs=_pairs(ALL_METHODS), forget="random:0.5", svc_samples=5000)


def paper_cifar10() -> BenchConfig:
    return BenchConfig(name="paper-cifar10", description="the paper's CIFAR-10 / ResNet-18 setting (GPU)",
                       dataset="cifar10", model="resnet18", recipe={"epochs": 200, "lr": 0.1},
                       unlearn_preset="cifar10-paper", runs=_pairs(ALL_METHODS), forget="random:0.1")


SENSITIVITY_SCALES = (0.1, 0.3, 1.0, 3.0, 10.0)  # x the preset's tuned forget lr: a 100x grid around it


def sensitivity() -> BenchConfig:
    """Each side's grid is centred on its own tuned forget lr (``fashion-mnist-quick``), so the shared
    baseline and DualOptim are both at their best in the middle and the curves compare how fast each degrades."""
    runs = []
    for method in ("salun", "sfron"):
        info = get_method_info(method)
        for optim in (info.shared_optim, info.dual_optim):
            tuned = PRESETS["fashion-mnist-quick"][method][mode_of(optim)].forget_lr
            for scale in SENSITIVITY_SCALES:
                lr = float(f"{tuned * scale:.3g}")
                label = f"{row_label(method, optim)} lr_f={lr:g}"
                runs.append(RunSpec(method, optim, {"forget_lr": lr}, label=label))
    return _fmnist("sensitivity", "Gap/Std vs forget lr (100x grid around each side's tuned lr), SalUn and SFRon, "
                   "shared vs DualOptim, 3 trials, Fashion-MNIST 10k subset", train_subset=10_000, runs=runs,
                   seeds=[0, 1, 2], sweep="forget_lr", svc_samples=2000)


def smoke() -> BenchConfig:
    return BenchConfig(name="smoke", description="seconds-long check on scikit-learn digits", dataset="digits",
                       model="cnn", model_options={"width": 8, "hidden": 32}, recipe={"epochs": 6, "lr": 0.05},
                       unlearn_preset="fashion-mnist-quick", seeds=[0, 1],
                       runs=[RunSpec("salun", "sgd", {"epochs": 1}), RunSpec("salun", "adam+sgd", {"epochs": 1}),
                             RunSpec("sfron", "adam+sgd", {"iterations": 10})],
                       eval_every=5, track_grads=True, curve_samples=200)


_PRESETS: dict[str, Callable[[], BenchConfig]] = {
    "quick": quick, "offline-full": offline_full, "offline-full-50": offline_full_50,
    "paper-cifar10": paper_cifar10, "sensitivity": sensitivity, "smoke": smoke,
}


def list_bench_presets() -> list[str]:
    """Names accepted by ``--preset``."""
    return list(_PRESETS)


def get_bench_preset(name: str) -> BenchConfig:
    """A fresh :class:`BenchConfig` for preset ``name``."""
    try:
        return _PRESETS[name]()
    except KeyError:
        raise ConfigError(f"unknown benchmark preset {name!r}; valid: {', '.join(_PRESETS)}") from None
