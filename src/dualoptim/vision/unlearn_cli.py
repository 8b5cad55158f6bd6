"""``dualoptim unlearn`` and ``dualoptim methods``.

    dualoptim unlearn --original runs/fmnist/original --forget random:0.1 --seed 1 --method sfron \\
        --optim adam+sgd --out runs/fmnist/sfron-dual-1          # learning rates etc. from the preset
    dualoptim unlearn ... --method salun --optim sgd --forget-lr 0.02 --retain-lr 0.01 --epochs 3 --opt ratio=0.3
    dualoptim methods                                             # methods, options, schedules, presets

``unlearn`` loads the original checkpoint and the exact data it was trained on, draws the forget set with
``--seed`` from that training set, runs the method and writes the unlearned checkpoint (``--out``) plus
``<out>/metrics.json`` (config, FA/UA/RA/TA/MIA/MIA_SVC, timings, per-step history, verdict). Without
``--forget-lr`` the run is calibrated without a Retrain (``--calibrate auto``, docs/defaults.md): the held-out
data (``--heldout test``: the dataset's test split, or a FILE of images and labels) define how unseen data
scores, a short probe picks the forget lr and unlearning stops once the forget set scores like held-out data
(class-wise: its class is no longer predicted) or held-out accuracy drops; it runs through
``dualoptim.unlearn`` on the in-memory tensors (no augmentation). ``--forget-lr`` (or ``--calibrate off``)
runs the preset path: values not given on the command line come from the preset for the original's dataset
(``--preset``; see ``dualoptim methods --presets``). Both print a verdict: "forgotten: ..." / "NOT
forgotten: ..." / "utility lost: ...". Nothing is written unless the run finishes: a NaN/inf loss stops it
with one message naming the step and phase (exit status 2).
"""

from __future__ import annotations

import argparse
import pickle
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from ..runtime import parse_key_values
from .cli import add_common, add_split_args, forget_file, print_metrics

HELDOUT_HELP = ("held-out data the original never trained on; they define 'never seen' for calibration and the "
                "verdict: test (the dataset's test split, default), none (the verdict is then 'unknown' for "
                "sample-wise forgetting), or FILE: a .pt file (torch.save of {'x': X, 'y': Y} or (X, Y)) or a .npz "
                "file (arrays x, y) of float images in the model's input format (normalized like the training set, "
                "as the dataset's test images) and class labels, e.g. a validation set")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``unlearn`` and ``methods`` to the ``dualoptim`` command."""
    from .methods import list_methods
    from .presets import list_presets

    p = sub.add_parser("unlearn", help="unlearn a forget set from a trained classifier",
                       description="Run an unlearning method with a shared optimizer (--optim sgd) or DualOptim "
                                   "(--optim adam+sgd). Unset values come from the preset.")
    p.add_argument("--original", required=True, help="checkpoint folder of the original model")
    add_split_args(p)
    p.add_argument("--unlearn-seed", type=int, default=None, help="seed of shuffling / random labels "
                   "(default: --seed)")
    p.add_argument("--method", required=True, choices=list_methods())
    p.add_argument("--optim", default=None, help="optimizer spec: one name = shared baseline (sgd, adam), "
                   "FORGET+RETAIN = DualOptim (adam+sgd); default: the method's DualOptim spec")
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="method option (repeatable), e.g. --opt ratio=0.5; see `dualoptim methods`")
    p.add_argument("--preset", default="auto", help=f"hyper-parameter preset: auto (by dataset) | "
                   f"{' | '.join(list_presets())}")
    p.add_argument("--calibrate", choices=("auto", "off"), default="auto",
                   help="auto: calibrate without a Retrain unless --forget-lr is given (docs/defaults.md); off: the "
                        "preset's values")
    p.add_argument("--heldout", default="test", metavar="test|none|FILE", help=HELDOUT_HELP)
    g = p.add_argument_group("overrides (default: the preset's value)")
    g.add_argument("--forget-lr", type=float, default=None)
    g.add_argument("--retain-lr", type=float, default=None)
    g.add_argument("--epochs", type=int, default=None, help="epochs (epoch-mode methods)")
    g.add_argument("--iterations", type=int, default=None, help="outer iterations (SFRon)")
    g.add_argument("--train-epochs", default="auto", metavar="auto|N|recipe|none",
                   help="epochs the original was trained for: a calibrated run then follows rule v6 and takes at most "
                   "~20%% of a Retrain of that length (docs/defaults.md). auto (default): the original checkpoint's "
                   "recipe when it records them, else none; recipe: the checkpoint's, required; none: rule v3 (no "
                   "time budget)")
    g.add_argument("--batch-size", type=int, default=None, help="batch size of both loaders (default 128)")
    g.add_argument("--retain-batches-per-epoch", type=int, default=None, help="cap retain steps per epoch")
    g.add_argument("--optim-option", action="append", default=[], metavar="KEY=VALUE",
                   help="optimizer option, e.g. momentum=0.99 or forget_weight_decay=0 (JSON values)")
    g.add_argument("--augment", default=None, help="none | crop | crop_flip | default (the dataset's)")
    g.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--track-grads", action="store_true", help="record gradient norms and forget/retain cosine")
    p.add_argument("--eval-every", type=int, default=None, help="record FA/RA/TA/MIA every K steps")
    add_common(p, out="checkpoint folder to write (plus OUT/metrics.json)")
    p.set_defaults(func=cmd_unlearn)

    p = sub.add_parser("methods", help="list unlearning methods, their options and presets")
    p.add_argument("--presets", action="store_true", help="also print every preset table")
    p.set_defaults(func=cmd_methods)


def config_from_args(args: argparse.Namespace, dataset: str):
    """The one place where the ``unlearn`` namespace becomes an :class:`UnlearnConfig`."""
    from .unlearn import UnlearnConfig

    batch = args.batch_size
    return UnlearnConfig.from_preset(
        args.method, args.optim, dataset=dataset, preset=args.preset,
        options=parse_key_values(args.opt, "--opt", convert=False),  # typed by the method's option types
        forget_lr=args.forget_lr, retain_lr=args.retain_lr, epochs=args.epochs, iterations=args.iterations,
        forget_batch_size=batch, retain_batch_size=batch, retain_batches_per_epoch=args.retain_batches_per_epoch,
        optim_options=parse_key_values(args.optim_option, "--optim-option") or None, augment=args.augment,
        seed=args.seed if args.unlearn_seed is None else args.unlearn_seed, autocast="bf16" if args.bf16 else None,
        channels_last=args.channels_last, track_grads=args.track_grads, eval_every=args.eval_every)


def cmd_unlearn(args: argparse.Namespace) -> int:

    from ..io import atomic_write_json, check_output
    from .audit import budget_text, degenerate_warnings
    from .calibrate import attack_target, final_verdict
    from .checkpoint import dataset_for, load_classifier, save_classifier, weights_digest
    from .forget import make_forget_split
    from .metrics import compute_outputs, metrics_from_outputs
    from .unlearn import unlearn_classifier

    out = check_output(args.out, inputs=(args.original, args.data_dir, forget_file(args.forget),
                                         heldout_file(args.heldout)),
                       overwrite=args.overwrite)  # before any work: not over an input, writable, ours to replace
    model, meta, _ = load_classifier(args.original, expect={"role": "original"})
    cfg = config_from_args(args, meta.dataset)  # every option is checked before data is loaded
    train_epochs = train_epochs_of(args, meta)
    if args.calibrate == "auto" and args.forget_lr is None:
        preset_only = [flag for flag, value in (("--augment", args.augment), ("--bf16", args.bf16 or None),
                                                ("--channels-last", args.channels_last),
                                                ("--retain-batches-per-epoch", args.retain_batches_per_epoch))
                       if value is not None]
        if preset_only:
            raise ConfigError(f"{', '.join(preset_only)} only apply to the preset path: pass --forget-lr (or "
                              "--calibrate off), or drop them for the calibrated run")
    data = dataset_for(meta, args.data_dir)
    split = make_forget_split(args.forget, data.train_y, args.seed)
    original = {"path": str(args.original), "weights_sha256": weights_digest(model.state_dict())}

    heldout, heldout_name = heldout_data(args.heldout, data)
    before = verdict_outputs(model, data, split, heldout)
    if args.calibrate == "auto" and args.forget_lr is None:
        model, report, line = _calibrated(model, data, split, cfg, args, heldout, *train_epochs)
    else:
        model, result = unlearn_classifier(model, data, split, cfg, progress=args.progress)
        report = {**result.summary(), "evals": result.evals, "history": result.history,
                  "calibration": {"mode": "off", "reason": "--forget-lr given" if args.forget_lr is not None
                                  else "--calibrate off"}}
        report["timings"] = {"unlearn_s": round(result.seconds, 3), "prepare_s": round(result.prepare_seconds, 3),
                             "total_s": round(result.total_seconds, 3)}
        line = (f"{cfg.method} with {cfg.optim} ({result.optimizer} optimizer state; forget lr {cfg.forget_lr:g}, "
                f"retain lr {cfg.retain_lr:g}, preset {cfg.preset}): {result.forget_steps} forget + "
                f"{result.retain_steps} retain steps in {result.seconds:.1f} s (+{result.prepare_seconds:.1f} s "
                f"preparation)")
    start = time.perf_counter()
    outs = compute_outputs(model, data, split)  # one forward pass per set for the metrics and the verdict
    metrics = metrics_from_outputs(outs, data, split, mia_svc=args.mia_svc, seed=args.seed)
    verdict, details = final_verdict(before, verdict_outputs(model, data, split, heldout, outs), heldout_name,
                                     mia=attack_target(report["calibration"]))  # the run's own target
    report["timings"]["eval_s"] = round(time.perf_counter() - start, 3)
    warnings = degenerate_warnings("unlearned", metrics, data.num_classes, model)

    meta.role, meta.original, meta.metrics, meta.versions = "unlearned", original, metrics, {}
    meta.timings = dict(report["timings"])
    # written only now: a failed run (e.g. DivergenceError) leaves nothing behind
    save_classifier(out, model, meta, split)
    atomic_write_json(out / "metrics.json", {
        "original": original, "dataset": meta.dataset, "train_subset": meta.train_subset, "model": meta.model,
        "split": split.describe(), "metrics": metrics, "verdict": verdict, "verdict_details": details,
        "warnings": warnings, "heldout": args.heldout, **report})
    print(f"{line} -> {out}")
    if report["calibration"].get("budget"):
        print(budget_text(report["calibration"]["budget"]))
    print_metrics(f"{cfg.method} {cfg.optim} on {data.name}, forget {split.spec} seed {split.seed}", metrics)
    print(f"verdict: {verdict}")
    for w in warnings:
        print(f"warning: {w}")
    return 0


def heldout_file(value: str | None) -> str | None:
    """The file a ``--heldout`` value reads (anything but ``test`` / ``none``), else None: an input of the command."""
    return None if value in (None, "test", "none") else value


def heldout_data(value: str, data: Any) -> tuple[tuple[torch.Tensor, torch.Tensor] | None, str]:
    """The held-out tensors ``(x, y)`` named by ``--heldout`` (see :data:`HELDOUT_HELP`), or None for ``none``,
    and how the verdict names them. A file is checked against ``data`` (image shape, label range)."""
    if value == "test":
        return (data.test_x, data.test_y), "held-out (test split)"
    if value == "none":
        return None, "held-out"
    path = Path(value)
    flag = f"--heldout {value}"
    if not path.is_file():
        raise ConfigError(f"{flag}: no such file (use test, none or a .pt / .npz file of images and labels)")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                missing = {"x", "y"} - set(z.files)
                if missing:
                    raise ConfigError(f"{flag}: the .npz file has arrays {sorted(z.files)}, needs 'x' and 'y'")
                x, y = torch.from_numpy(z["x"]), torch.from_numpy(z["y"])
        elif path.suffix in (".pt", ".pth"):
            obj = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(obj, dict) and {"x", "y"} <= set(obj):
                x, y = obj["x"], obj["y"]
            elif isinstance(obj, (tuple, list)) and len(obj) == 2:
                x, y = obj
            else:
                raise ConfigError(f"{flag}: expected {{'x': images, 'y': labels}} or (images, labels) in the file")
        else:
            raise ConfigError(f"{flag}: unknown file type {path.suffix!r} (use .pt or .npz)")
    except (OSError, ValueError, RuntimeError, pickle.UnpicklingError) as err:
        raise ConfigError(f"{flag}: cannot read it ({err})") from None
    if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)):
        raise ConfigError(f"{flag}: images and labels must be tensors / arrays")
    want = tuple(data.test_x.shape[1:])
    if not x.is_floating_point() or tuple(x.shape[1:]) != want or x.ndim != 4:
        raise ConfigError(f"{flag}: images are {x.dtype} {tuple(x.shape)}; expected float "
                          f"(N, {', '.join(map(str, want))}) in the model's input format (normalized like the "
                          "dataset's training images)")
    y = y.reshape(-1)
    if y.is_floating_point() or y.dtype == torch.bool or len(y) != len(x) or not len(y):
        raise ConfigError(f"{flag}: expected one integer class label per image; got {len(y)} {y.dtype} labels for "
                          f"{len(x)} images")
    if int(y.min()) < 0 or int(y.max()) >= data.num_classes:
        raise ConfigError(f"{flag}: labels must be class indices in [0, {data.num_classes}); got range "
                          f"[{int(y.min())}, {int(y.max())}]")
    return (x.to(data.test_x.dtype).contiguous(), y.long()), f"held-out ({path.name})"


def verdict_outputs(model: Any, data: Any, split: Any, heldout: Any, outs: Any = None) -> tuple:
    """((forget probs, labels), (retain probs, labels), (held-out probs, labels) or None): what
    ``calibrate.final_verdict`` reads, from ``outs`` (``metrics.compute_outputs`` of ``model``) when given, else
    from forward passes on these sets alone (the test split's only when it is the held-out data)."""
    from .metrics import compute_outputs, predict_probs

    test = heldout is not None and heldout[0] is data.test_x  # --heldout test hands over data.test_x itself
    if outs is not None or test:
        outs = outs or compute_outputs(model, data, split)
        forget, retain = outs.forget, outs.retain
    else:  # --heldout FILE / none: the test split's outputs would not be read
        forget = predict_probs(model, data.train_x[split.forget_idx])
        retain = predict_probs(model, data.train_x[split.retain_idx])
    held = None if heldout is None else (outs.test if test else predict_probs(model, heldout[0]), heldout[1])
    return (forget, data.train_y[split.forget_idx]), (retain, data.train_y[split.retain_idx]), held


def train_epochs_of(args: argparse.Namespace, meta: Any) -> tuple[int | None, str | None]:
    """How long the original was trained and where that comes from: ``--train-epochs N``, ``recipe`` (the
    checkpoint's ``recipe.epochs``, required), ``auto`` (the recipe's when recorded), else ``(None, None)`` (no time
    budget: rule v3)."""
    if args.train_epochs in (None, "none"):
        return None, None
    if args.train_epochs in ("recipe", "auto"):
        epochs = (meta.recipe or {}).get("epochs")
        if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs >= 1:
            return epochs, "the original checkpoint's recipe"
        if args.train_epochs == "auto":
            return None, None
        raise ConfigError("--train-epochs recipe: the original checkpoint records no training epochs; pass "
                          "--train-epochs N")
    try:
        epochs = int(args.train_epochs)
    except ValueError:
        epochs = 0
    if epochs < 1:
        raise ConfigError(f"--train-epochs must be auto, recipe, none or an integer >= 1 (the epochs the original was "
                          f"trained for), got {args.train_epochs!r}")
    return epochs, "--train-epochs"


def _calibrated(model: Any, data: Any, split: Any, cfg: Any, args: argparse.Namespace, heldout: Any,
                train_epochs: int | None = None, train_epochs_source: str | None = None
                ) -> tuple[Any, dict[str, Any], str]:
    """Run ``dualoptim.unlearn`` (calibrated) on the split's tensors: the model, the report fields, a summary line."""
    from ..optim import OptimSpec
    from .api import unlearn
    from .calibrate import attack_target

    f, r = split.forget_idx, split.retain_idx
    res = unlearn(model, forget=(data.train_x[f], data.train_y[f]), retain=(data.train_x[r], data.train_y[r]),
                  test=heldout, method=cfg.method, optim=cfg.optim, retain_lr=cfg.retain_lr, epochs=args.epochs,
                  iterations=args.iterations, train_epochs=train_epochs, batch_size=args.batch_size or 128,
                  method_options=cfg.options,
                  optim_options=cfg.optim_options or None, seed=cfg.seed, eval_every=args.eval_every,
                  track_grads=args.track_grads, progress=args.progress)
    a, hist = res.audit, res.result.history
    budget = a.calibration.get("budget")
    if budget is not None and train_epochs_source is not None and "source" in budget:
        budget["source"] = train_epochs_source
    config = {**cfg.to_dict(), "forget_lr": a.hyperparameters["forget_lr"], "augment": "none",
              "lr_source": a.hyperparameters["lr_source"], "schedule": a.hyperparameters["schedule"]}
    n_f = sum(1 for h in hist if h["phase"] == "forget")
    report = {"config": config, "optimizer": OptimSpec.parse(cfg.optim).mode, "steps": res.result.steps,
              "forget_steps": n_f, "retain_steps": res.result.steps - n_f, "calibration": a.calibration,
              "timings": {**{k: round(float(v), 3) for k, v in a.timings.items() if k in
                             ("unlearn_s", "calibrate_s", "unlearn_total_s")}, "unlearn_steps": res.result.steps},
              "evals": res.result.evals, "history": hist}
    cal = a.calibration
    line = (f"{cfg.method} with {cfg.optim} ({report['optimizer']} optimizer state; calibrated forget lr "
            f"{config['forget_lr']:.3g} ({cal['rule'] + ' start' if attack_target(cal) else 'probe'}), retain lr "
            f"{cfg.retain_lr:g}; stopped: "
            f"{cal.get('stop_reason', cal.get('reason'))}): {n_f} forget + {report['retain_steps']} retain steps in "
            f"{a.timings['unlearn_total_s']:.1f} s with calibration")
    return res.model, report, line


def cmd_methods(args: argparse.Namespace) -> int:
    from .methods import get_method, get_method_info, list_methods
    from .presets import PRESETS

    for name in list_methods():
        info = get_method_info(name)
        s = get_method(name).default_schedule()
        budget = f"{s.iterations} iterations" if s.mode == "iteration" else f"{s.epochs} epochs"
        extra = f", forget every {s.forget_every}" if s.forget_every > 1 else ""
        print(f"{name:<7} {info.description}")
        print(f"        schedule: {s.mode} mode, {budget}{extra}, lr {s.forget_lr_schedule}/{s.retain_lr_schedule}"
              f" (forget/retain); optimizers: shared '{info.shared_optim}', DualOptim '{info.dual_optim}'")
        for o in info.options:
            print(f"        --opt {o.name}=<{o.type}> (default {o.default!r}): {o.help}")
    print("\nany --optim spec works with any method: one name = one shared state, FORGET+RETAIN = DualOptim "
          "(`dualoptim optimizers`)")
    if args.presets:
        for pname, table in PRESETS.items():
            print(f"\npreset {pname}:")
            for method, modes in table.items():
                for mode, p in modes.items():
                    budget = f"{p.iterations} it" if p.iterations else f"{p.epochs} ep"
                    opts = " ".join(f"{k}={v}" for k, v in p.options.items())
                    print(f"  {method:<6} {mode:<6} {p.optim:<10} forget lr {p.forget_lr:<8g} retain lr "
                          f"{p.retain_lr:<8g} {budget:<8} {opts:<18} [{p.source}]")
    else:
        print("presets: `dualoptim methods --presets`")
    return 0
