"""``dualoptim bench`` and ``dualoptim report``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from ..runtime import add_runtime_args


def _cmd_bench(args: argparse.Namespace) -> int:
    from ..io import check_output
    from .bench import BenchConfig, BenchContext, run_bench
    from .bench_presets import get_bench_preset, list_bench_presets

    if (args.preset is None) == (args.config is None):
        raise ConfigError(f"give exactly one of --preset ({', '.join(list_bench_presets())}) or --config FILE")
    cfg = get_bench_preset(args.preset) if args.preset else BenchConfig.from_file(args.config)
    if args.seeds:
        try:
            cfg.seeds = [int(s) for s in args.seeds.split(",")]
        except ValueError:
            raise ConfigError(f"--seeds takes comma-separated integers, got {args.seeds!r}") from None
        cfg.__post_init__()
    check_output(args.root, inputs=(args.config, args.data_dir), kind="root", flag="--root")  # before any work
    ctx = BenchContext(root=Path(args.root), db=Path(args.db) if args.db else None, data_dir=args.data_dir,
                       progress=args.progress)
    run_bench(cfg, ctx)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from ..io import check_output
    from ..store import ResultsStore
    from .report import write_report

    run_dir = Path(args.run_dir)
    if args.db is None and (run_dir / "results.db").is_file():  # the benchmark root was given
        names = sorted(p.name for p in run_dir.iterdir() if p.is_dir() and p.name != "cache")
        raise ConfigError(f"{run_dir} is a benchmark root (it holds results.db): give one benchmark's folder, "
                          f"{' or '.join(str(run_dir / n) for n in names[:5]) or f'e.g. {run_dir}/quick'}")
    db = Path(args.db) if args.db else run_dir.parent / "results.db"
    if not db.is_file():
        raise ConfigError(f"results database not found: {db} (give --db)")
    check_output(run_dir, inputs=(db,), kind="root", flag="RUN_DIR")  # tables and figures are added to it
    with ResultsStore(db) as store:
        write_report(store, f"vision/{run_dir.name}", run_dir)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``bench`` and ``report``."""
    p = sub.add_parser("bench", help="multi-trial benchmark: Table 1 (mean ± std, Gap, Std) + figures",
                       description="Trains or reuses the original model, per trial seed draws the forget set, trains "
                                   "or reuses Retrain, runs every method with the shared optimizer and with "
                                   "DualOptim, stores each result (resumable) and prints the table.")
    from .bench_presets import list_bench_presets

    p.add_argument("--preset", help=f"a named benchmark: {', '.join(list_bench_presets())}")
    p.add_argument("--config", help="a JSON file with BenchConfig fields (custom grids)")
    p.add_argument("--seeds", help="override the trial seeds, e.g. 0,1,2")
    p.add_argument("--root", default="runs", help="folder for the database, model cache and outputs (default: runs)")
    p.add_argument("--db", help="results database (default: ROOT/results.db)")
    p.add_argument("--data-dir", help="dataset folder (default: $DUALOPTIM_DATA_DIR or the system location)")
    add_runtime_args(p, device=True)  # --threads: results are bit-identical for equal thread counts
    p.set_defaults(func=_cmd_bench)
    p = sub.add_parser("report", help="regenerate a benchmark's tables and figures from the database alone")
    p.add_argument("run_dir", help="the benchmark's output folder, e.g. runs/quick")
    p.add_argument("--db", help="results database (default: RUN_DIR/../results.db)")
    p.set_defaults(func=_cmd_report)
