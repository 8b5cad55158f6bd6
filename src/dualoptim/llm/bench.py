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
from dataclasses import asdict, dataclass, replace
from typing import Any

from ..errors import ConfigError
from ..stats import mean_std
from ..store import ResultsStore, run_key
from .data import RETAIN_OF, load_benchmark
from .evaluate import EvalConfig, evaluate, load_encoder
from .model import load_model
from .prepare import PrepareConfig, model_paths
from .trainer import SCHEMES, QAData, UnlearnConfig, unlearn

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


PRESETS = {
    "quick": BenchPreset(splits=("forget10",), methods=("me+gd", "idk+ap")),
    "full": BenchPreset(splits=("forget01", "forget05", "forget10"),
                        methods=("ga+gd", "npo+gd", "me+gd", "dpo+gd", "idk+ap"), seeds=(0, 1, 2)),
}


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_bench(preset: str | BenchPreset, prep: PrepareConfig, db: str = "runs/results.db",
              eval_cfg: EvalConfig | None = None, log: Any = print, **overrides: Any) -> list[dict[str, Any]]:
    """Run (or resume) a preset; returns the stored rows of its experiments."""
    name = preset if isinstance(preset, str) else "custom"  # overrides (more seeds, fewer methods) keep the name
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
        preset = PRESETS[preset]
    preset = replace(preset, **overrides) if overrides else preset
    paths = model_paths(replace(prep, forget_splits=preset.splits))
    data = load_benchmark(prep.data)
    encoder = load_encoder((eval_cfg or EvalConfig()).encoder)
    store = ResultsStore(db)
    rows: list[dict[str, Any]] = []
    for split in preset.splits:
        ecfg = replace(eval_cfg or EvalConfig(), forget_split=split)
        experiment = f"llm/{name}/{split}"
        base = {"v": BENCH_VERSION, "experiment": experiment, "models": str(paths["full"]), "split": split,
                "eval": asdict(ecfg), "encoder": encoder.label if encoder else "none"}
        forget_hash = _hash(data[split])

        def evaluate_model(path: Any, retain_tr: list[float] | None, ecfg: EvalConfig = ecfg) -> dict[str, Any]:
            model, tok, template = load_model(path)
            t0 = time.perf_counter()
            ev = evaluate(model, tok, template, data, ecfg, encoder, retain_tr)
            ev["eval_seconds"] = time.perf_counter() - t0
            return ev

        ref_key = run_key(**base, row="Retain")
        if not store.has(ref_key):
            log(f"[bench] {split}: evaluating the retain model")
            ev = evaluate_model(paths[RETAIN_OF[split]], None)
            store.put(ref_key, experiment=experiment, trial=0, method="Retain", optimizer="-", metrics=ev["metrics"],
                      params=base, forget_hash=forget_hash, timings={"eval_s": ev["eval_seconds"]},
                      extra={"forget_tr_raw": ev["forget_tr_raw"], "note": ev["metric_note"]})
        retain_tr = store.get(ref_key)["extra"]["forget_tr_raw"]
        orig_key = run_key(**base, row="Original")
        if not store.has(orig_key):
            log(f"[bench] {split}: evaluating the original (fine-tuned) model")
            ev = evaluate_model(paths["full"], retain_tr)
            store.put(orig_key, experiment=experiment, trial=0, method="Original", optimizer="-",
                      metrics=ev["metrics"], params=base, forget_hash=forget_hash,
                      timings={"eval_s": ev["eval_seconds"]}, extra={"note": ev["metric_note"]})
        for method in preset.methods:
            for scheme in preset.schemes:
                for seed in preset.seeds:
                    lr = dict(preset.method_lr).get(method)
                    cfg = UnlearnConfig(method=method, scheme=scheme, epochs=preset.epochs,
                                        batch_size=preset.batch_size, forget_lr=lr or preset.forget_lr,
                                        retain_lr=lr or preset.retain_lr, seed=seed)
                    key = run_key(**base, unlearn=asdict(cfg))
                    if store.has(key):
                        continue
                    log(f"[bench] {split} {method} {scheme} seed {seed}")
                    model, tok, template = load_model(paths["full"])
                    forget = QAData(tok, data[split], data.get("idk"), template, seed=seed)
                    retain = QAData(tok, data[RETAIN_OF[split]], data.get("idk"), template, seed=seed + 1)
                    res = unlearn(model, forget, retain, cfg)
                    t0 = time.perf_counter()
                    ev = evaluate(model, tok, template, data, ecfg, encoder, retain_tr)
                    timings = {"unlearn_s": res["seconds"], "eval_s": time.perf_counter() - t0,
                               "optimizer_state_mib": res["optimizer_state_mib"], "param_mib": res["param_mib"],
                               "max_rss_mib": res["max_rss_mib"], **({"peak_cuda_mib": res["peak_cuda_mib"]}
                                                                     if "peak_cuda_mib" in res else {})}
                    store.put(key, experiment=experiment, trial=seed, method=method, optimizer=scheme,
                              metrics=ev["metrics"], params={**base, "unlearn": asdict(cfg), "spec": cfg.spec},
                              forget_hash=forget_hash, timings=timings,
                              extra={"note": ev["metric_note"], "samples": ev["samples"]})
                    store.put_series(key, res["curve"])
        rows += store.rows(experiment)
    store.close()
    return rows


def format_table(rows: list[dict[str, Any]], metrics: tuple[str, ...] = ("MC*", "FE*", "Avg*", "FQ_ks")) -> str:
    """Markdown table: one row per (split, method, scheme), mean ± std over seeds, time and optimizer memory."""
    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        lr = r["params"].get("unlearn", {}).get("forget_lr")
        groups.setdefault((r["experiment"].split("/")[-1], r["method"], r["optimizer"], f"{lr:g}" if lr else "-"),
                          []).append(r)
    head = "| split | method | scheme | lr | n | " + " | ".join(metrics) + " | unlearn s | opt. state MiB |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for (split, method, scheme, lr), rs in groups.items():
        cells = []
        for m in metrics:
            vals = [r["metrics"][m] for r in rs if r["metrics"].get(m) is not None]
            if not vals:
                cells.append("-")
                continue
            mu, sd = mean_std(vals)
            fmt = ".1e" if m.startswith("FQ") else ".3f"  # KS p-values span many orders of magnitude
            cells.append(f"{mu:{fmt}}" + (f" ± {sd:{fmt}}" if len(vals) > 1 else ""))
        secs = [r["timings"]["unlearn_s"] for r in rs if "unlearn_s" in r["timings"]]
        mem = [r["timings"]["optimizer_state_mib"] for r in rs if "optimizer_state_mib" in r["timings"]]
        t = f"{mean_std(secs)[0]:.0f}" if secs else "-"
        mm = f"{mean_std(mem)[0]:.1f}" if mem else "-"
        lines.append(f"| {split} | {method} | {scheme} | {lr} | {len(rs)} | " + " | ".join(cells) + f" | {t} | {mm} |")
    return "\n".join(lines)
