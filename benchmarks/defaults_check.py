"""Does ``dualoptim.unlearn`` with NOTHING but the data and the method forget, measured against a Retrain?

For each setting (dataset : model : forget spec) the script trains an original model to memorize its training
set, then per trial seed draws the forget set, trains a Retrain on the retain set with the same recipe (for
this report only: calibration never sees it) and runs

    dualoptim.unlearn(copy_of_original, forget=..., retain=..., test=..., method=m, optim=o, retrain=retrain,
                      train_epochs=<the originals' --epochs>)   # rule v6; --rule v5; --no-train-epochs: v3

for every method with its DualOptim spec and with the shared-optimizer baseline, under the same retrain-free
calibration (docs/defaults.md). It reports per setting a Table-1-style block (mean ± std over seeds, gap to
Retrain), the Gap of "Original" (doing nothing), unlearning time (probe + preparation + steps + checks) as a
fraction of Retrain's training time, both in process CPU time (the machine is shared, wall times are noise),
and whether the audit's verdict agrees with the Retrain comparison:

- Retrain comparison: "forgotten" when the unlearned FA is at most the verdict's accuracy tolerance above
  Retrain's FA (class-wise: at most 2 points), "utility lost" when in addition its TA is more than the
  verdict's utility tolerance below Retrain's TA, "NOT forgotten" otherwise.

    nice -n 10 python benchmarks/defaults_check.py --out runs/defaults_check.json

Diagnostics (not calibration: they read the Retrain; benchmarks/oracle_gap.py tabulates them): ``--trace N``
measures the Gap on the full sets every N steps of each run (the best point along it: a perfect stopping rule);
``--retrain-twin`` trains a second Retrain per seed (init seed + 1000): the Gap of an exact unlearner;
``--fixed-lr LR`` runs the rule's schedule at one forget lr with no check (no guard, escalation or stop) and
``--work-fraction F`` changes the work budget.

Models: ``cnn`` and ``resnet8`` (the project's) and ``mlp`` (a 2-hidden-layer MLP with dropout defined here,
as a user would). Data: scikit-learn digits (1347 train / 450 test, 8x8) and a stratified Fashion-MNIST subset
(``--fmnist-subset`` train images; ``--fmnist-test`` held-out images drawn from its test set).
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import time

import torch
from torch import nn

from dualoptim.io import atomic_write_json
from dualoptim.optim import OptimSpec
from dualoptim.stats import format_cell, gap_table, trial_gaps
from dualoptim.vision import TrainConfig, calibrate, create_model, load_dataset, make_forget_split, seed_everything
from dualoptim.vision.api import unlearn
from dualoptim.vision.methods import get_method_info
from dualoptim.vision.metrics import all_metrics, loader_probs
from dualoptim.vision.train import train_classifier

METRICS = ("FA", "RA", "TA", "MIA")
TWIN = "Retrain' (init seed + 1000)"  # --retrain-twin: the Gap of an exact unlearner (the noise floor)
DEFAULT_SETTINGS = ("digits:mlp:random:0.1,digits:cnn:random:0.1,fashion-mnist:mlp:random:0.1,"
                    "fashion-mnist:cnn:random:0.1,digits:mlp:random:0.3,fashion-mnist:cnn:random:0.3,"
                    "digits:cnn:class:3,fashion-mnist:resnet8:random:0.1")


class MLP(nn.Module):
    """A user's own model family: flatten -> 2 hidden layers with dropout -> logits."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 256, dropout: float = 0.2) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def make_model(name: str, data) -> nn.Module:
    if name == "mlp":
        return MLP(data.in_channels * data.image_size ** 2, data.num_classes)
    return create_model(name, data.num_classes, data.in_channels, data.image_size)


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def gap_to(metrics: dict, retrain: dict) -> float:
    """The Gap (mean |metric - Retrain's| over FA, RA, TA, MIA) of one set of metrics."""
    return trial_gaps([metrics], [retrain], METRICS)[0]


def retrain_status(a: dict) -> str:
    """The Retrain comparison's status (see the module docstring), with the verdict's own tolerances."""
    d, u, r = a["verdict_details"], a["unlearned"], a["retrain"]
    tol_acc = 2.0 if d["kind"] == "class" else d.get("tol_acc", 2.0)
    if u["FA"] > r["FA"] + tol_acc:
        return "NOT forgotten"
    if u["TA"] is not None and r["TA"] is not None and u["TA"] < r["TA"] - d.get("tol_util", 2.0):
        return "utility lost"
    return "forgotten"


def run_setting(dataset: str, model_name: str, forget: str, methods: list[str], seeds: list[int], subset: int,
                test_size: int, epochs: int, subset_seed: int = 0, heldout_seed: int = 1234,
                original_seed: int = 0, train_epochs: bool = True, dual_only: bool = False,
                trace: int | None = None, twin: bool = False) -> dict:
    fm = dataset == "fashion-mnist"
    data = load_dataset(dataset, train_subset=subset if fm else None, subset_seed=subset_seed)
    g = torch.Generator().manual_seed(heldout_seed)
    test_idx = torch.randperm(len(data.test_y), generator=g)[:test_size] if fm else torch.arange(len(data.test_y))
    test = (data.test_x[test_idx], data.test_y[test_idx])
    recipe = TrainConfig(epochs=epochs, lr=0.05 if model_name == "mlp" else 0.1, augment="none",
                         channels_last=model_name != "mlp")
    seed_everything(original_seed)
    original = make_model(model_name, data)
    fit = train_classifier(original, data, None, TrainConfig(**{**recipe.to_dict(), "seed": original_seed}),
                           progress=False)
    tag = f"[{dataset}/{model_name}/{forget}]"
    print(f"{tag} original trained in {fit['time_s']:.0f} s, final train acc {fit['history'][-1]['acc']:.1f}",
          flush=True)
    per_trial: dict[str, list[dict[str, float]]] = {"Retrain": [], "Original": []}
    runs, twins = [], []
    for seed in seeds:
        split = make_forget_split(forget, data.train_y, seed)
        seed_everything(seed)
        retrain = make_model(model_name, data)
        refit = train_classifier(retrain, data, split.retain_idx, TrainConfig(**{**recipe.to_dict(), "seed": seed}),
                                 progress=False)
        f, r = split.forget_idx, split.retain_idx
        sets = dict(forget=(data.train_x[f], data.train_y[f]), retain=(data.train_x[r], data.train_y[r]), test=test)
        if twin:  # an exact unlearner that is not the reference: another Retrain (init seed + 1000), same data
            seed_everything(seed + 1000)
            other = make_model(model_name, data)
            train_classifier(other, data, split.retain_idx, TrainConfig(**{**recipe.to_dict(), "seed": seed + 1000}),
                             progress=False)
            twin_metrics = [all_metrics([loader_probs(net, [sets[k]]) for k in ("forget", "retain", "test")], seed)
                            for net in (other, retrain)]  # the reference's too: a check of this path (below)
            per_trial.setdefault(TWIN, []).append({m: twin_metrics[0][m] for m in METRICS})
        first = True
        for method in methods:
            info = get_method_info(method)
            for optim in (info.dual_optim, info.shared_optim)[:1 if dual_only else 2]:
                t0, c0 = time.perf_counter(), cpu_s()
                # the originals' epoch count is the user's training length (rule v5); without it: rule v3
                out = unlearn(copy.deepcopy(original), method=method, optim=optim, retrain=retrain, seed=seed,
                              train_epochs=epochs if train_epochs else None, progress=False,
                              eval_every=trace, curve_samples=len(data.train_y) + len(test[1]), **sets)
                wall, cpu = time.perf_counter() - t0, cpu_s() - c0
                a = json.loads(out.audit.to_json())
                if first:  # the same Retrain and original for every method of this trial
                    per_trial["Retrain"].append({m: a["retrain"][m] for m in METRICS})
                    per_trial["Original"].append({m: a["original"][m] for m in METRICS})
                    first = False
                    if twin:
                        diff = max(abs(twin_metrics[1][m] - a["retrain"][m]) for m in METRICS)
                        twins.append({"seed": seed, "gap": gap_to(twin_metrics[0], a["retrain"]), "check": diff,
                                      **{m: twin_metrics[0][m] for m in METRICS}})
                        print(f"{tag} seed {seed} Retrain': Gap {twins[-1]['gap']:.2f} (the reference Retrain's "
                              f"metrics by this path differ from the audit's by {diff:.2g})")
                label = f"{method} [{optim}]"
                per_trial.setdefault(label, []).append({m: a["unlearned"][m] for m in METRICS})
                # CPU time, not wall time: the machine is shared and wall times swing by 10x between runs
                fraction = a["timings"]["unlearn_total_cpu_s"] / refit["cpu_s"]
                status = a["verdict_details"]["status"]
                ref = retrain_status(a)
                runs.append({"seed": seed, "method": method, "optim": optim, "label": label,
                             "gap": a["gap"]["Unlearned"], "gap_original": a["gap"]["Original"],
                             "time_fraction": fraction, "retrain_s": refit["time_s"], "retrain_cpu_s": refit["cpu_s"],
                             "wall_fraction": a["timings"]["unlearn_total_s"] / refit["time_s"], "wall_s": wall,
                             "cpu_s": cpu,
                             "verdict": status, "retrain_status": ref, "agree": status == ref,
                             "audit": {k: a[k] for k in ("unlearned", "original", "retrain", "verdict",
                                                         "verdict_details", "calibration", "hyperparameters",
                                                         "timings", "warnings")}})
                if trace:  # the Gap along the run (full sets; reads the Retrain: a diagnostic, not calibration)
                    path = [{"step": p["step"], "gap": gap_to(p, a["retrain"]), **{m: p[m] for m in METRICS}}
                            for p in a["process"]]
                    best = min(path, key=lambda p: p["gap"])
                    runs[-1].update(trace=path, oracle_gap=best["gap"], oracle_step=best["step"])
                budget = a["calibration"].get("budget") or {}
                length = budget.get("epochs", budget.get("iterations", "-"))
                print(f"{tag} seed {seed} {label}: Gap {a['gap']['Unlearned']:.2f} (original "
                      f"{a['gap']['Original']:.2f}), budget {length}, forget lr "
                      f"{a['hyperparameters']['forget_lr']:.2g}, stop "
                      f"{a['calibration'].get('stop_reason')}, {a['timings']['unlearn_steps']} steps, time "
                      f"{100 * fraction:.0f}% of Retrain, verdict {status} / Retrain says {ref}"
                      + (f"; best Gap along the run {best['gap']:.2f} at step {best['step']}" if trace else ""),
                      flush=True)
    table = gap_table(per_trial, "Retrain", METRICS)
    return {"dataset": dataset, "model": model_name, "forget": forget, "train_size": data.num_train,
            "subset_seed": subset_seed if fm else None, "heldout_seed": heldout_seed if fm else None,
            "original_seed": original_seed,
            "test_size": len(test[1]), "recipe": recipe.to_dict(), "original_train_acc": fit["history"][-1]["acc"],
            "seeds": seeds, "table": table, "runs": runs, **({"twin": twins} if twin else {})}


def markdown(result: dict) -> str:
    head = (f"**{result['dataset']} ({result['train_size']} train, {result['test_size']} held-out) / "
            f"{result['model']}**, forget {result['forget']}, seeds {result['seeds']}, original train acc "
            f"{result['original_train_acc']:.1f}%\n\n")
    lines = ["| Row | " + " | ".join(f"{m} (%)" for m in METRICS) + " | Gap ↓ | Std ↓ | time / Retrain | verdict "
             "(agrees with Retrain) |", "|---|" + "---|" * (len(METRICS) + 4)]
    for r in result["table"]:
        runs = [x for x in result["runs"] if x["label"] == r["name"]]
        time_cell = f"{100 * sum(x['time_fraction'] for x in runs) / len(runs):.0f}%" if runs else ""
        verdicts = ", ".join(f"{x['verdict']} ({'yes' if x['agree'] else 'no'})" for x in runs)
        lines.append(f"| {r['name']} | " + " | ".join(format_cell(r[m]) for m in METRICS)
                     + f" | {r['Gap']:.2f} | {r['Std']:.2f} | {time_cell} | {verdicts} |")
    return head + "\n".join(lines) + "\n"


def summary(results: list[dict]) -> str:
    """One row per setting: Original's Gap and each row's Gap; then the acceptance counts."""
    names = [r["name"] for r in results[0]["table"] if r["name"] not in ("Retrain",)]
    lines = ["| Setting | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    beats = half = total = 0
    fractions, agree = [], []
    for res in results:
        gaps = {r["name"]: r["Gap"] for r in res["table"]}
        dual = {x["label"] for x in res["runs"] if OptimSpec.parse(x["optim"]).is_dual}
        lines.append(f"| {res['dataset']}/{res['model']} {res['forget']} | "
                     + " | ".join(f"{gaps.get(n, float('nan')):.2f}" for n in names) + " |")
        for n in names:
            if n not in gaps or n not in dual:
                continue
            total += 1
            beats += gaps[n] < gaps["Original"]
            half += gaps[n] <= 0.5 * gaps["Original"]
        fractions += [x["time_fraction"] for x in res["runs"] if x["label"] in dual]
        agree += [x["agree"] for x in res["runs"]]
    lines.append("")
    lines.append(f"DualOptim rows: Gap < Original's in {beats}/{total} (method, setting) cells; Gap <= 0.5 x "
                 f"Original's in {half}/{total}; unlearning time / Retrain time: max {100 * max(fractions):.0f}%, "
                 f"mean {100 * sum(fractions) / len(fractions):.0f}% (DualOptim runs); verdict agrees with the "
                 f"Retrain comparison in {sum(agree)}/{len(agree)} runs (all rows).")
    return "\n".join(lines) + "\n"


def paired(results: list[dict], other: list[dict], names: tuple[str, str]) -> str:
    """Cell by cell on the same draws: each DualOptim row's Gap under two runs of the script (``a / b``), the
    mean time of its DualOptim runs, and which run has the lower Gap in how many cells."""
    by_key = {(r["dataset"], r["model"], r["forget"]): r for r in other}
    labels = sorted({x["label"] for r in results for x in r["runs"] if OptimSpec.parse(x["optim"]).is_dual})
    lines = [f"Gap {names[0]} / {names[1]} (DualOptim rows); time = mean unlearning CPU / Retrain CPU",
             "", "| Setting | Original | " + " | ".join(labels) + " | time (mean, DualOptim) |",
             "|---|" + "---|" * (len(labels) + 2)]
    wins = [0, 0, 0]  # a lower, b lower, tie
    for res in results:
        o = by_key.get((res["dataset"], res["model"], res["forget"]))
        if o is None:
            continue
        ga, gb = ({r["name"]: r["Gap"] for r in x["table"]} for x in (res, o))
        cells = []
        for n in labels:
            if n in ga and n in gb:
                wins[0 if ga[n] < gb[n] else 1 if gb[n] < ga[n] else 2] += 1
                cells.append(f"{ga[n]:.2f} / {gb[n]:.2f}")
            else:
                cells.append("")
        t = [[x["time_fraction"] for x in r["runs"] if x["label"] in labels] for r in (res, o)]
        lines.append(f"| {res['dataset']}/{res['model']} {res['forget']} | {ga['Original']:.2f} | "
                     + " | ".join(cells) + " | " + " / ".join(f"{100 * sum(v) / max(len(v), 1):.0f}%" for v in t)
                     + " |")
    lines += ["", f"Lower Gap: {names[0]} in {wins[0]} cells, {names[1]} in {wins[1]}, ties {wins[2]}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--settings", default=DEFAULT_SETTINGS, help="comma-separated dataset:model:forget-spec")
    p.add_argument("--methods", default="salun,sfron,scrub,rl")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--fmnist-subset", type=int, default=2000)
    p.add_argument("--fmnist-test", type=int, default=2000, help="held-out images drawn from the test set")
    p.add_argument("--subset-seed", type=int, default=0, help="seed of the stratified Fashion-MNIST training subset")
    p.add_argument("--heldout-seed", type=int, default=1234, help="seed of the Fashion-MNIST held-out draw")
    p.add_argument("--original-seed", type=int, default=0, help="seed of the original model's initialisation and "
                   "training order")
    p.add_argument("--epochs", type=int, default=40, help="epochs of the original and Retrain recipe (memorize)")
    p.add_argument("--no-train-epochs", dest="train_epochs", action="store_false", help="call unlearn without "
                   "train_epochs (rule v3); default: pass --epochs as train_epochs (rule v5: its 20 % work budget)")
    p.add_argument("--rule", choices=calibrate.RULES, default=calibrate.rule_name(), help="with "
                   "train_epochs: rule v6 (v5 + the held-out member-rate guard) or v5 exactly (the guard off), for "
                   "paired measurements; default: what ships")
    p.add_argument("--dual-only", action="store_true", help="only the DualOptim spec of each method (pilots)")
    p.add_argument("--fixed-lr", type=float, default=None, metavar="LR", help="diagnostic: the rule's schedule and "
                   "work budget at this one forget lr, never checked (no guard, escalation or stop: the monitor's stop "
                   "hook is replaced by one that returns None), to trace where the method itself goes (with --trace)")
    p.add_argument("--work-fraction", type=float, default=None, metavar="F", help="diagnostic: the work budget as "
                   f"this fraction of a Retrain (the rule's: {calibrate.WORK_FRACTION})")
    p.add_argument("--retrain-twin", action="store_true", help="diagnostic: also train a second Retrain per seed (init "
                   "seed + 1000, same retain set and recipe) and report its Gap: what an exact unlearner scores")
    p.add_argument("--trace", type=int, default=None, metavar="N", help="diagnostic: also measure the Gap on the full "
                   "sets every N steps of each run and report the best point along it (reads the Retrain; costs "
                   "time, so the time fractions of a traced run are not the rule's)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/defaults_check.json")
    p.add_argument("--report", default=None, metavar="JSON", help="only print the tables of a finished (or "
                   "partial) run's --out file")
    p.add_argument("--compare", default=None, metavar="JSON", help="with --report: also the cell-by-cell Gap "
                   "against another run's --out file on the same draws")
    args = p.parse_args()
    if args.report:
        with open(args.report) as fh:
            done = json.load(fh)
        results = done["results"]
        print("\n".join(markdown(r) for r in results) + "\n" + summary(results))
        if args.compare:
            with open(args.compare) as fh:
                other = json.load(fh)
            names = (done["args"].get("rule", args.report), other["args"].get("rule", args.compare))
            print(paired(results, other["results"], names))
        return
    torch.set_num_threads(args.threads)
    calibrate.use_rule(args.rule)
    if args.work_fraction is not None:
        calibrate.WORK_FRACTION = args.work_fraction
    if args.fixed_lr is not None:  # diagnostic only: no check ever stops, guards or escalates the run
        calibrate.START_LR = args.fixed_lr
        calibrate.Monitor.__call__ = lambda self, event: None
    start, c0 = time.perf_counter(), cpu_s()
    results = []
    for item in args.settings.split(","):
        dataset, model_name, forget = item.split(":", 2)
        results.append(run_setting(dataset, model_name, forget, args.methods.split(","), args.seeds,
                                   args.fmnist_subset, args.fmnist_test, args.epochs, args.subset_seed,
                                   args.heldout_seed, args.original_seed, args.train_epochs, args.dual_only,
                                   args.trace, args.retrain_twin))
        atomic_write_json(args.out, {"results": results, "args": vars(args)})
        print("\n" + markdown(results[-1]), flush=True)
    print("\n" + summary(results))
    print(f"total {time.perf_counter() - start:.0f} s wall, {cpu_s() - c0:.0f} s CPU (2 shared CPU cores, "
          f"{args.threads} thread(s); wall times pessimistic)")


if __name__ == "__main__":
    main()
