"""Speed work on calibrated unlearning must not change a decision: run, store, compare.

Runs ``dualoptim.unlearn`` (calibrated, nothing but the data and the method) on two settings of
benchmarks/defaults_check.py (Fashion-MNIST / mlp 10 %: SalUn, SFRon, RL + DualOptim and SalUn + SGD; digits /
cnn class 3: SalUn and SFRon + DualOptim; seed 0) and stores per run the unlearning CPU time, the chosen forget
lr, the probe rows, the stop reason, the steps, every check, the metrics, the verdict and a weight checksum.

    OMP_NUM_THREADS=1 python benchmarks/calibration_speed_check.py --out runs/speed_before.json   # old code
    OMP_NUM_THREADS=1 python benchmarks/calibration_speed_check.py --out runs/speed_after.json    # new code
    python benchmarks/calibration_speed_check.py --compare runs/speed_before.json runs/speed_after.json

``--train-epochs 40`` runs the same cases under rule v5 (its work budget; the originals train for 40 epochs).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

from dualoptim.io import atomic_write_json
from dualoptim.vision import TrainConfig, load_dataset, make_forget_split, seed_everything
from dualoptim.vision.api import unlearn
from dualoptim.vision.train import train_classifier

sys.path.insert(0, str(Path(__file__).parent))
from defaults_check import make_model  # noqa: E402

CASES = (("fashion-mnist", "mlp", "random:0.1", (("salun", "adam+sgd"), ("sfron", "adam+sgd"), ("rl", "adam+sgd"),
                                                 ("salun", "sgd"))),
         ("digits", "cnn", "class:3", (("salun", "adam+sgd"), ("sfron", "adam+sgd"))))
DECISIONS = ("forget_lr", "probe", "stop", "steps", "checks", "unlearned", "verdict", "weights")


def run(train_epochs: int | None = None) -> dict:
    out = {}
    for dataset, model_name, forget, runs in CASES:
        fm = dataset == "fashion-mnist"
        data = load_dataset(dataset, train_subset=2000 if fm else None)
        g = torch.Generator().manual_seed(1234)
        idx = torch.randperm(len(data.test_y), generator=g)[:2000] if fm else torch.arange(len(data.test_y))
        recipe = TrainConfig(epochs=40, lr=0.05 if model_name == "mlp" else 0.1, augment="none",
                             channels_last=model_name != "mlp")
        seed_everything(0)
        original = make_model(model_name, data)
        train_classifier(original, data, None, recipe, progress=False)
        split = make_forget_split(forget, data.train_y, 0)
        f, r = split.forget_idx, split.retain_idx
        sets = dict(forget=(data.train_x[f], data.train_y[f]), retain=(data.train_x[r], data.train_y[r]),
                    test=(data.test_x[idx], data.test_y[idx]))
        for method, optim in runs:
            res = unlearn(copy.deepcopy(original), method=method, optim=optim, seed=0, train_epochs=train_epochs,
                          progress=False, **sets)
            a = json.loads(res.audit.to_json())
            key = f"{dataset}/{model_name}/{forget} {method} [{optim}]"
            out[key] = {"cpu_s": a["timings"]["unlearn_total_cpu_s"], "forget_lr": a["hyperparameters"]["forget_lr"],
                        "probe": a["calibration"].get("probe"), "stop": a["calibration"].get("stop_reason"),
                        "steps": a["timings"]["unlearn_steps"], "checks": a["calibration"].get("checks"),
                        "unlearned": a["unlearned"], "verdict": a["verdict"],
                        "weights": float(sum(p.detach().double().sum() for p in res.model.parameters()))}
            print(f"{key}: {out[key]['cpu_s']:.3f} s CPU, forget lr {out[key]['forget_lr']:.3g}, stop "
                  f"{out[key]['stop']}, {out[key]['steps']} steps", flush=True)
    return out


def compare(before: dict, after: dict) -> bool:
    same_all = True
    for key in before:
        same = key in after and all(before[key][k] == after[key][k] for k in DECISIONS)
        same_all &= same
        cpu = f"{before[key]['cpu_s']:.2f} -> {after[key]['cpu_s']:.2f} s CPU" if key in after else "missing"
        print(f"{key}: {'identical decisions' if same else 'DIFFERENT'}; {cpu}")
    return same_all


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/calibration_speed.json")
    p.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"), default=None)
    p.add_argument("--train-epochs", type=int, default=None, help="pass train_epochs= (rule v5 and its work budget; "
                   "the originals are trained for 40 epochs); default: none (rule v3)")
    args = p.parse_args()
    if args.compare:
        before, after = (json.loads(Path(x).read_text()) for x in args.compare)
        raise SystemExit(0 if compare(before, after) else 1)
    torch.set_num_threads(1)
    atomic_write_json(args.out, run(args.train_epochs))


if __name__ == "__main__":
    main()
