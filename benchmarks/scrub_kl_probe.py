"""SCRUB's max step on a memorized model: KL(p_T || p_S) and its gradient at step 0 (docs/tuning.md, 4th search).

The student is a copy of the original (the teacher), so the KL is 0 in eval mode; in train mode (how the engine
and the SCRUB reference code run the max step) BatchNorm's batch statistics make it small but non-zero. Prints the
KL and the norm of the gradient of -KL for T in {1, 4}, student in train and eval mode, on one forget batch of a
validation seed (the validation split only: the test set is never read).

    PYTHONPATH=src python benchmarks/scrub_kl_probe.py --original /tmp/i14/tune/cache/original-<key>
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F

from dualoptim.vision.bench import validation_data
from dualoptim.vision.checkpoint import load_classifier
from dualoptim.vision.data import load_dataset
from dualoptim.vision.forget import make_forget_split


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--original", required=True, help="folder of the quick bench's original model (its cache entry)")
    ap.add_argument("--seed", type=int, default=100, help="validation forget-set seed")
    ap.add_argument("--batch", type=int, default=128)
    args = ap.parse_args()
    torch.set_num_threads(1)
    original, meta, _ = load_classifier(args.original)
    data = validation_data(load_dataset(meta.dataset), meta.train_subset, meta.subset_seed, 5000)
    split = make_forget_split("random:0.1", data.train_y, args.seed)
    x = data.train_x[split.forget_idx][: args.batch].float()
    teacher = copy.deepcopy(original).eval()
    with torch.no_grad():
        teacher_logits = teacher(x)
    top = F.softmax(teacher_logits, 1).max(1).values
    print(f"teacher top probability on the forget batch: mean {top.mean():.4f}, min {top.min():.4f}")
    for mode in ("train", "eval"):
        for T in (1.0, 4.0):
            student = copy.deepcopy(original).train(mode == "train")
            kl = F.kl_div(F.log_softmax(student(x) / T, 1), F.log_softmax(teacher_logits / T, 1),
                          reduction="batchmean", log_target=True) * T**2
            (-kl).backward()
            grad = torch.cat([p.grad.reshape(-1) for p in student.parameters() if p.grad is not None])
            print(f"student {mode:5s} T={T:g}: KL {kl.item():.3e}, |grad of -KL| {grad.norm().item():.3e}")


if __name__ == "__main__":
    main()
