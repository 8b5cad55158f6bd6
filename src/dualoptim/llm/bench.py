"""``llm bench``: methods x schemes on the prepared synthetic benchmark, Table-4/5 style.

Every run is stored in the shared results database (``dualoptim.store.ResultsStore``,
experiment ``llm/<preset>/<split>``) under a content key, so a rerun skips finished runs.
Rows ``Original`` (the fine-tuned model before unlearning) and ``Retain`` (trained without the
forget split) are evaluated in the same way as the unlearned models.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from ..registry import Registry
from ..runner import Job, Outcome, Runner
from ..store import ResultsStore, run_key
from ..tables import Table, mean_cell, mean_std_cell
from .data import FORGET_SPLITS, RETAIN_OF, load_benchmark
from .evaluate import EvalConfig, evaluate, load_encoder
from .methods import PAPER_METHODS
from .model import load_model
from .prepare import PrepareConfig, model_paths
from .trainer import SCHEMES, QAData, UnlearnConfig, run_llm_unlearning

BENCH_VERSION = 2  # 2: per-token loss means, KL over the sequence (issue 16)


@dataclass(frozen=True)
class BenchPreset:
    """What a preset runs."""

    splits: tuple[str, ...]
    methods: tuple[str, ...]
    schemes: tuple[str, ...] = SCHEMES
    seeds: tuple[int, ...] = (0,)
    epochs: int = 5
    batch_size: int = 16
    forget_lr: float = 1e-4
    retain_lr: float = 1e-4
    # per-method step size (forget = retain), the same for every scheme (empty: forget_lr/retain_lr for all)
    method_lr: tuple[tuple[str, float], ...] = ()


# Benchmark presets, by name: zero-argument functions returning a fresh BenchPreset (the same form as
# vision.bench_presets.BENCH_PRESETS and generation.bench.BENCH_PRESETS).

def quick() -> BenchPreset:
    """ME+GD and IDK+AP on forget10, one seed."""
    return BenchPreset(splits=("forget10",), methods=("me+gd", "idk+ap"))


def full() -> BenchPreset:
    """The paper's five methods on forget01/05/10, three seeds."""
    return BenchPreset(splits=FORGET_SPLITS, methods=PAPER_METHODS, seeds=(0, 1, 2))


BENCH_PRESETS: Registry[Callable[[], BenchPreset]] = Registry("benchmark preset", {"quick": quick, "full": full})


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_bench(preset: str | BenchPreset, prep: PrepareConfig, db: str = "runs/results.db",
              eval_cfg: EvalConfig | None = None, log: Any = print, **overrides: Any) -> list[dict[str, Any]]:
    """Run (or resume) a preset; returns the stored rows of its experiments."""
    name = preset.lower() if isinstance(preset, str) else "custom"  # overrides (more seeds ...) keep the name
    if isinstance(preset, str):
        preset = BENCH_PRESETS.get(preset)()
    preset = replace(preset, **overrides) if overrides else preset
    paths = model_paths(replace(prep, forget_splits=preset.splits))
    data = load_benchmark(prep.data)
    encoder = load_encoder((eval_cfg or EvalConfig()).encoder)
    runs = [UnlearnConfig(method=method, scheme=scheme, epochs=preset.epochs, batch_size=preset.batch_size,
                          forget_lr=dict(preset.method_lr).get(method) or preset.forget_lr,
                          retain_lr=dict(preset.method_lr).get(method) or preset.retain_lr, seed=seed)
            for method in preset.methods for scheme in preset.schemes for seed in preset.seeds]

    def run_split(store: ResultsStore, split: str) -> list[dict[str, Any]]:
        ecfg = replace(eval_cfg or EvalConfig(), forget_split=split)
        experiment = f"llm/{name}/{split}"
        base = {"v": BENCH_VERSION, "experiment": experiment, "models": str(paths["full"]), "split": split,
                "eval": asdict(ecfg), "encoder": encoder.label if encoder else "none"}
        forget_hash = _hash(data[split])

        def reference(row: str, path: Any, retain_tr: list[float] | None) -> Job:
            def compute() -> Outcome:
                model, tok, template = load_model(path)
                t0 = time.perf_counter()
                ev = evaluate(model, tok, template, data, ecfg, encoder, retain_tr)
                extra = {"forget_tr_raw": ev["forget_tr_raw"]} if retain_tr is None else {}
                return Outcome(ev["metrics"], timings={"eval_s": time.perf_counter() - t0},
                               extra={**extra, "note": ev["metric_note"]})

            return Job(run_key(**base, row=row), trial=0, method=row, optimizer="-", compute=compute, params=base,
                       forget_hash=forget_hash, label=f"{split} {row} model")

        def unlearn_job(cfg: UnlearnConfig, retain_tr: list[float] | None) -> Job:
            def compute() -> Outcome:
                model, tok, template = load_model(paths["full"])
                forget = QAData(tok, data[split], data.get("idk"), template, seed=cfg.seed)
                retain = QAData(tok, data[RETAIN_OF[split]], data.get("idk"), template, seed=cfg.seed + 1)
                res = run_llm_unlearning(model, forget, retain, cfg)
                t0 = time.perf_counter()
                ev = evaluate(model, tok, template, data, ecfg, encoder, retain_tr)
                timings = {"unlearn_s": res["seconds"], "eval_s": time.perf_counter() - t0,
                           **{k: res[k] for k in ("optimizer_state_mib", "param_mib", "max_rss_mib", "peak_cuda_mib")
                              if k in res}}
                return Outcome(ev["metrics"], timings=timings, series={"": res["curve"]},
                               extra={"note": ev["metric_note"], "samples": ev["samples"]})

            return Job(run_key(**base, unlearn=asdict(cfg)), trial=cfg.seed, method=cfg.method, optimizer=cfg.spec,
                       compute=compute, params={**base, "unlearn": asdict(cfg), "spec": cfg.spec},
                       forget_hash=forget_hash, label=f"{split} {cfg.method} {cfg.scheme} seed {cfg.seed}")

        runner = Runner(store, experiment, 2 + len(runs), log, name="bench")
        retain = reference("Retain", paths[RETAIN_OF[split]], None)
        runner.run(retain)
        retain_tr = store.get(retain.key)["extra"].get("forget_tr_raw")  # None if the Retain model diverged
        runner.run(reference("Original", paths["full"], retain_tr))
        for cfg in runs:
            runner.run(unlearn_job(cfg, retain_tr))
        return store.rows(experiment)

    with ResultsStore(db) as store:
        return [row for split in preset.splits for row in run_split(store, split)]


def format_table(rows: list[dict[str, Any]], metrics: tuple[str, ...] = ("MC*", "FE*", "Avg*", "FQ_ks")) -> Table:
    """One row per (split, method, scheme, lr): mean ± std over seeds, time and optimizer memory (diverged runs
    counted in ``n``, left out of the means)."""
    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        u = r["params"].get("unlearn", {})
        lr = u.get("forget_lr")
        groups.setdefault((r["experiment"].split("/")[-1], r["method"], u.get("scheme", "-"),
                           f"{lr:g}" if lr else "-"), []).append(r)
    table = Table(["split", "method", "scheme", "lr", "n", *metrics, "unlearn s", "opt. state MiB"])
    for (split, method, scheme, lr), rs in groups.items():
        n = f"{len(rs)}" + (f" ({d} diverged)" if (d := sum("diverged" in r["extra"] for r in rs)) else "")
        cells = [mean_std_cell([r["metrics"][m] for r in rs if r["metrics"].get(m) is not None],
                               ".1e" if m.startswith("FQ") else ".3f", std_of_one=False)  # KS p-values span decades
                 for m in metrics]
        times = [mean_cell([r["timings"][k] for r in rs if k in r["timings"]], fmt)
                 for k, fmt in (("unlearn_s", ".0f"), ("optimizer_state_mib", ".1f"))]
        table.rows.append([split, method, scheme, lr, n, *cells, *times])
    return table
