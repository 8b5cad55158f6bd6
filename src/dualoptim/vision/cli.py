"""``dualoptim train | retrain | eval``: original model, Retrain reference and evaluation on a forget set.

    dualoptim train   --dataset fashion-mnist --model cnn --epochs 5 --out runs/fmnist/original
    dualoptim retrain --original runs/fmnist/original --forget random:0.1 --seed 1 --out runs/fmnist/retrain-1
    dualoptim eval    --checkpoint runs/fmnist/retrain-1 --forget random:0.1 --seed 1 --json eval.json

``retrain`` trains from scratch on the retain set of the ORIGINAL model's training set with the original's
recipe (any recipe flag overrides it); the forget split is drawn with ``--seed`` and the model is
initialised and shuffled with ``--train-seed`` (default: ``--seed``, so trials differ in both).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from ..errors import ConfigError
from ..runtime import add_runtime_args, parse_key_values

RECIPE_FLAGS = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "schedule", "warmup_epochs", "augment",
                "label_smoothing", "bf16", "channels_last")


def _add_training_args(p: argparse.ArgumentParser, defaults: bool) -> None:
    """Recipe flags, then :func:`add_common` with ``--out`` (the checkpoint written); with ``defaults=False`` the
    recipe flags default to None (= keep the original's value)."""
    d = (lambda v: v) if defaults else (lambda v: None)
    g = p.add_argument_group("recipe (SGD + cosine, the paper's pre-training recipe)")
    g.add_argument("--epochs", type=int, default=None, help="epochs (default: the dataset's default)"
                   if defaults else "epochs (default: the original's)")
    g.add_argument("--batch-size", type=int, default=d(128))
    g.add_argument("--lr", type=float, default=d(0.1))
    g.add_argument("--momentum", type=float, default=d(0.9))
    g.add_argument("--weight-decay", type=float, default=d(5e-4))
    g.add_argument("--schedule", choices=("cosine", "constant"), default=d("cosine"))
    g.add_argument("--warmup-epochs", type=float, default=d(0.0))
    g.add_argument("--augment", default=d("default"), help="none | crop | flip | crop_flip | default")
    g.add_argument("--label-smoothing", type=float, default=d(0.0))
    g.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=d(False), help="bfloat16 autocast")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=d(True))
    add_common(p, out="checkpoint folder to write")


def add_split_args(p: argparse.ArgumentParser, stored_in: str | None = None) -> None:
    """``--forget`` and ``--seed``: a split to draw (required), or with ``stored_in`` by default the split stored in
    that checkpoint (see :func:`stored_split`); ``--no-svc``: the evaluation on it skips the SVC MIA."""
    spec = "random:<fraction> | class:<k> | file:PATH"
    if stored_in is None:
        p.add_argument("--forget", required=True, help=spec)
        p.add_argument("--seed", type=int, default=0, help="seed of the forget split (random:)")
    else:
        p.add_argument("--forget", default=None, help=f"{spec} (default: the split stored in {stored_in})")
        p.add_argument("--seed", type=int, default=None, help="seed of the forget split (default: the stored one "
                       "for the stored spec, else 0)")
    p.add_argument("--no-svc", dest="mia_svc", action="store_false", help="skip the SVC-confidence MIA (the slow one)")


def add_common(p: argparse.ArgumentParser, out: str | None = None) -> None:
    """``--data-dir``, ``--threads``, ``--no-progress`` and, with ``out`` (its help), ``--out`` + ``--overwrite``."""
    p.add_argument("--data-dir", default=None, help="folder searched first for the dataset files (else "
                   "$DUALOPTIM_DATA_DIR); then the system location and ~/.cache/dualoptim")
    add_runtime_args(p, device=True)
    if out:
        p.add_argument("--out", required=True, help=out)
        p.add_argument("--overwrite", action="store_true", help="replace an existing output folder written by "
                       "dualoptim (never a folder without the .dualoptim marker, never an input)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``train``, ``retrain`` and ``eval`` to the ``dualoptim`` command."""
    from .data import list_datasets
    from .models import list_models

    p = sub.add_parser("train", help="train an original classifier on a whole training set",
                       description="Train the original model (SGD momentum 0.9, wd 5e-4, cosine, batch 128).")
    p.add_argument("--dataset", default="fashion-mnist", choices=list_datasets(), help="default: fashion-mnist")
    p.add_argument("--model", default=None, choices=list_models(), help="default: the dataset's default (cnn width 16 "
                   "for fashion-mnist)")
    p.add_argument("--width", type=int, default=None, help="model width (cnn, resnet8/20/18)")
    p.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE", help="extra model option")
    p.add_argument("--train-subset", type=int, default=None, help="train on a stratified subset of N images")
    p.add_argument("--subset-seed", type=int, default=0)
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation, shuffling and augmentation")
    _add_training_args(p, defaults=True)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("retrain", help="train Retrain (from scratch on the retain set) for a forget set",
                       description="Retrain: the original's recipe on its training set minus the forget set.")
    p.add_argument("--original", required=True, help="checkpoint folder of the original model")
    add_split_args(p)
    p.add_argument("--train-seed", type=int, default=None, help="seed of init/shuffling (default: --seed)")
    _add_training_args(p, defaults=False)
    p.set_defaults(func=cmd_retrain)

    p = sub.add_parser("eval", help="FA/UA/RA/TA/MIA of a checkpoint on a forget set",
                       description="Evaluate a checkpoint on a forget set (no augmentation, all in %%).")
    p.add_argument("--checkpoint", required=True, help="checkpoint folder")
    add_split_args(p, stored_in="the checkpoint")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the metrics and forget indices here")
    p.add_argument("--batch-size", type=int, default=256, help="evaluation batch size (256: fastest on CPU here)")
    add_common(p)
    p.set_defaults(func=cmd_eval)


# ------------------------------------------------------------------------------------ helpers

def forget_file(spec: str | None) -> str | None:
    """The index file a forget spec reads (``file:PATH`` or a bare path), else None: an input of the command."""
    if spec is None:
        return None
    kind, _, arg = spec.partition(":")
    return arg if kind == "file" else (spec if kind not in ("random", "class") else None)


def stored_split(checkpoint: str, meta: Any, forget: str | None, seed: int | None) -> tuple[str, int]:
    """The forget spec and seed a command evaluates: ``--forget``/``--seed``, else the split stored in ``meta``
    (its seed only for its own spec; another spec without ``--seed`` gets seed 0)."""
    stored = meta.split or {}
    spec = forget or stored.get("spec")
    if spec is None:
        raise ConfigError(f"{checkpoint} stores no forget set: pass --forget (e.g. random:0.1) and --seed")
    return spec, seed if seed is not None else (stored.get("seed", 0) if spec == stored.get("spec") else 0)


def _recipe(args: argparse.Namespace, base: dict[str, Any], seed: int):
    """The one place where recipe flags become a TrainConfig (flags left at None keep ``base``'s value; ``base``
    comes from a checkpoint: every field is type-checked)."""
    from .train import TrainConfig

    fields = dict(base)
    for name in RECIPE_FLAGS:
        value = getattr(args, name)
        if value is not None:
            fields[name] = value
    fields["seed"] = seed
    return TrainConfig.from_dict(fields)


def print_metrics(title: str, metrics: dict[str, float]) -> None:
    """The metrics as a terminal table with their definitions."""
    from ..tables import Table
    from .metrics import DESCRIPTIONS

    rows = [[k, f"{v:.2f}", DESCRIPTIONS.get(k, "")] for k, v in metrics.items()]
    Table(["metric", "value (%)", "meaning"], rows, title, align="lrl").print()


def _timings(result: dict[str, Any]) -> dict[str, float]:
    return {"train_s": round(result["time_s"], 3), "train_cpu_s": round(result["cpu_s"], 3),
            "images_per_s": round(result["images_per_s"], 1)}


# ----------------------------------------------------------------------------------- commands

def cmd_train(args: argparse.Namespace) -> int:
    from ..io import check_output
    from .checkpoint import ClassifierMeta, save_classifier
    from .data import get_dataset_info, load_dataset
    from .metrics import accuracy
    from .train import train_new

    check_output(args.out, inputs=(args.data_dir,), overwrite=args.overwrite)  # before any work
    info = get_dataset_info(args.dataset)
    model_name = args.model or info.default_model
    options = dict(info.default_model_options) if model_name == info.default_model else {}
    options.update(parse_key_values(args.model_option, "--model-option"))
    if args.width is not None:
        options["width"] = args.width
    if args.epochs is None:
        args.epochs = info.default_epochs
    cfg = _recipe(args, {}, seed=args.seed)
    data = load_dataset(args.dataset, args.data_dir, args.train_subset, args.subset_seed)
    meta = ClassifierMeta.of(data, model_name, options, role="original", init_seed=args.seed)
    model, result = train_new(model_name, data, None, cfg, cfg.seed, options, args.progress, "original")
    meta.recipe, meta.timings = cfg.to_dict(), _timings(result)
    meta.metrics = {"TA": accuracy(model, data.test_x, data.test_y),
                    "train_acc": accuracy(model, data.train_x, data.train_y)}
    save_classifier(args.out, model, meta)
    print(f"trained {model_name} on {data.name} ({data.num_train} images, {cfg.epochs} epochs) in "
          f"{result['time_s']:.1f} s ({result['images_per_s']:.0f} img/s): test accuracy "
          f"{meta.metrics['TA']:.2f}%, train accuracy {meta.metrics['train_acc']:.2f}% -> {args.out}")
    return 0


def cmd_retrain(args: argparse.Namespace) -> int:
    from ..io import check_output
    from .checkpoint import ClassifierMeta, dataset_for, load_classifier, save_classifier, weights_digest
    from .forget import make_forget_split
    from .metrics import evaluate
    from .train import train_new

    check_output(args.out, inputs=(args.original, forget_file(args.forget), args.data_dir), overwrite=args.overwrite)
    original, ometa, _ = load_classifier(args.original, expect={"role": "original"})
    data = dataset_for(ometa, args.data_dir)
    split = make_forget_split(args.forget, data.train_y, args.seed)  # validated before any training
    train_seed = args.seed if args.train_seed is None else args.train_seed
    cfg = _recipe(args, ometa.recipe, seed=train_seed)
    meta = ClassifierMeta.of(data, ometa.model, ometa.model_options, role="retrain", init_seed=train_seed)
    meta.original = {"path": str(args.original), "weights_sha256": weights_digest(original.state_dict())}
    model, result = train_new(ometa.model, data, split.retain_idx, cfg, cfg.seed, ometa.model_options, args.progress,
                              "retrain")
    meta.recipe, meta.timings = cfg.to_dict(), _timings(result)
    start = time.perf_counter()
    meta.metrics = evaluate(model, data, split, mia_svc=args.mia_svc, seed=args.seed)
    meta.timings["eval_s"] = round(time.perf_counter() - start, 3)
    save_classifier(args.out, model, meta, split)
    print(f"Retrain: {split.num_forget} forgotten / {split.num_retain} retained ({split.spec}, seed {split.seed}, "
          f"sha256 {split.digest[:12]}), trained in {result['time_s']:.1f} s -> {args.out}")
    print_metrics(f"Retrain on {data.name}, forget {split.spec} seed {split.seed}", meta.metrics)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from ..io import atomic_write_json, check_output
    from .checkpoint import dataset_for, load_classifier
    from .forget import make_forget_split, split_from_indices
    from .metrics import DESCRIPTIONS, evaluate

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.json:
        check_output(args.json, inputs=(args.checkpoint, args.data_dir, forget_file(args.forget)), kind="file",
                     flag="--json")
    model, meta, stored_idx = load_classifier(args.checkpoint)
    stored = meta.split or {}
    spec, seed = stored_split(args.checkpoint, meta, args.forget, args.seed)
    data = dataset_for(meta, args.data_dir)
    split = make_forget_split(spec, data.train_y, seed)
    warnings = []  # they change what the numbers mean: printed AND written into the JSON
    if stored and stored.get("digest") != split.digest:
        if spec == stored.get("spec") and seed == stored.get("seed") and stored_idx is not None:
            # the stored indices (checked against their digest on load) are the truth; the spec/seed next to
            # them no longer reproduce them (edited metadata, or another version of the data)
            split = split_from_indices(stored_idx, len(data.train_y), spec, seed)
            warnings.append(f"{args.checkpoint}'s split metadata ({spec} seed {seed}) does not reproduce its "
                            f"stored forget indices; evaluating on the {split.num_forget} stored indices "
                            f"(sha256 {split.digest[:12]})")
        else:
            warnings.append(f"{args.checkpoint} was made for forget set {stored.get('spec')} seed "
                            f"{stored.get('seed')} (sha256 {str(stored.get('digest'))[:12]}), evaluating on {spec} "
                            f"seed {seed} (sha256 {split.digest[:12]})")
    for w in warnings:
        print(f"dualoptim: warning: {w}", file=sys.stderr)
    start = time.perf_counter()
    metrics = evaluate(model, data, split, batch_size=args.batch_size, mia_svc=args.mia_svc, seed=seed)
    elapsed = time.perf_counter() - start
    print_metrics(f"{meta.role} {meta.model} on {data.name}, forget {spec} seed {seed} "
                  f"({split.num_forget} samples, sha256 {split.digest[:12]})", metrics)
    if args.json:
        atomic_write_json(args.json, {"checkpoint": str(args.checkpoint), "role": meta.role, "model": meta.model,
                                      "dataset": meta.dataset, "train_subset": meta.train_subset,
                                      "subset_seed": meta.subset_seed, "split": split.describe(),
                                      "forget_indices": split.forget_idx.tolist(), "metrics": metrics,
                                      "metric_definitions": {k: v for k, v in DESCRIPTIONS.items() if k in metrics},
                                      "eval_s": round(elapsed, 3), "warnings": warnings})
        print(f"wrote {args.json}")
    return 0
