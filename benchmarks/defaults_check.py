"""Do the untuned DualOptim defaults of ``dualoptim.unlearn`` land near Retrain on new data and models?

For each (dataset, model family) the script trains an original model, then per trial seed draws a 10%
random forget set, trains Retrain on the retain set with the same recipe, and runs ``dualoptim.unlearn``
with NOTHING but the method name (default optimizer spec, learning rates, schedule: docs/defaults.md).
It prints one Table-1-style block per setting: Retrain, "Original" (no unlearning at all: the Gap any
method must beat to be useful), then each method; writes everything to ``--out`` (JSON).

    nice -n 10 python benchmarks/defaults_check.py --out runs/defaults_check.json

Models: ``cnn`` (the project's 2-conv CNN) and ``mlp`` (a 2-hidden-layer MLP with dropout, defined here as a
user would). Data: scikit-learn digits (1347 train / 450 test, 8x8) and a stratified Fashion-MNIST subset.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch
from torch import nn

from dualoptim.io import atomic_write_json
from dualoptim.stats import format_cell, gap_table
from dualoptim.vision import TrainConfig, create_model, load_dataset, make_forget_split, seed_everything
from dualoptim.vision.api import unlearn
from dualoptim.vision.train import train_classifier

METRICS = ("FA", "RA", "TA", "MIA")


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


def run_setting(dataset: str, model_name: str, methods: list[str], seeds: list[int], subset: int, epochs: int,
                forget: str, forget_lr: float | None = None) -> dict:
    data = load_dataset(dataset, train_subset=subset if dataset == "fashion-mnist" else None)
    recipe = TrainConfig(epochs=epochs, lr=0.05 if model_name == "mlp" else 0.1, augment="none",
                         channels_last=model_name != "mlp")
    seed_everything(0)
    original = make_model(model_name, data)
    t0 = time.perf_counter()
    train_classifier(original, data, None, recipe, progress=False)
    print(f"[{dataset}/{model_name}] original trained in {time.perf_counter() - t0:.0f} s", flush=True)
    per_trial: dict[str, list[dict[str, float]]] = {"Retrain": [], "Original": []}
    runs = []
    for seed in seeds:
        split = make_forget_split(forget, data.train_y, seed)
        seed_everything(seed)
        retrain = make_model(model_name, data)
        train_classifier(retrain, data, split.retain_idx, TrainConfig(**{**recipe.to_dict(), "seed": seed}),
                         progress=False)
        f, r = split.forget_idx, split.retain_idx
        sets = dict(forget=(data.train_x[f], data.train_y[f]), retain=(data.train_x[r], data.train_y[r]),
                    test=(data.test_x, data.test_y))
        for method in methods:
            t0 = time.perf_counter()
            out = unlearn(copy.deepcopy(original), method=method, retrain=retrain, seed=seed, progress=False,
                          forget_lr=forget_lr, **sets)
            a = out.audit
            if method == methods[0]:  # the same Retrain and original for every method of this trial
                per_trial["Retrain"].append({m: a.retrain[m] for m in METRICS})
                per_trial["Original"].append({m: a.original[m] for m in METRICS})
            label = f"{method} [{a.optim}] " + ("defaults" if forget_lr is None else f"forget_lr={forget_lr:g}")
            per_trial.setdefault(label, []).append({m: a.unlearned[m] for m in METRICS})
            runs.append({"seed": seed, "method": method, "audit": json.loads(a.to_json())})
            print(f"[{dataset}/{model_name}] seed {seed} {label}: Gap {a.gap['Unlearned']:.2f} "
                  f"(original {a.gap['Original']:.2f}), forget_lr {a.hyperparameters['forget_lr']:.2e}, "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
    table = gap_table(per_trial, "Retrain", METRICS)
    return {"dataset": dataset, "model": model_name, "train_size": data.num_train, "test_size": len(data.test_y),
            "recipe": recipe.to_dict(), "forget": forget, "seeds": seeds, "table": table, "runs": runs}


def markdown(result: dict) -> str:
    head = f"**{result['dataset']} ({result['train_size']} train) / {result['model']}**, forget {result['forget']}, " \
           f"seeds {result['seeds']}\n\n"
    lines = ["| Row | " + " | ".join(f"{m} (%)" for m in METRICS) + " | Gap ↓ | Std ↓ |",
             "|---|" + "---|" * (len(METRICS) + 2)]
    for r in result["table"]:
        lines.append(f"| {r['name']} | " + " | ".join(format_cell(r[m]) for m in METRICS)
                     + f" | {r['Gap']:.2f} | {r['Std']:.2f} |")
    return head + "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--settings", default="digits:cnn,digits:mlp,fashion-mnist:cnn,fashion-mnist:mlp")
    p.add_argument("--methods", default="salun,sfron,scrub")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--fmnist-subset", type=int, default=3000)
    p.add_argument("--epochs", type=int, default=15, help="epochs of the original and Retrain recipe")
    p.add_argument("--forget", default="random:0.1")
    p.add_argument("--forget-lr", type=float, default=None, help="diagnostic only: override the default forget lr")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/defaults_check.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    results = []
    for item in args.settings.split(","):
        dataset, model_name = item.split(":")
        results.append(run_setting(dataset, model_name, args.methods.split(","), args.seeds, args.fmnist_subset,
                                   args.epochs, args.forget, args.forget_lr))
        atomic_write_json(args.out, {"results": results, "args": vars(args)})
    for r in results:
        print("\n" + markdown(r))
    print(f"total {time.perf_counter() - start:.0f} s (2 shared CPU cores, {args.threads} thread(s); pessimistic)")


if __name__ == "__main__":
    main()
