"""Class-wise generative unlearning: the evaluation of a run and the Table-2/3 style benchmark.

``run_bench(preset)`` evaluates the original model and every (method, optimizer, forget class):
FA on images generated for the forgotten class, FD-classifier on images generated for the remaining
classes against real test images of those classes, each row stored in the results database
(experiment ``gen/<preset>``) with the sampler, steps, guidance and sample counts, plus a PNG grid per
run (original vs unlearned samples of every class, the forgotten class framed in red).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..optim import OptimSpec
from ..registry import Registry
from ..runner import Job, Outcome, Runner
from ..store import ResultsStore, run_key
from ..tables import Table, mean_std_cell
from .metrics import classifier_outputs, forget_accuracy, frechet_distance
from .sample import SamplerConfig, sample
from .unlearn import UnlearnConfig, unlearn_class

CLASS_NAMES = {"fashion-mnist": ("T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                                 "Bag", "Ankle boot")}

# ----------------------------------------------------------------------------------- evaluation

@dataclass(frozen=True)
class EvalConfig:
    """Sample counts and sampler of an evaluation (recorded with every result)."""

    fa_samples: int = 50
    fd_samples_per_class: int = 20
    fd_real_per_class: int = 100
    sampler: SamplerConfig = SamplerConfig()
    seed: int = 0

    def __post_init__(self) -> None:
        if self.fa_samples < 1 or self.fd_samples_per_class < 1 or self.fd_real_per_class < 2:
            raise ConfigError("fa_samples, fd_samples_per_class >= 1 and fd_real_per_class >= 2 are required")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "sampler": self.sampler.to_dict()}


def real_features(classifier, data, per_class: int) -> dict[int, torch.Tensor]:
    """Penultimate features of the first ``per_class`` test images of every class."""
    out = {}
    for k in range(data.num_classes):
        x = data.test_x[data.test_y == k][:per_class]
        out[k] = classifier_outputs(classifier, x)[1]
    return out


def evaluate_samples(classifier, samples: dict[int, torch.Tensor], real: dict[int, torch.Tensor], forget_class: int,
                     cfg: EvalConfig) -> dict[str, float]:
    """FA (forgotten class) and FD-classifier (remaining classes) from per-class generated images."""
    fa = forget_accuracy(classifier, samples[forget_class][:cfg.fa_samples], forget_class)
    others = [k for k in sorted(real) if k != forget_class]
    gen = torch.cat([samples[k][:cfg.fd_samples_per_class] for k in others])
    fd = frechet_distance(classifier_outputs(classifier, gen)[1], torch.cat([real[k] for k in others]))
    return {"FA": fa, "FD": fd}


def sample_classes(model, counts: dict[int, int], cfg: EvalConfig, progress: bool = False) -> dict[int, torch.Tensor]:
    """``counts[k]`` images of each class k (one batched sampler call)."""
    labels = torch.cat([torch.full((n,), k) for k, n in counts.items()])
    images = sample(model, labels, cfg.sampler, seed=cfg.seed, progress=progress)
    return {k: images[labels == k] for k in counts}


def eval_counts(num_classes: int, forget_class: int, cfg: EvalConfig) -> dict[int, int]:
    return {k: (cfg.fa_samples if k == forget_class else cfg.fd_samples_per_class) for k in range(num_classes)}


# ------------------------------------------------------------------------------------- grids

def save_grid(path: str | os.PathLike, before: dict[int, torch.Tensor], after: dict[int, torch.Tensor] | None,
              forget_class: int | None, per_row: int = 8, class_names: tuple[str, ...] | None = None,
              title: str = "") -> Path:
    """A PNG of samples per class (rows), original left and unlearned right, the forgotten row framed in red."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from ..io import atomic_write_bytes

    panels = [("original", before)] + ([("after unlearning", after)] if after is not None else [])
    classes = sorted(before)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels) + 0.8, 0.42 * len(classes) + 0.8),
                             squeeze=False)
    for ax, (name, imgs) in zip(axes[0], panels):
        rows = []
        for k in classes:
            x = (imgs[k][:per_row, 0].clamp(-1, 1) + 1) / 2
            if len(x) < per_row:
                x = torch.cat([x, torch.ones(per_row - len(x), *x.shape[1:])])
            rows.append(torch.cat(list(torch.nn.functional.pad(x, (1, 1, 1, 1), value=1.0)), dim=1))
        canvas = torch.cat(rows, dim=0)
        side = canvas.shape[0] // len(classes)
        ax.imshow(canvas.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([side * (i + 0.5) for i in range(len(classes))])
        ax.set_yticklabels([class_names[k] if class_names else str(k) for k in classes], fontsize=7)
        if forget_class is not None:
            r = classes.index(forget_class)
            ax.add_patch(Rectangle((-0.5, r * side - 0.5), canvas.shape[1], side, fill=False, edgecolor="red", lw=2))
            ax.get_yticklabels()[r].set_color("red")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


# ------------------------------------------------------------------------------------ bench

@dataclass(frozen=True)
class BenchPreset:
    """A benchmark: forget classes x methods x optimizer specs, with one schedule and one evaluation."""

    forget_classes: tuple[int, ...]
    methods: tuple[str, ...] = ("salun", "sfron")
    optimizers: tuple[str, ...] = ("adam", "adam+adam")
    iterations: int = 60
    batch_size: int = 32
    eval: EvalConfig = EvalConfig()


# Benchmark presets, by name: zero-argument functions returning a fresh BenchPreset (the same form as
# vision.bench_presets.BENCH_PRESETS and llm.bench.BENCH_PRESETS).

def quick() -> BenchPreset:
    """<= 20 min on 2 shared CPU cores with the cached default DDPM (measured in docs/benchmarks.md).

    Guidance 0.5, not the papers' 2.0: on the small CPU DDPM, w = 2 over-saturates samples (classifier
    accuracy on generated images 32% vs 55% at w = 0.5, 28% at w = 4; docs/benchmarks.md).
    """
    return BenchPreset(forget_classes=(1, 8), iterations=50, batch_size=32,
                       eval=EvalConfig(fa_samples=32, fd_samples_per_class=16, fd_real_per_class=100,
                                       sampler=SamplerConfig(steps=50, guidance=0.5)))


def full() -> BenchPreset:
    """Every class forgotten in turn, larger evaluation samples."""
    return BenchPreset(forget_classes=tuple(range(10)), iterations=150, batch_size=64,
                       eval=EvalConfig(fa_samples=200, fd_samples_per_class=100, fd_real_per_class=500,
                                       sampler=SamplerConfig(steps=50, guidance=0.5)))


BENCH_PRESETS: Registry[Callable[[], BenchPreset]] = Registry("benchmark preset", {"quick": quick, "full": full})


def run_bench(preset: str | BenchPreset, *, dataset: str = "fashion-mnist", model_dir: str | os.PathLike,
              db: str | os.PathLike = "runs/results.db", out_dir: str | os.PathLike = "runs/gen/bench",
              data=None, classifier=None, experiment: str | None = None, progress: bool = True,
              log=print) -> list[dict[str, Any]]:
    """Run (or resume) a benchmark; returns the stored rows of its experiment.

    Finished runs are found in the database by content key and skipped, so an interrupted bench
    resumes where it stopped and a rerun only prints the table.
    """
    from .train import get_or_train_classifier, load_ddpm

    name = preset.lower() if isinstance(preset, str) else "custom"
    p = BENCH_PRESETS.get(preset)() if isinstance(preset, str) else preset
    experiment = experiment or f"gen/{name}"
    model_dir = Path(model_dir)
    original, meta = load_ddpm(model_dir)
    if data is None:
        from .model import load_generation_data

        data = load_generation_data(meta.get("dataset", dataset), original.config.image_size,
                                    train_subset=meta.get("train_subset"))
    if classifier is None:
        classifier, _ = get_or_train_classifier(data, progress=progress)
    nc = original.config.num_classes
    for c in p.forget_classes:
        if not 0 <= c < nc:
            raise ConfigError(f"forget class {c} out of range [0, {nc - 1}]")
    ev = p.eval
    common = {"experiment": experiment, "model": model_dir.name, "eval": ev.to_dict(), "dataset": data.name}
    out_dir = Path(out_dir)
    real = real_features(classifier, data, ev.fd_real_per_class)
    names = CLASS_NAMES.get(data.name)
    # the original model: one sample set covers every forget class, drawn only if some run needs it
    before: dict[str, Any] = {}

    def original_samples() -> dict[int, torch.Tensor]:
        if "samples" not in before:
            t0 = time.perf_counter()
            counts = {k: max(ev.fa_samples, ev.fd_samples_per_class) if k in p.forget_classes else
                      ev.fd_samples_per_class for k in range(nc)}
            before["samples"] = sample_classes(original, counts, ev, progress=progress)
            before["sample_s"] = time.perf_counter() - t0
        return before["samples"]

    def original_job(c: int) -> Job:
        def compute() -> Outcome:
            metrics = evaluate_samples(classifier, original_samples(), real, c, ev)
            return Outcome(metrics, timings={"sample_s": before["sample_s"]}, summary=_summary(metrics))

        return Job(run_key(**common, method="original", optimizer="-", forget_class=c), trial=c, method="original",
                   optimizer="-", compute=compute, params={**common, "forget_class": c}, label=f"original class {c}")

    def unlearn_job(ucfg: UnlearnConfig) -> Job:
        c = ucfg.forget_class

        def compute() -> Outcome:
            model, _ = load_ddpm(model_dir)
            info = unlearn_class(model, data, ucfg, progress=progress)
            t0 = time.perf_counter()
            after = sample_classes(model, eval_counts(nc, c, ev), ev, progress=progress)
            sample_s = time.perf_counter() - t0
            metrics = evaluate_samples(classifier, after, real, c, ev)
            grid = out_dir / f"grid_{ucfg.method}_{ucfg.optimizer.replace('+', '-')}_class{c}.png"
            save_grid(grid, original_samples(), after, c, class_names=names,
                      title=f"{ucfg.method} / {ucfg.optimizer}: forget class {c} ({names[c] if names else c})")
            return Outcome(metrics, timings={"unlearn_s": info["seconds"], "sample_s": sample_s},
                           extra={"grid": str(grid), "steps": info["steps"]}, summary=_summary(metrics))

        return Job(run_key(**common, unlearn=ucfg.to_dict()), trial=c, method=ucfg.method, optimizer=ucfg.optimizer,
                   compute=compute, params={**common, "unlearn": ucfg.to_dict(), "forget_class": c},
                   label=f"{ucfg.method} {ucfg.optimizer} forget {c}")

    runs = [UnlearnConfig(method=method, optimizer=spec, forget_class=c, iterations=p.iterations,
                          batch_size=p.batch_size) for method in p.methods for spec in p.optimizers
            for c in p.forget_classes]
    with ResultsStore(db) as store:
        runner = Runner(store, experiment, len(p.forget_classes) + len(runs), log)
        for c in p.forget_classes:
            runner.run(original_job(c))
        for ucfg in runs:
            runner.run(unlearn_job(ucfg))
        return store.rows(experiment)


def _summary(metrics: dict[str, float]) -> str:
    return f"FA {metrics['FA']:.1f}%  FD {metrics['FD']:.2f}"


def bench_table(rows: list[dict[str, Any]]) -> Table:
    """The Table-2/3 layout: per forgotten class ``FA / FD``, then mean ± std over classes (diverged runs: "diverged",
    left out of the means)."""
    classes = sorted({r["trial"] for r in rows})
    groups: dict[tuple[str, str], dict[int, dict[str, float]]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["optimizer"]), {})[r["trial"]] = r["metrics"]
    header = ["method", "optimizer"] + [f"class {c} FA / FD" for c in classes] + ["FA mean ± std", "FD mean ± std"]
    table = Table(header)
    for (method, spec), per in groups.items():
        cells = [("diverged" if not per[c] else f"{per[c]['FA']:.1f} / {per[c]['FD']:.2f}") if c in per else "-"
                 for c in classes]
        fa, fd = ([per[c][m] for c in classes if per.get(c)] for m in ("FA", "FD"))
        label = f"{spec} ({OptimSpec.parse(spec).label()})" if spec != "-" else "-"
        table.rows.append([method, label] + cells + [mean_std_cell(fa, ".1f"), mean_std_cell(fd, ".2f")])
    return table


__all__ = ["BENCH_PRESETS", "BenchPreset", "EvalConfig", "bench_table", "evaluate_samples", "real_features",
           "run_bench", "sample_classes", "save_grid"]
