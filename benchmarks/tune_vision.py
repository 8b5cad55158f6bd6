"""Hyper-parameter search for the ``fashion-mnist-quick`` unlearning presets: validation seeds, validation split.

The search is the ``quick`` benchmark in validation mode (:class:`dualoptim.vision.bench.BenchConfig`
``validation=True``): the same memorizing original model (same training subset, same cache entry), forget sets
drawn with VALIDATION seeds (default 100-102, never the reported 0-4), each trial's own Retrain, and TA / the
MIA's non-member set taken from 5,000 training images the subset does not use. The test set is dropped when the
data is loaded: nothing here can read it.

Each side is tuned the way its paper tunes it, with the same number of points per side of a method
(docs/tuning.md): shared SalUn: SGD, eta_r = 0.01, eta_f over a grid that includes the paper's 0.018; shared
SFRon: ONE SGD with eta_f = eta_r = 0.01, the forget-loss scale alpha searched; SFRon+DO: alpha = 1, eta_f
(Adam) searched; SCRUB: eta_f of the (forget) Adam searched, eta_r = 1e-4. Budgets are the preset's.

Objective: validation Gap (mean over FA, RA, TA, MIA of |mean over seeds - Retrain's mean|); the per-seed Gap
(against that seed's Retrain) is printed too. Resumable (results database); the search table goes to stdout.

    nice -n 10 python benchmarks/tune_vision.py --root /tmp/tune --threads 1
    python benchmarks/tune_vision.py --root /tmp/tune --only salun:sgd salun:adam+sgd   # part of the grid
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import torch

from dualoptim.stats import gap_table, trial_gaps
from dualoptim.vision import report
from dualoptim.vision.bench import BenchConfig, BenchContext, RunSpec, run_bench
from dualoptim.vision.bench_presets import get_bench_preset

METRICS = ("FA", "RA", "TA", "MIA")
REPORTED_SEEDS = range(5)
# (method, optimizer spec, searched field, values): the same number of points for both sides of a method.
GRID: tuple[tuple[str, str, str, tuple[float, ...]], ...] = (
    ("salun", "sgd", "forget_lr", (3e-4, 2e-3, 6e-3, 0.018)),  # paper CIFAR-10: 0.018 with eta_r = 0.01
    ("salun", "adam+sgd", "forget_lr", (1.3e-4, 4e-4, 1.3e-3, 4e-3)),  # paper: 1.3e-4
    ("sfron", "sgd", "alpha", (1.0, 10.0, 100.0, 1000.0)),  # paper: eta_f = eta_r = 0.01, alpha 31
    ("sfron", "adam+sgd", "forget_lr", (3e-4, 1e-3, 3e-3, 1e-2)),  # paper: alpha 1, eta_f 1e-4 .. 4.1e-4
    ("scrub", "adam", "forget_lr", (1e-4, 3e-4, 1e-3)),  # paper: 1e-4
    ("scrub", "adam+adam", "forget_lr", (1.5e-4, 5e-4, 1.5e-3)),  # paper: 1.5e-4
)
SHARED_SFRON_LR = 0.01  # shared SFRon keeps eta_f = eta_r (the paper's protocol)


def grid_runs(only: list[str] | None = None) -> list[RunSpec]:
    """One benchmark row per grid point (labelled ``method [optim] field=value``)."""
    runs = []
    for method, optim, name, values in GRID:
        if only is not None and f"{method}:{optim}" not in only:
            continue
        for v in values:
            if name == "alpha":
                config = {"options": {"alpha": v}, "forget_lr": SHARED_SFRON_LR, "retain_lr": SHARED_SFRON_LR}
            else:
                config = {name: v}
            runs.append(RunSpec(method, optim, config, label=f"{report.row_label(method, optim)} {name}={v:g}"))
    return runs


def tune_config(seeds: list[int], only: list[str] | None = None) -> BenchConfig:
    """The ``quick`` benchmark's data, model and budgets in validation mode, with the grid as its rows."""
    if set(seeds) & set(REPORTED_SEEDS):
        raise SystemExit(f"validation seeds must not be the reported seeds {list(REPORTED_SEEDS)}")
    quick = get_bench_preset("quick")
    return BenchConfig(name="tune-quick", dataset=quick.dataset, train_subset=quick.train_subset,
                       subset_seed=quick.subset_seed, model=quick.model, model_options=quick.model_options,
                       recipe=quick.recipe, init_seed=quick.init_seed, forget=quick.forget,
                       unlearn_preset=quick.unlearn_preset, seeds=seeds, runs=grid_runs(only), svc_samples=500,
                       validation=True, description="forget-lr / alpha search on validation seeds and split")


def search_table(rows: list[dict]) -> str:
    """Markdown: every grid point's mean metrics, per-seed Gap and validation Gap; the chosen value per side."""
    by_label: dict[str, dict[int, dict]] = defaultdict(dict)
    for r in rows:
        if not r.get("extra", {}).get("diverged"):
            by_label[report.label_of(r)][r["trial"]] = r["metrics"]
    ref = by_label.pop(report.RETRAIN)
    trials = sorted(ref)
    lines = ["| row | " + " | ".join(METRICS) + " | per-seed Gap | Gap |", "|---" * (len(METRICS) + 3) + "|"]
    best: dict[str, tuple[float, str]] = {}
    for label in sorted(by_label, key=lambda k: (k.split(" ")[0], k)):
        got = by_label[label]
        if sorted(got) != trials:
            continue
        runs = [got[t] for t in trials]
        row = gap_table({"Retrain": [ref[t] for t in trials], label: runs}, metrics=METRICS)[1]
        per_seed = trial_gaps(runs, [ref[t] for t in trials], METRICS)
        lines.append(f"| {label} | " + " | ".join(f"{row[m]['mean']:.2f}" for m in METRICS)
                     + f" | {', '.join(f'{g:.2f}' for g in per_seed)} | {row['Gap']:.2f} |")
        if label == report.ORIGINAL:  # the "do nothing" reference, not a candidate
            continue
        side = label.rsplit(" ", 1)[0]
        if side not in best or row["Gap"] < best[side][0]:  # ties keep the first (smallest) value
            best[side] = (row["Gap"], label)
    rr = gap_table({"Retrain": [ref[t] for t in trials]}, metrics=METRICS)[0]
    lines.append("| Retrain | " + " | ".join(f"{rr[m]['mean']:.2f}" for m in METRICS) + " | | 0 |")
    lines.append("")
    lines += [f"- chosen for {side}: {label} (validation Gap {gap:.2f})" for side, (gap, label) in best.items()]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True, help="folder for the database, model cache and outputs")
    ap.add_argument("--seeds", type=int, nargs="+", default=[100, 101, 102])
    ap.add_argument("--only", nargs="*", default=None, help="METHOD:OPTIM entries of GRID to run (default all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = tune_config(args.seeds, args.only)
    ctx = BenchContext(root=Path(args.root), data_dir=args.data_dir, progress=False)
    run_bench(cfg, ctx)
    with ctx.store() as store:
        print(search_table(store.rows(f"vision/{cfg.name}")))


if __name__ == "__main__":
    main()
