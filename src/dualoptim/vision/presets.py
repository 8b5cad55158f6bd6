"""Hyper-parameter presets per (method, optimizer mode): the paper's CIFAR-10 settings and the offline default.

A preset gives the optimizer spec, the forget and retain learning rates, the budget (epochs or iterations)
and method options, for the ``shared`` baseline and for ``dual`` (DualOptim). ``resolve_preset`` picks the
entry for a dataset, method and optimizer spec; the CLI and :class:`~dualoptim.vision.unlearn.UnlearnConfig`
use it, and any explicit flag overrides it.

- ``cifar10-paper``: DualOptim paper, ResNet-18, CIFAR-10 10% random forget (reference table). All
  baselines SGD momentum 0.9, wd 5e-4, batch 128; SCRUB uses Adam. Entries the paper does not give
  (FT/GA/RL with DualOptim) are marked ``source="extrapolated"``.
- ``fashion-mnist-quick``: the offline default (Fashion-MNIST, 5,000-image stratified training subset, the
  ``cnn`` model trained to memorize it, 10% random forget), the paper's schedule shapes (epoch-mode methods
  10 epochs of forget pass then retain pass; SFRon 300 iterations); forget learning rates (shared SFRon: its
  alpha, with eta_f = eta_r as in the paper) chosen by ``benchmarks/tune_vision.py`` on validation seeds and a
  validation split, never the test set (docs/tuning.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..optim import OptimSpec, get_optimizer_info
from .methods import get_method_info

MODES = ("shared", "dual")


@dataclass(frozen=True)
class Preset:
    """One row of a preset table."""

    optim: str
    forget_lr: float
    retain_lr: float
    epochs: int | None = None
    iterations: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    source: str = "paper"


def _p(optim: str, forget_lr: float, retain_lr: float, **kw: Any) -> Preset:
    return Preset(optim, forget_lr, retain_lr, **kw)


PRESETS: dict[str, dict[str, dict[str, Preset]]] = {
    "cifar10-paper": {
        "ft": {"shared": _p("sgd", 0.01, 0.01, epochs=10),
               "dual": _p("adam+sgd", 1e-4, 0.01, epochs=10, source="extrapolated: FT has no forget step")},
        "ga": {"shared": _p("sgd", 5e-4, 5e-4, epochs=10),
               "dual": _p("adam+sgd", 1e-5, 5e-4, epochs=10, source="extrapolated: not in the paper")},
        "rl": {"shared": _p("sgd", 0.01, 0.01, epochs=10),
               "dual": _p("adam+sgd", 1e-4, 0.01, epochs=10, source="extrapolated: SalUn+DO's Adam lr scale")},
        "scrub": {"shared": _p("adam", 1e-4, 1e-4, epochs=10),
                  "dual": _p("adam+adam", 1.5e-4, 1e-4, epochs=10)},
        "salun": {"shared": _p("sgd", 0.018, 0.01, epochs=10, options={"ratio": 0.5}),
                  "dual": _p("adam+sgd", 1.3e-4, 0.01, epochs=10, options={"ratio": 0.5})},
        "sfron": {"shared": _p("sgd", 0.01, 0.01, iterations=1500, options={"alpha": 31.0, "t_in": 5}),
                  "dual": _p("adam+sgd", 1e-4, 0.01, iterations=1500, options={"alpha": 1.0, "t_in": 5})},
    },
    # Offline default (the quick bench: cnn width 16, 40 epochs on the 5k subset, training accuracy ~99.9%).
    # Budgets: epoch-mode methods 10 epochs (forget 500 + retain 4,500 images per epoch), SFRon 300 iterations
    # (300 retain + 60 forget steps). Searched on validation seeds 100-102 and a validation split of 5,000 unused
    # training images (benchmarks/tune_vision.py, docs/tuning.md), the same number of points per side; retain
    # lrs are the paper's; shared SFRon keeps eta_f = eta_r = 0.01 and its alpha is searched, as in the paper.
    "fashion-mnist-quick": {
        "ft": {"shared": _p("sgd", 0.01, 0.01, epochs=10, source="paper lr, budget scaled"),
               "dual": _p("adam+sgd", 1e-4, 0.01, epochs=10, source="FT has no forget step: same as shared")},
        "ga": {"shared": _p("sgd", 5e-4, 5e-4, epochs=10, source="paper lr, budget scaled; not searched"),
               "dual": _p("adam+sgd", 1e-5, 5e-4, epochs=10, source="not searched")},
        "rl": {"shared": _p("sgd", 6e-3, 0.01, epochs=10,
                            source="SalUn's searched lr at its paper's mask ratio 0.5 (same losses, no mask)"),
               "dual": _p("adam+sgd", 1.3e-3, 0.01, epochs=10, source="SalUn's searched lr (same losses, no mask)")},
        # SCRUB by its own paper's knobs (T x max-step epochs x eta_f, 18 points per side): T=4 with a max
        # step every epoch wins on both sides (gamma 1, alpha 0.5 as the DualOptim code).
        "scrub": {"shared": _p("adam", 4e-3, 1e-4, epochs=10, options={"T": 4.0},
                               source="searched (T 1/4 x msteps 3/10 x 1e-4..8e-3: validation Gap 2.89 at T=4, "
                                      "4e-3)"),
                  "dual": _p("adam+adam", 1e-3, 1e-4, epochs=10, options={"T": 4.0},
                             source="searched (T 1/4 x msteps 3/10 x 1.5e-4..2e-3: validation Gap 3.21 at T=4, 1e-3; "
                                    "1.2e-3 collapses on one seed)")},
        # SalUn by its paper's two knobs: eta_f, then the mask ratio (fifth search: 0.1..0.7 x the best two eta_f)
        "salun": {"shared": _p("sgd", 3.5e-3, 0.01, epochs=10, options={"ratio": 0.2},
                               source="searched (3e-4..0.018 incl. the paper's 0.018, ratio 0.1..0.7: validation "
                                      "Gap 8.09 at ratio 0.2, 3.5e-3; 8.1-8.8 elsewhere)"),
                  "dual": _p("adam+sgd", 1.3e-3, 0.01, epochs=10, options={"ratio": 0.1},
                             source="searched (1.3e-4..4e-3, ratio 0.1..0.7: validation Gap 2.63 at ratio 0.1, "
                                    "1.3e-3; 2.64 at 0.2, 2.90 at the paper's 0.5)")},
        "sfron": {"shared": _p("sgd", 0.01, 0.01, iterations=300, options={"alpha": 31.0, "t_in": 5},
                               source="paper's eta_f = eta_r = 0.01 and alpha 31: alpha 1..1000 searched, all give "
                                      "the same validation Gap (the clipped SGD forget step barely moves)"),
                  "dual": _p("adam+sgd", 3e-3, 0.01, iterations=300, options={"alpha": 1.0, "t_in": 5},
                             source="searched (3e-4..1e-2: validation Gap 1.00 at 3e-3)")},
    },
}

# The preset used when none is named: by the dataset of the original model (else the paper's CIFAR-10 one).
DATASET_PRESETS = {"fashion-mnist": "fashion-mnist-quick", "cifar10": "cifar10-paper"}
DEFAULT_PRESET = "cifar10-paper"


def list_presets() -> list[str]:
    """Preset table names."""
    return sorted(PRESETS)


def mode_of(optim: str) -> str:
    """``"dual"`` for decoupled states (``adam+sgd``), ``"shared"`` for one (``sgd``, ``...:decouple=none``)."""
    return OptimSpec.parse(optim).mode


def get_preset(name: str, method: str, mode: str) -> Preset:
    """The entry of preset ``name`` for ``method`` and ``mode`` (``shared``/``dual``)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; valid: {', '.join(list_presets())}")
    if mode not in MODES:
        raise ConfigError(f"unknown optimizer mode {mode!r}; valid: {', '.join(MODES)}")
    table = PRESETS[name]
    if method not in table:
        raise ConfigError(f"preset {name!r} has no entry for method {method!r}; it has {', '.join(sorted(table))}")
    return table[method][mode]


def resolve_preset(method: str, optim: str | None = None, *, dataset: str | None = None,
                   preset: str | None = None) -> dict[str, Any]:
    """UnlearnConfig fields from a preset: ``optim``, ``forget_lr``, ``retain_lr``, budget and method options.

    Args:
        method: method name.
        optim: optimizer spec (default: the preset's DualOptim spec for the method).
        dataset: dataset of the original model, selects the preset when ``preset`` is None.
        preset: preset name (``None``/``"auto"``: by dataset, else ``cifar10-paper``).

    A learning rate is taken from the entry whose optimizer for that phase has the same name (e.g. ``adam+sgd``
    gets the retain lr of the shared ``sgd`` entry); when no entry uses that optimizer the lr is left out
    and must be given explicitly.
    """
    name = DATASET_PRESETS.get(dataset or "", DEFAULT_PRESET) if preset in (None, "auto") else preset
    dual = get_preset(name, method, "dual")
    optim = optim or dual.optim
    want = OptimSpec.parse(optim).names
    for opt_name in want:  # an unknown name is the error to report, not a missing lr
        get_optimizer_info(opt_name)
    entry = get_preset(name, method, mode_of(optim))
    out: dict[str, Any] = {"optim": optim, "preset": name, "options": dict(entry.options)}
    if entry.epochs is not None:
        out["epochs"] = entry.epochs
    if entry.iterations is not None:
        out["iterations"] = entry.iterations
    candidates = [entry, get_preset(name, method, "shared" if entry is dual else "dual")]
    for idx, phase in enumerate(("forget_lr", "retain_lr")):
        for c in candidates:
            if OptimSpec.parse(c.optim).names[idx] == want[idx]:
                out[phase] = getattr(c, phase)
                break
    return out


# Method-agnostic DualOptim defaults (docs/defaults.md). Forget optimizer: the paper's Adam lr (1e-4, its
# range is 1e-4..1.5e-4) was used with ~350 forget steps (ResNet-18, CIFAR-10 10%: 35 batches x 10 epochs,
# SFRon 1500 / 5 = 300). Adam moves each weight by about lr per step, so on a smaller forget set (fewer steps)
# the default keeps the paper's total travel: lr = 1e-4 * 350 / forget_steps, between 1x and 10x of 1e-4.
# The retain (and SGD forget) default is the paper's pre-training lr of each family.
DEFAULT_LR = {"adam": 1e-4, "adamw": 1e-4, "adam-bf16": 1e-4, "adamw-bf16": 1e-4, "sgd": 0.01, "sgd-bf16": 0.01}
PAPER_FORGET_STEPS = 350
MAX_FORGET_LR_SCALE = 10.0


def default_lrs(method: str, optim: str, forget_steps: int | None = None) -> tuple[float, float]:
    """Untuned default (forget_lr, retain_lr) for ``method`` with optimizer spec ``optim`` (docs/defaults.md).

    With an Adam-family forget optimizer and ``forget_steps`` (the number of forget steps the run will take)
    the forget lr is scaled by ``PAPER_FORGET_STEPS / forget_steps``, clipped to [1, 10].
    """
    spec = OptimSpec.parse(optim)
    if spec.shared_state:  # the shared baseline: the paper's per-method learning rates (presets.cifar10-paper)
        fields = resolve_preset(get_method_info(method).name, optim, preset="cifar10-paper")
        if "forget_lr" not in fields or "retain_lr" not in fields:
            raise ConfigError(f"no default learning rates for {method} with the shared optimizer {optim!r}; pass "
                              "forget_lr= and retain_lr=")
        return fields["forget_lr"], fields["retain_lr"]
    f, r = spec.names
    if f not in DEFAULT_LR or r not in DEFAULT_LR:
        raise ConfigError(f"no default learning rates for {optim!r} (defaults exist for the optimizers "
                          f"{sorted(DEFAULT_LR)}); pass forget_lr= and retain_lr=")
    scale = 1.0
    if f.startswith("adam") and forget_steps:
        scale = min(max(PAPER_FORGET_STEPS / forget_steps, 1.0), MAX_FORGET_LR_SCALE)
    return DEFAULT_LR[f] * scale, DEFAULT_LR[r]

def resolve_lrs(method: str, optim: str, forget_lr: float | None, retain_lr: float | None, forget_steps: int,
                calibrating: bool) -> tuple[float, float, str]:
    """``(forget_lr, retain_lr, source)`` of a :func:`dualoptim.unlearn` run: given values win, missing ones are
    :func:`default_lrs`; a calibrated run (which probes the forget lr) takes the optimizer family's default where
    the method has no default for ``optim``."""
    source = "given" if forget_lr is not None and retain_lr is not None else "default (docs/defaults.md)"
    if forget_lr is None or retain_lr is None:
        try:
            d_forget, d_retain = default_lrs(method, optim, forget_steps)
        except ConfigError:
            spec = OptimSpec.parse(optim)
            if not (calibrating and spec.forget in DEFAULT_LR and spec.retain in DEFAULT_LR):
                raise
            d_forget, d_retain = DEFAULT_LR[spec.forget], DEFAULT_LR[spec.retain]
        forget_lr = d_forget if forget_lr is None else forget_lr
        retain_lr = d_retain if retain_lr is None else retain_lr
    return forget_lr, retain_lr, source
