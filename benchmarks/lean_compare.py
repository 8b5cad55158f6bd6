"""Lean (bf16 stochastic-rounding) vs full-precision DualOptim states on the same forget sets.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/dualoptim bench --config benchmarks/configs/lean_vs_full.json --root runs/lean
    .venv/bin/python -m benchmarks.lean_compare runs/lean/results.db

For each method and metric: mean +- std over trials of the full-precision and the lean run, the mean
paired difference (same trial = same forget set, same Retrain) and the verdict "within noise" when
|mean difference| <= the full-precision trial-to-trial std. Also each row's Gap/Std against Retrain
(the paper's Table 1 summary), from ``dualoptim.stats.gap_table``.
"""

from __future__ import annotations

import argparse
import sys

from dualoptim.stats import gap_table, mean_std
from dualoptim.store import ResultsStore

METRICS = ("FA", "RA", "TA", "MIA")


def compare(db: str, experiment: str = "vision/lean-vs-full") -> str:
    store = ResultsStore(db)
    rows = store.rows(experiment=experiment)
    by: dict[tuple[str, str], dict[int, dict[str, float]]] = {}
    for r in rows:
        by.setdefault((r["method"], r["optimizer"]), {})[r["trial"]] = r["metrics"]
    if ("Retrain", "-") not in by:  # a cached Retrain is stored once, under the experiment that trained it
        hashes = {r["forget_hash"]: r["trial"] for r in rows}
        for r in store.rows():
            if r["method"] == "Retrain" and r["forget_hash"] in hashes:
                by.setdefault(("Retrain", "-"), {})[hashes[r["forget_hash"]]] = r["metrics"]
    pairs = [(method, optim.replace("-bf16", ""), optim) for method, optim in sorted(by) if "bf16" in optim
             and (method, optim.replace("-bf16", "")) in by]
    if ("Retrain", "-") not in by or not pairs:
        raise SystemExit(f"no Retrain and lean/full pairs for {experiment!r} in {db}")
    trials = set(by[("Retrain", "-")])
    for method, full, lean in pairs:
        trials &= set(by[(method, full)]) & set(by[(method, lean)])
    trials_l = sorted(trials)
    if not trials_l:
        raise SystemExit("no trial has all runs yet")
    lines = [f"Trials (forget-set seeds): {trials_l}", "",
             "| method | metric | fp32 mean +- std | bf16 mean +- std | paired diff (bf16 - fp32) mean +- std | "
             "within noise |", "|---|---|---|---|---|---|"]
    per_trial = {"Retrain": [by[("Retrain", "-")][t] for t in trials_l]}
    within = total = 0
    for method, full, lean in pairs:
        a_runs, b_runs = by[(method, full)], by[(method, lean)]
        per_trial[f"{method} {full}"] = [a_runs[t] for t in trials_l]
        per_trial[f"{method} {lean}"] = [b_runs[t] for t in trials_l]
        for m in METRICS:
            a, b = [a_runs[t][m] for t in trials_l], [b_runs[t][m] for t in trials_l]
            (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
            md, sd = mean_std([y - x for x, y in zip(a, b)])
            ok = abs(md) <= sa
            within, total = within + ok, total + 1
            lines.append(f"| {method} | {m} | {ma:.2f} +- {sa:.2f} | {mb:.2f} +- {sb:.2f} | {md:+.2f} +- {sd:.2f} | "
                         f"{'yes' if ok else 'no'} |")
    lines += ["", f"within noise (|mean paired diff| <= fp32 std over trials): {within}/{total}", "",
              "| row | Gap vs Retrain | Std |", "|---|---|---|"]
    for row in gap_table(per_trial, reference="Retrain", metrics=METRICS):
        lines.append(f"| {row['name']} | {row['Gap']:.2f} | {row['Std']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("db", nargs="?", default="runs/lean/results.db")
    ap.add_argument("--experiment", default="vision/lean-vs-full")
    args = ap.parse_args(argv)
    print(compare(args.db, args.experiment))


if __name__ == "__main__":
    main(sys.argv[1:])
