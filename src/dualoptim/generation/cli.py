"""``dualoptim gen``: train a conditional DDPM, forget a class, evaluate, benchmark.

    dualoptim gen train [--dataset fashion-mnist] [--steps 1500]          # cached under runs/gen/
    dualoptim gen unlearn --forget-class 1 --method sfron --optim adam+adam --out runs/gen/sfron-1
    dualoptim gen eval --checkpoint runs/gen/sfron-1 --forget-class 1 [--inception-weights FILE]
    dualoptim gen bench --preset quick|full

The argparse namespace becomes explicit config objects in ``_model`` and the command functions.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ConfigError
from ..runtime import add_runtime_args


def _add_common(p: argparse.ArgumentParser) -> None:
    """The flags of every ``gen`` command: data, runtime and the DDPM (its architecture and training recipe)."""
    from .model import DDPMConfig
    from .train import DDPMTrainConfig

    p.add_argument("--dataset", default="fashion-mnist", help="vision dataset to generate (default fashion-mnist)")
    p.add_argument("--data-dir", default=None, help="folder with the dataset files")
    p.add_argument("--root", default="runs/gen", help="cache folder of DDPM and classifier checkpoints")
    add_runtime_args(p, device=True)
    m, t = DDPMConfig(), DDPMTrainConfig()
    p.add_argument("--image-size", type=int, default=m.image_size,
                   help=f"generated image side (default {m.image_size})")
    p.add_argument("--channels", default=",".join(map(str, m.block_out_channels)),
                   help="U-Net widths per level, comma separated")
    p.add_argument("--attention", default=m.attention, choices=("none", "mid", "lowest"))
    p.add_argument("--arch", default=m.arch, choices=("unet", "dit"),
                   help="denoiser: diffusers UNet2DModel (default) or a small pixel-space DiTTransformer2DModel")
    p.add_argument("--steps", type=int, default=t.steps, help="DDPM training steps")
    p.add_argument("--batch-size", type=int, default=t.batch_size)
    p.add_argument("--lr", type=float, default=t.lr)
    p.add_argument("--seed", type=int, default=t.seed)
    p.add_argument("--checkpoint", default=None, help="use this DDPM checkpoint folder instead of the cached default")


def _model(args: argparse.Namespace):
    """(model, meta, checkpoint dir, converted data) for the command's DDPM: ``--checkpoint``, else the cached
    (or newly trained) DDPM of the model and training flags."""
    from .model import DDPMConfig, load_generation_data
    from .train import DDPMTrainConfig, get_or_train_ddpm, load_ddpm

    if args.checkpoint:
        model, meta = load_ddpm(args.checkpoint)
        data = load_generation_data(meta.get("dataset", args.dataset), model.config.image_size, args.data_dir,
                                    meta.get("train_subset"))
        return model, meta, Path(args.checkpoint), data
    try:
        channels = tuple(int(c) for c in args.channels.split(","))
    except ValueError:
        raise ConfigError(f"--channels must be comma-separated integers, got {args.channels!r}") from None
    model_cfg = DDPMConfig(image_size=args.image_size, block_out_channels=channels, attention=args.attention,
                           arch=args.arch)
    train_cfg = DDPMTrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    data = load_generation_data(args.dataset, model_cfg.image_size, args.data_dir)
    model, meta, path = get_or_train_ddpm(args.dataset, model_cfg, train_cfg, root=args.root, data=data,
                                          progress=args.progress)
    return model, meta, path, data


def _cmd_train(args: argparse.Namespace) -> int:
    model, meta, path, _ = _model(args)
    n = sum(p.numel() for p in model.parameters())
    how = "cached, not retrained" if meta["cached"] else f"trained in {meta['time_s']:.0f} s"
    print(f"DDPM ({n / 1e6:.2f}M parameters) at {path} ({how})")
    return 0


def _cmd_unlearn(args: argparse.Namespace) -> int:
    from ..io import check_output
    from .train import save_ddpm
    from .unlearn import UnlearnConfig, unlearn_class

    options = json.loads(args.method_options) if args.method_options else {}
    cfg = UnlearnConfig(method=args.method, optimizer=args.optim, forget_class=args.forget_class,
                        iterations=args.iterations, batch_size=args.unlearn_batch_size, forget_lr=args.forget_lr,
                        retain_lr=args.retain_lr, seed=args.seed, method_options=options)
    out = check_output(args.out or Path(args.root) / f"unlearned-{cfg.method}-{cfg.optimizer.replace('+', '-')}-"
                       f"class{cfg.forget_class}", inputs=(args.checkpoint, args.data_dir), overwrite=True)
    model, meta, path, data = _model(args)
    info = unlearn_class(model, data, cfg, progress=args.progress)
    keep = {k: meta[k] for k in ("dataset", "train_subset", "train_config") if k in meta}
    save_ddpm(out, model, {**keep, "source": str(path), "unlearn": cfg.to_dict(), "unlearn_s": info["seconds"]})
    print(f"forgot class {cfg.forget_class} with {cfg.method}/{cfg.optimizer} in {info['seconds']:.0f} s "
          f"({info['steps']} steps); saved {out}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    import torch

    from ..io import check_output
    from .bench import EvalConfig, eval_counts, evaluate_samples, real_features, sample_classes, save_grid
    from .metrics import inception_fid
    from .sample import SamplerConfig
    from .train import get_or_train_classifier

    for flag, file in (("--grid", args.grid), ("--json", args.json)):  # writable, not an input: before any work
        if file:
            check_output(file, inputs=(args.checkpoint, args.data_dir), kind="file", flag=flag)
    model, meta, path, data = _model(args)
    classifier, cmeta = get_or_train_classifier(data, root=args.root, progress=args.progress)
    ev = EvalConfig(fa_samples=args.fa_samples, fd_samples_per_class=args.fd_samples,
                    fd_real_per_class=args.fd_real, sampler=SamplerConfig(steps=args.sample_steps,
                                                                           guidance=args.guidance))
    c = args.forget_class
    samples = sample_classes(model, eval_counts(model.config.num_classes, c, ev), ev, progress=args.progress)
    metrics = evaluate_samples(classifier, samples, real_features(classifier, data, ev.fd_real_per_class), c, ev)
    if args.inception_weights:
        others = [k for k in range(model.config.num_classes) if k != c]
        gen = torch.cat([samples[k] for k in others])
        real = torch.cat([data.test_x[data.test_y == k][:ev.fd_real_per_class] for k in others])
        metrics["FID_inception"] = inception_fid(gen, real, args.inception_weights)
    result = {"checkpoint": str(path), "forget_class": c, "metrics": metrics, "eval": ev.to_dict(),
              "classifier_test_acc": cmeta.get("test_acc")}
    print(f"FA {metrics['FA']:.1f}% (class {c}, {ev.fa_samples} samples)  FD-classifier {metrics['FD']:.2f} "
          f"(remaining classes, {ev.fd_samples_per_class}/class generated vs {ev.fd_real_per_class}/class real)"
          + (f"  FID {metrics['FID_inception']:.2f}" if "FID_inception" in metrics else "")
          + f"  [DDIM {ev.sampler.steps} steps, guidance {ev.sampler.guidance}]")
    if args.grid:
        save_grid(args.grid, samples, None, c, title=f"{path.name}: class {c} framed")
        print(f"wrote {args.grid}")
    if args.json:
        from ..io import atomic_write_json

        atomic_write_json(args.json, result)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from ..io import atomic_write_text, check_output
    from .bench import bench_table, run_bench
    from .train import get_or_train_classifier

    out = check_output(args.out or Path(args.root) / f"bench-{args.preset}", inputs=(args.checkpoint, args.data_dir),
                       kind="root")  # grids and table.md are added; nothing is deleted
    model, meta, path, data = _model(args)
    del model
    classifier, _ = get_or_train_classifier(data, root=args.root, progress=args.progress)  # cached under --root
    rows = run_bench(args.preset, model_dir=path, db=args.db, out_dir=out, data=data, classifier=classifier,
                     progress=args.progress)
    table = bench_table(rows)
    table.title = f"gen/{args.preset}: FA (%) / FD-classifier per forgotten class"
    table.print()
    atomic_write_text(out / "table.md", table.markdown())
    print(f"table: {out / 'table.md'}  grids: {out}/grid_*.png  database: {args.db} (experiment gen/{args.preset})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``gen`` command group."""
    gen = subparsers.add_parser("gen", help="class-wise unlearning in image generation (conditional DDPM)")
    sub = gen.add_subparsers(dest="gen_command", metavar="GEN_COMMAND", required=True)

    def parser(name: str, text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text)
        _add_common(p)
        return p

    p = parser("train", "train (or find cached) the class-conditional DDPM")
    p.set_defaults(func=_cmd_train)

    from .methods import list_methods

    p = parser("unlearn", "forget one class of the DDPM")
    p.add_argument("--forget-class", type=int, required=True)
    p.add_argument("--method", default="salun", choices=list_methods())
    p.add_argument("--optim", default="adam+adam", help="'adam' (shared state) or 'adam+adam' (DualOptim), ...")
    p.add_argument("--iterations", type=int, default=100, help="outer iterations (1 forget + 1 retain step each)")
    p.add_argument("--unlearn-batch-size", type=int, default=32)
    p.add_argument("--forget-lr", type=float, default=None, help="default: the method's (see unlearn.METHOD_DEFAULTS)")
    p.add_argument("--retain-lr", type=float, default=None)
    p.add_argument("--method-options", default=None, help='JSON, e.g. \'{"mask_ratio": 0.5}\'')
    p.add_argument("--out", default=None, help="output checkpoint folder")
    p.set_defaults(func=_cmd_unlearn)

    from .sample import SamplerConfig

    p = parser("eval", "FA and FD-classifier of a DDPM checkpoint for one forgotten class")
    s = SamplerConfig()
    p.add_argument("--sample-steps", type=int, default=s.steps, help=f"DDIM steps (default {s.steps})")
    p.add_argument("--guidance", type=float, default=s.guidance, help=f"guidance scale w (default {s.guidance})")
    p.add_argument("--forget-class", type=int, required=True)
    p.add_argument("--fa-samples", type=int, default=100)
    p.add_argument("--fd-samples", type=int, default=50, help="generated images per remaining class")
    p.add_argument("--fd-real", type=int, default=200, help="real test images per remaining class")
    p.add_argument("--inception-weights", default=None,
                   help="local Inception weights file: also compute the real FID (needs torchmetrics)")
    p.add_argument("--grid", default=None, help="write a PNG sample grid here")
    p.add_argument("--json", default=None, help="write the result as JSON here")
    p.set_defaults(func=_cmd_eval)

    p = parser("bench", "Table-2/3 style benchmark: FA/FD per forgotten class, methods x optimizers")
    from .bench import BENCH_PRESETS

    p.add_argument("--preset", default="quick", choices=BENCH_PRESETS.names(), help="benchmark preset (default: quick)")
    p.add_argument("--db", default="runs/results.db", help="results database")
    p.add_argument("--out", default=None, help="folder for grids and table.md (default ROOT/bench-PRESET)")
    p.set_defaults(func=_cmd_bench)

