"""Forget-learning-rate search for the ``fashion-mnist-quick`` unlearning presets, on VALIDATION seeds.

For each (method, optimizer) in ``GRID`` and each forget lr of its grid (retain lr fixed at the preset's
value; DualOptim with alpha = 1 for SFRon, as in the paper), unlearn the original model on the forget set of
every validation seed and compute the Gap to Retrain (mean over FA, RA, TA, MIA of |mean over seeds - Retrain
mean|, :func:`dualoptim.stats.gap_table`). Retrain models for the validation seeds must exist (``dualoptim
retrain --original ORIG --forget random:0.1 --seed S --out RETRAIN_DIR/retrain-S``). The reported seeds (0-4)
are never used here.

Results are appended to a JSON-lines file (one line per run) so an interrupted search resumes where it
stopped; the summary table (markdown) goes to stdout.

    nice -n 10 python benchmarks/tune_vision.py --original runs/tune/orig --retrain-dir runs/tune \\
        --seeds 100 101 --out runs/tune/tune.jsonl
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from dualoptim.stats import gap_table
from dualoptim.vision.checkpoint import dataset_for, load_classifier
from dualoptim.vision.forget import make_forget_split
from dualoptim.vision.metrics import evaluate
from dualoptim.vision.unlearn import UnlearnConfig, unlearn_classifier

METRICS = ("FA", "RA", "TA", "MIA")
# (method, optimizer spec, forget lr) in the order they are run (the search can be stopped at any point and
# resumed). Every grid spans >= 10x in ~3x steps and reaches past the value chosen in the first search (cnn width
# 32, docs/tuning.md) on both sides where that value sat on a grid edge; the shared baselines get as many points as
# DualOptim, so neither side is under-tuned.
GRID: tuple[tuple[str, str, float], ...] = (
    *(("salun", "sgd", lr) for lr in (1e-5, 3e-5, 1e-4, 3e-4, 1e-3)),
    *(("salun", "adam+sgd", lr) for lr in (4e-4, 1.3e-3, 4e-3)),
    *(("sfron", "sgd", lr) for lr in (3e-2, 0.1, 0.3, 1.0)),
    *(("sfron", "adam+sgd", lr) for lr in (1e-3, 3e-3, 1e-2)),
    *(("scrub", "adam", lr) for lr in (1e-4, 3e-4, 1e-3, 3e-3)),
    *(("scrub", "adam+adam", lr) for lr in (1.5e-4, 5e-4, 1.5e-3)),
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--original", required=True)
    ap.add_argument("--retrain-dir", required=True, help="folder holding retrain-<seed> checkpoints")
    ap.add_argument("--seeds", type=int, nargs="+", default=[100, 101, 102])
    ap.add_argument("--forget", default="random:0.1")
    ap.add_argument("--only", nargs="*", default=None, help="METHOD:OPTIM entries of GRID to run (default all)")
    ap.add_argument("--out", required=True, help="JSON-lines results file (appended, resumable)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--summary", action="store_true", help="only print the table of the finished runs")
    args = ap.parse_args()
    if set(args.seeds) & set(range(5)):
        raise SystemExit("validation seeds must not be the reported seeds 0-4")
    torch.set_num_threads(args.threads)

    original, meta, _ = load_classifier(args.original)
    data = dataset_for(meta)
    splits = {s: make_forget_split(args.forget, data.train_y, s) for s in args.seeds}
    retrain = {}
    for s in args.seeds:
        _, rmeta, _ = load_classifier(Path(args.retrain_dir) / f"retrain-{s}")
        if rmeta.split["digest"] != splits[s].digest:
            raise SystemExit(f"retrain-{s} was made for another forget set")
        retrain[s] = rmeta.metrics
    out = Path(args.out)
    done = {}
    if out.exists():
        for line in out.read_text().splitlines():
            r = json.loads(line)
            done[(r["method"], r["optim"], r["forget_lr"], r["seed"])] = r
    grid = [g for g in GRID if args.only is None or f"{g[0]}:{g[1]}" in args.only]
    for method, optim, lr in [] if args.summary else grid:
        for s in args.seeds:
            if (method, optim, lr, s) in done:
                continue
            cfg = UnlearnConfig.from_preset(method, optim, dataset=meta.dataset, forget_lr=lr, seed=s)
            start = time.perf_counter()
            model, res = unlearn_classifier(copy.deepcopy(original), data, splits[s], cfg, progress=False)
            metrics = evaluate(model, data, splits[s], mia_svc=False)
            row = {"method": method, "optim": optim, "forget_lr": lr, "retain_lr": cfg.retain_lr, "seed": s,
                   "options": cfg.options, "budget": cfg.epochs or cfg.iterations, "metrics": metrics,
                   "unlearn_s": res.seconds, "total_s": time.perf_counter() - start}
            done[(method, optim, lr, s)] = row
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{method} {optim} lr_f={lr:g} seed {s}: " + " ".join(
                f"{k}={metrics[k]:.2f}" for k in METRICS) + f" ({res.seconds:.1f} s)", flush=True)

    print("\n| method | optimizer | forget lr | seeds | FA | RA | TA | MIA | Gap |")
    print("|---|---|---|---|---|---|---|---|---|")
    ref = [retrain[s] for s in args.seeds]
    best: dict[tuple[str, str], tuple[float, float]] = {}
    for method, optim, lr in sorted(grid, key=lambda g: (g[0], g[1], g[2])):
        trials = [done[(method, optim, lr, s)]["metrics"] for s in args.seeds if (method, optim, lr, s) in done]
        if len(trials) < len(args.seeds):
            continue
        row = gap_table({"Retrain": ref, "run": trials}, metrics=METRICS)[1]
        print(f"| {method} | {optim} | {lr:g} | {len(trials)} | " + " | ".join(
            f"{row[m]['mean']:.2f}" for m in METRICS) + f" | {row['Gap']:.2f} |")
        if (method, optim) not in best or row["Gap"] < best[(method, optim)][1]:
            best[(method, optim)] = (lr, row["Gap"])
    rr = gap_table({"Retrain": ref}, metrics=METRICS)[0]
    print("| Retrain | | | " + f"{len(ref)} | " + " | ".join(f"{rr[m]['mean']:.2f}" for m in METRICS) + " | 0 |")
    print("\nchosen (lowest Gap): " + ", ".join(f"{m} {o}: {lr:g} (Gap {g:.2f})" for (m, o), (lr, g) in best.items()))


if __name__ == "__main__":
    main()
