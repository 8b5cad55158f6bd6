"""How far can the four methods get at all? An oracle bound for the calibrated defaults (docs/defaults.md).

Reads runs of ``benchmarks/defaults_check.py`` made with ``--trace N`` (the Gap to the Retrain on the full sets
every N steps of each run):

- ``--rule FILE``: the shipped rule's runs (made with ``--retrain-twin`` too: a second Retrain per seed, init seed
  + 1000, whose Gap is what an exact unlearner scores);
- ``--sweep FILE ...``: the same draws at fixed forget lrs (``--fixed-lr LR --work-fraction F``: the rule's
  schedule, never checked, F times a Retrain's work).

Per (setting, method) cell and over the seeds, the mean per-run Gap of: doing nothing (Original), the twin
Retrain, the rule, the best point along the rule's own run, and the best fixed lr (one lr per cell, the one with
the lowest mean) at its best point within the rule's 20 % budget and at any point of the longer run. Every
"best" reads the Retrain, which calibration may not: the columns bound what ANY retrain-free stopping rule or lr
choice could reach with these methods, schedules and budgets; the minimum over many noisy points also favours
them. One column is retrain-free: "check nearest the target" keeps, along the rule's run, the state of the check
whose monitor readings are nearest the target (:func:`target_distance`; checks with a drop excluded), the best a
rule could do that picks one of its own checks by what it measures. Counts: cells whose Gap is at most half of
the Original's, and below it.

    python benchmarks/oracle_gap.py --rule runs/trace_v6_twin_a.json --sweep runs/sweep_*.json
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from statistics import mean

from dualoptim.vision import calibrate

MONITOR_N = 256  # the tolerances of two monitor subsamples of this size (calibrate.MONITOR_SAMPLES)


def budget_steps(schedule: dict) -> int:
    """Planned steps of an iteration-mode schedule (the rule's interleaved one)."""
    it = schedule["iterations"]
    return len(range(0, it, schedule["forget_every"])) * schedule["forget_steps"] + it * schedule["retain_steps"]


def target_distance(check: dict) -> float:
    """How far one recorded check is from the retrain-free target, in tolerances (<= 1: met). Sample-wise: the
    largest of |FA - HA| / tol_acc, |AUC - 0.5| / tol_auc and |member-rate gap| / tol_mia (k = 1, two subsamples of
    :data:`MONITOR_N`); class-wise: the forgotten classes' accuracy above the 2 % target, in units of 2 points."""
    if check.get("HA") is None:
        return max(check["FA"] - calibrate.CLASS_TARGET, 0.0) / calibrate.CLASS_TARGET
    tol = calibrate.tolerances(MONITOR_N, MONITOR_N, check["HA"], 1.0)
    d = [abs(check["FA"] - check["HA"]) / tol["tol_acc"], abs(check["AUC"] - 0.5) / tol["tol_auc"]]
    if check.get("MIA_forget") is not None:
        tol_mia = calibrate.member_tolerance(check["MIA_forget"], check["MIA_heldout"], MONITOR_N, MONITOR_N, 1.0)
        d.append(abs(check["MIA_forget"] - check["MIA_heldout"]) / tol_mia)
    return max(d)


def nearest_target_gap(run: dict) -> float | None:
    """The traced Gap at the check nearest the target (no utility or member-rate drop) of one traced run: at the
    check's step, else the traced step next to it; None without a usable check."""
    trace = {pt["step"]: pt["gap"] for pt in run["trace"]}
    best = None
    for c in run["audit"].get("calibration", {}).get("checks", []):
        if c.get("utility_drop") or c.get("member_drop"):
            continue
        gap = next((trace[s] for s in (c["step"], c["step"] - 1, c["step"] + 1) if s in trace), None)
        if gap is not None:
            distance = target_distance(c)
            if best is None or distance < best[0]:
                best = (distance, gap)
    return None if best is None else best[1]


def cells(path: str) -> dict[tuple[str, str], dict[int, dict]]:
    """``{(setting, method label): {seed: run}}`` of one defaults_check output."""
    with open(path) as fh:
        data = json.load(fh)
    out: dict[tuple[str, str], dict[int, dict]] = defaultdict(dict)
    for res in data["results"]:
        setting = f"{res['dataset']}/{res['model']} {res['forget']}"
        for run in res["runs"]:
            out[(setting, run["label"])][run["seed"]] = run
        for t in res.get("twin", []):
            out[(setting, "twin")][t["seed"]] = t
    return out


def fixed_lr(path: str) -> float:
    """The forget lr of a ``--fixed-lr`` run (its args, or ``_lr<value>.json`` in its name)."""
    with open(path) as fh:
        lr = json.load(fh)["args"].get("fixed_lr")
    if lr is None:
        lr = float(re.search(r"_lr([0-9.e-]+)\.json$", path).group(1))
    return float(lr)


def _mean_or_none(values: list[float | None]) -> float | None:
    return None if any(v is None for v in values) else mean(values)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rule", nargs="+", required=True, help="traced runs of the shipped rule (with --retrain-twin)")
    p.add_argument("--sweep", nargs="*", default=[], help="traced --fixed-lr runs on the same draws")
    p.add_argument("--seeds", type=int, nargs="*", default=None, help="only these trial seeds (default: all)")
    args = p.parse_args()
    keep = (lambda runs: {s: r for s, r in runs.items() if s in args.seeds}) if args.seeds else (lambda runs: runs)
    rule: dict = {}
    for f in args.rule:
        rule.update({key: keep(runs) for key, runs in cells(f).items()})
    sweep: dict[tuple[str, str], dict[float, dict[int, dict]]] = defaultdict(dict)
    for f in args.sweep:
        lr = fixed_lr(f)
        for key, runs in cells(f).items():
            sweep[key].setdefault(lr, {}).update(keep(runs))

    cols = ("Original", "Retrain'", "rule", "check nearest the target", "best along the rule's run",
            "best fixed lr, 20 % budget", "best fixed lr, longer run")
    lines = ["| Setting | Method | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    halves, beats, n = defaultdict(int), defaultdict(int), defaultdict(int)
    for (setting, label), runs in sorted(rule.items()):
        if label == "twin":
            continue
        seeds = sorted(runs)
        original = mean(runs[s]["gap_original"] for s in seeds)
        twin = rule.get((setting, "twin"), {})
        row = {"Original": original,
               "Retrain'": mean(twin[s]["gap"] for s in seeds) if all(s in twin for s in seeds) else None,
               "rule": mean(runs[s]["gap"] for s in seeds),
               "check nearest the target": _mean_or_none([nearest_target_gap(runs[s]) for s in seeds]),
               "best along the rule's run": mean(runs[s]["oracle_gap"] for s in seeds)}
        lr_note = {}
        for name, limit in (("best fixed lr, 20 % budget", True), ("best fixed lr, longer run", False)):
            options = {}
            for lr, by_seed in sweep.get((setting, label), {}).items():
                if not all(s in by_seed for s in seeds):
                    continue
                per_seed = []
                for s in seeds:
                    cap = budget_steps(runs[s]["audit"]["hyperparameters"]["schedule"]) if limit else None
                    per_seed.append(min(pt["gap"] for pt in by_seed[s]["trace"] if cap is None or pt["step"] <= cap))
                options[lr] = mean(per_seed)
            if options:
                best = min(options, key=options.get)
                row[name], lr_note[name] = options[best], best
            else:
                row[name] = None
        cells_text = []
        for c in cols:
            v = row[c]
            if v is None:
                cells_text.append("")
                continue
            cells_text.append(f"{v:.2f}" + (f" ({lr_note[c]:.2g})" if c in lr_note else ""))
            if c != "Original":
                n[c] += 1
                halves[c] += v <= 0.5 * original
                beats[c] += v < original
        lines.append(f"| {setting} | {label} | " + " | ".join(cells_text) + " |")
    lines.append("")
    for c in cols[1:]:
        if n[c]:
            lines.append(f"- {c}: Gap <= 0.5 x Original's in {halves[c]} of {n[c]} cells, < Original's in "
                         f"{beats[c]} of {n[c]}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
