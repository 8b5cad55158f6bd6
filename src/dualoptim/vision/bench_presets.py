"""Named benchmarks (``dualoptim bench --preset NAME``).

- ``quick`` -- the README's main job: Fashion-MNIST (5,000-image stratified training subset, full
  test set), the ``cnn`` model trained 40 epochs so that it memorizes (training accuracy ~99.9%, as the
  paper's original does), 10% random forget, 5 trials (seeds 0-4, each with its own Retrain), Retrain,
  Original, SFRon, SalUn, SCRUB each with the shared optimizer and with DualOptim, plus ``sgd+sgd``
  controls for SalUn and SFRon (decoupled states without Adam, the shared side's hyper-parameters).
  Sized for <= 15 minutes on 2 idle CPU cores from a cold cache. ``quick-figures``: the same with the
  process curves and gradient statistics (Figures 1-4), ~60% more CPU per run.
- ``quick-class`` -- the same with one class forgotten (``class:1``; Retrain FA ~ 0) and the same presets.
- ``ablation-optimizers`` / ``ablation-moments`` -- the paper's Tables 6/18/19 (forget+retain optimizer
  pairs) and Table 17 (``adam+adam:decouple=m|v|mv|none``) in the quick regime, 3 trials.
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

from ..optim import OptimSpec
from ..registry import Registry
from .bench import BenchConfig, RunSpec
from .methods import get_method_info
from .presets import PRESETS, mode_of
from .report import row_label

QUICK_METHODS = ("sfron", "salun", "scrub")
ALL_METHODS = ("ft", "ga", "rl", "scrub", "salun", "sfron")
CONTROL_METHODS = ("salun", "sfron")  # get an sgd+sgd row: decoupling without Adam (paper Table 6)
# The quick regime: a stratified 5k subset trained 40 epochs (SGD 0.1 cosine, no augmentation) reaches ~99.9%
# training accuracy, so the original memorizes its forget set and Original differs from Retrain (docs/results.md).
QUICK_REGIME = {"train_subset": 5000, "recipe": {"epochs": 40}}
ADAM_RETAIN_LR = 1e-4  # retain lr of an Adam retain phase where the preset has none (SCRUB's, the paper's)


def _pairs(methods: tuple[str, ...], controls: tuple[str, ...] = (), **config) -> list[RunSpec]:
    """Each method with its paper shared optimizer and its DualOptim spec (and an ``sgd+sgd`` control for
    ``controls``: the shared side's hyper-parameters with decoupled SGD states)."""
    runs = []
    for m in methods:
        info = get_method_info(m)
        runs += [RunSpec(m, info.shared_optim, dict(config)), RunSpec(m, info.dual_optim, dict(config))]
        if m in controls:
            runs.append(_run(m, "sgd+sgd", **config))
    return runs


def _run(method: str, optim: str, preset: str = "fashion-mnist-quick", **config) -> RunSpec:
    """A row for any forget+retain pair: method options (SFRon's alpha, SalUn's mask ratio) follow the forget
    optimizer's side of the preset (alpha tuned with SGD, 1 with Adam, as in the paper; each side's searched
    ratio), and an Adam retain phase the preset lacks gets :data:`ADAM_RETAIN_LR`."""
    spec = OptimSpec.parse(optim)
    side = "dual" if spec.forget == "adam" else "shared"
    entry = PRESETS[preset][method][side]
    config = dict(config)
    config["options"] = {**entry.options, **config.get("options", {})}
    if spec.retain == "adam" and method != "scrub":
        config.setdefault("retain_lr", ADAM_RETAIN_LR)
    return RunSpec(method, optim, config)


def _fmnist(name: str, description: str, **kw) -> BenchConfig:
    # The dataset's default model and recipe (docs/benchmarks.md): cnn width 16, SGD lr 0.1 cosine, 5 epochs
    # on the full set (subset presets pass QUICK_REGIME).
    base = dict(dataset="fashion-mnist", model="cnn", model_options={"width": 16}, recipe={"epochs": 5},
                unlearn_preset="fashion-mnist-quick")
    return BenchConfig(name=name, description=description, **{**base, **kw})


def quick() -> BenchConfig:
    # No process curves / gradient statistics here: they cost ~60% more CPU per run (measured: 18.6 vs 11.5 s),
    # which the 15-minute budget cannot afford; `quick-figures` adds them (same rows, same numbers).
    return _fmnist("quick", "Fashion-MNIST 5k subset, cnn trained to memorize (40 epochs), 10% random forget, "
                   "5 trials: SFRon/SalUn/SCRUB x {shared, DualOptim} + sgd+sgd controls",
                   **QUICK_REGIME, runs=_pairs(QUICK_METHODS, CONTROL_METHODS), svc_samples=2000)


def quick_figures() -> BenchConfig:
    """``quick`` plus the paper's figures: process curves (Fig. 1/2) and gradient norms / cosine (Fig. 3/4)."""
    cfg = quick()
    cfg.name, cfg.description = "quick-figures", cfg.description + "; process curves and gradient statistics"
    cfg.eval_every, cfg.track_grads, cfg.curve_samples = 60, True, 1000
    return cfg


def quick_class() -> BenchConfig:
    return _fmnist("quick-class", "quick with one class forgotten (class 1): the class-wise scenario, same presets",
                   **QUICK_REGIME, forget="class:1", runs=_pairs(QUICK_METHODS, CONTROL_METHODS),
                   svc_samples=2000)


ABLATION_PAIRS = ("sgd", "adam", "sgd+sgd", "adam+sgd", "sgd+adam", "adam+adam")


def ablation_optimizers() -> BenchConfig:
    """Paper Tables 6/18/19: SalUn and SFRon with each forget+retain pair of {SGD, Adam} and both shared states."""
    runs = [_run(m, optim) for m in ("salun", "sfron") for optim in ABLATION_PAIRS]
    return _fmnist("ablation-optimizers", "forget/retain optimizer pairs (paper Tables 6, 18, 19), SalUn and SFRon, "
                   "quick regime, 3 trials", **QUICK_REGIME, runs=runs, seeds=[0, 1, 2], svc_samples=2000)


def ablation_moments() -> BenchConfig:
    """Paper Table 17: which Adam moments are kept per phase (``decouple=none`` is one shared Adam state)."""
    # one forget lr per method (its DualOptim preset's) for all four variants: only the decoupling changes
    runs = [_run(m, f"adam+adam:decouple={d}", forget_lr=PRESETS["fashion-mnist-quick"][m]["dual"].forget_lr)
            for m in ("scrub", "salun") for d in ("none", "m", "v", "mv")]
    return _fmnist("ablation-moments", "adam+adam with decoupled m / v / both / neither (paper Table 17), SCRUB "
                   "and SalUn, quick regime, 3 trials", **QUICK_REGIME, runs=runs, seeds=[0, 1, 2],
                   svc_samples=2000)


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
                   "shared vs DualOptim, 3 trials, quick regime", **QUICK_REGIME, runs=runs,
                   seeds=[0, 1, 2], sweep="forget_lr", svc_samples=2000)


def smoke() -> BenchConfig:
    return BenchConfig(name="smoke", description="seconds-long check on scikit-learn digits", dataset="digits",
                       model="cnn", model_options={"width": 8, "hidden": 32}, recipe={"epochs": 6, "lr": 0.05},
                       unlearn_preset="fashion-mnist-quick", seeds=[0, 1],
                       runs=[RunSpec("salun", "sgd", {"epochs": 1}), RunSpec("salun", "adam+sgd", {"epochs": 1}),
                             RunSpec("sfron", "adam+sgd", {"iterations": 10})],
                       eval_every=5, track_grads=True, curve_samples=200)


# Benchmark presets, by name: zero-argument functions returning a fresh BenchConfig (the same form as
# generation.bench.BENCH_PRESETS and llm.bench.BENCH_PRESETS).
BENCH_PRESETS: Registry[Callable[[], BenchConfig]] = Registry("benchmark preset", {
    "quick": quick, "quick-figures": quick_figures, "quick-class": quick_class,
    "ablation-optimizers": ablation_optimizers, "ablation-moments": ablation_moments,
    "offline-full": offline_full, "offline-full-50": offline_full_50,
    "paper-cifar10": paper_cifar10, "sensitivity": sensitivity, "smoke": smoke,
})
list_bench_presets = BENCH_PRESETS.names  # names accepted by ``dualoptim bench --preset`` (sorted)


def get_bench_preset(name: str) -> BenchConfig:
    """A fresh :class:`BenchConfig` for preset ``name``; :class:`~dualoptim.errors.ConfigError` listing the
    valid names if unknown."""
    return BENCH_PRESETS.get(name)()
