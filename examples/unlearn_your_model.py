"""Unlearn your own model: a torchvision-style network, your own Dataset, an audit you can show.

    python examples/unlearn_your_model.py --out runs/unlearn_your_model

1. A user's model written the torchvision way (``features`` -> ``avgpool`` -> ``classifier`` with dropout)
   and a user's own ``torch.utils.data.Dataset`` (scikit-learn's bundled digits, upsampled to 16x16).
2. The user's usual training loop trains the original model on the whole training set.
3. ``dualoptim.unlearn`` removes 10% of the training samples with SalUn + DualOptim (Adam for forget
   steps, SGD for retain steps). No learning rate is given, so the run calibrates itself without a Retrain
   (the test set shows how unseen data scores; a short probe picks the forget lr; unlearning stops when the
   forget set scores like unseen data: docs/defaults.md). For the report only, it also trains a Retrain
   reference with the same recipe; the audit has FA/UA/RA/TA, both MIA variants, Gap to Retrain, timings,
   how the run was calibrated and the verdict ("forgotten: ..." / "NOT forgotten: ..." / "utility lost: ...").
4. The audit is written as ``audit.json`` and one self-contained ``audit.html``.

Measured with ``--threads 1`` on 2 CPU cores shared with other jobs (rules v3 / v5 of docs/defaults.md):
16 s CPU (user + sys), 19 s wall, all of it (training, calibrated unlearning, Retrain, audit). Without
``--train-epochs`` (rule v3's budget; the audit says "time budget unknown") the run spends its 10 epochs
(130 steps) and the verdict is "forgotten" (forget accuracy 98.7 % vs 94.9 % on the test split, allowed +4.4;
attack AUC 0.54), close to the Retrain's forget accuracy (99.3 %) — but the Gap to Retrain (4.02) is above
doing nothing's (1.37): the entropy MIA falls to 76 % vs the Retrain's 90 %. With ``--train-epochs 15`` (the
recipe's length: rule v5 caps the work at 20 % of a Retrain) this tiny model's Retrain is 165 units of work
and 20 % of it (33) is less than the checks and SalUn's mask cost (40), so the run gets the floor, one
forget cycle (6 steps; planned work 29 % of a Retrain's, the audit says so; 13 s CPU in all): forget
accuracy stays 100 % and the verdict says "NOT forgotten" (entropy-attack member rate 94.0 % vs 78.5 % on the
test split; Gap 2.09 vs doing nothing's 2.08 against that run's Retrain, which differs: it is trained after
unlearning, from a different random state). This
Dataset's test split (the last 297 digits) is harder than its training images, so held-out data drawn like
the training data would make a better target (docs/defaults.md). No GPU needed;
on a CUDA machine move the model to "cuda" and the data follows it.
"""

from __future__ import annotations

import argparse
import io
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

import dualoptim
from dualoptim.io import atomic_write_bytes

# ----------------------------------------------------------------------- the user's model (torchvision style)

class SmallVGG(nn.Module):
    """A VGG/AlexNet-shaped classifier as torchvision writes them: features, avgpool, classifier."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, dropout: float = 0.3) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 16, kernel_size=3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
            nn.Conv2d(16, 32, kernel_size=3, padding=1), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((4, 4))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout), nn.Linear(32 * 4 * 4, 128), nn.ReLU(inplace=True),
            nn.Dropout(p=dropout), nn.Linear(128, num_classes),
        )
        for m in self.modules():  # torchvision's VGG initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


# ---------------------------------------------------------------------------------- the user's own Dataset

class DigitsDataset(Dataset):
    """scikit-learn's 8x8 digits as 1x16x16 images in [0, 1]; the last 297 images are the test split."""

    def __init__(self, train: bool = True) -> None:
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        images = torch.tensor(x, dtype=torch.float32).view(-1, 1, 8, 8) / 16.0
        images = F.interpolate(images, size=16, mode="bilinear", align_corners=False)
        part = slice(0, 1500) if train else slice(1500, None)
        self.images, self.labels = images[part], torch.tensor(y)[part]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.images[i], int(self.labels[i])


# ------------------------------------------------------------------------------ the user's training loop

RECIPE = {"epochs": 15, "lr": 0.05, "batch_size": 64, "momentum": 0.9, "weight_decay": 5e-4}


def train(model: nn.Module, data: Dataset, epochs: int, lr: float, batch_size: int, momentum: float,
          weight_decay: float) -> None:
    """Plain SGD with a per-step cosine schedule (the recipe Retrain repeats on the retain set)."""
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * len(loader))
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/unlearn_your_model", help="folder for audit.json and audit.html")
    p.add_argument("--method", default="salun", help="ft | ga | rl | salun | scrub | sfron")
    p.add_argument("--optim", default="adam+sgd", help="adam+sgd (DualOptim) or sgd (shared baseline)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is fastest on a busy machine)")
    p.add_argument("--train-epochs", type=int, default=None, help="tell unlearn how long the original was trained "
                   f"(here {RECIPE['epochs']}): caps its work at 20%% of a Retrain (rule v4 of docs/defaults.md)")
    args = p.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()

    torch.manual_seed(args.seed)
    train_set, test_set = DigitsDataset(train=True), DigitsDataset(train=False)
    model = SmallVGG(num_classes=10)
    train(model, train_set, **RECIPE)

    # The deletion request: 10% of the training samples. Forget and retain are Subsets of the SAME dataset,
    # so dualoptim can check that they do not overlap.
    order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(args.seed)).tolist()
    n_forget = len(train_set) // 10
    forget, retain = Subset(train_set, order[:n_forget]), Subset(train_set, order[n_forget:])

    # retrain=<a function returning a fresh model> trains Retrain with our recipe on the retain set (retrain=True
    # would re-initialise a copy with each layer's reset_parameters() instead of SmallVGG's own initialisation).
    out = dualoptim.unlearn(model, forget=forget, retain=retain, test=test_set, method=args.method,
                            optim=args.optim, retrain=lambda: SmallVGG(num_classes=10),
                            retrain_recipe={**RECIPE, "seed": args.seed},
                            seed=args.seed, train_epochs=args.train_epochs, eval_every=25, progress=False)
    print(out.audit.summary())  # ends with the verdict and any warning
    folder = Path(args.out)
    out.audit.write_json(folder / "audit.json")
    out.audit.write_html(folder / "audit.html")
    buffer = io.BytesIO()
    torch.save(out.model.state_dict(), buffer)  # your model, saved as you usually do (here atomically)
    atomic_write_bytes(folder / "unlearned.pt", buffer.getvalue())
    print(f"wrote {folder / 'audit.json'}, {folder / 'audit.html'} and {folder / 'unlearned.pt'} "
          f"({time.perf_counter() - start:.0f} s in all)")


if __name__ == "__main__":
    main()
