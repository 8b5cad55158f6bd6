"""Does the Gap's membership attack tell a model's forget set from held-out data where the loss AUC cannot?

Rule v5's check before adding the attack to the retrain-free target (docs/defaults.md): on the digits settings
of benchmarks/defaults_check.py (the v3 and v4 draws: originals of seeds 1 and 2, forget sets and Retrains of
seeds 2-5), for the Original and the Retrain, the entropy-LR attack of ``metrics.mia_entropy_lr`` (fitted on
retain = member vs held-out = non-member) gives the share of forget samples it calls member (m_f) and of the
held-out samples (m_h); z = (m_f - m_h) / two-proportion standard error. Full sets, no subsampling.

    OMP_NUM_THREADS=1 python benchmarks/mia_target_check.py --out runs/mia_target_check.json
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
from defaults_check import make_model
from sklearn.linear_model import LogisticRegression

from dualoptim.io import atomic_write_json
from dualoptim.vision import TrainConfig, load_dataset, make_forget_split, seed_everything
from dualoptim.vision.calibrate import attack_auc, per_sample_loss, probs_of
from dualoptim.vision.metrics import entropy
from dualoptim.vision.train import train_classifier

DRAWS = ((1, (2, 3)), (2, (4, 5)))  # (original seed, forget/Retrain seeds): rule v3's and v4's measurements


def rates(net: torch.nn.Module, data, f: torch.Tensor, r: torch.Tensor) -> dict[str, float]:
    pf, pr, ph = (probs_of(net, x) for x in (data.train_x[f], data.train_x[r], data.test_x))
    ef, er, eh = (entropy(p).numpy().reshape(-1, 1) for p in (pf, pr, ph))
    clf = LogisticRegression(class_weight="balanced").fit(np.concatenate([er, eh]),
                                                          np.r_[np.ones(len(er)), np.zeros(len(eh))])
    mf, mh = 100 * clf.predict(ef).mean(), 100 * clf.predict(eh).mean()
    p = (mf + mh) / 200
    se = 100 * math.sqrt(max(p * (1 - p), 1e-9) * (1 / len(ef) + 1 / len(eh)))
    auc = attack_auc(per_sample_loss(pf, data.train_y[f]), per_sample_loss(ph, data.test_y))
    return {"m_f": float(mf), "m_h": float(mh), "se": se, "z": float((mf - mh) / se), "loss_auc": auc}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/mia_target_check.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("digits")
    rows = []
    for model_name, forget in (("cnn", "random:0.1"), ("mlp", "random:0.1"), ("mlp", "random:0.3")):
        recipe = TrainConfig(epochs=40, lr=0.05 if model_name == "mlp" else 0.1, augment="none",
                             channels_last=model_name != "mlp")
        for original_seed, seeds in DRAWS:
            seed_everything(original_seed)
            original = make_model(model_name, data)
            train_classifier(original, data, None, TrainConfig(**{**recipe.to_dict(), "seed": original_seed}),
                             progress=False)
            for seed in seeds:
                split = make_forget_split(forget, data.train_y, seed)
                seed_everything(seed)
                retrain = make_model(model_name, data)
                train_classifier(retrain, data, split.retain_idx, TrainConfig(**{**recipe.to_dict(), "seed": seed}),
                                 progress=False)
                for name, net in (("Original", original), ("Retrain", retrain)):
                    row = {"setting": f"digits/{model_name}/{forget}", "seed": seed, "model": name,
                           **rates(net, data, split.forget_idx, split.retain_idx)}
                    rows.append(row)
                    print(f"{row['setting']} seed {seed} {name:8s}: m_f {row['m_f']:.1f} m_h {row['m_h']:.1f} "
                          f"z {row['z']:+.2f} loss AUC {row['loss_auc']:.3f}", flush=True)
    atomic_write_json(args.out, {"rows": rows})


if __name__ == "__main__":
    main()
