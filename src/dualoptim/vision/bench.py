"""Multi-trial benchmark: the paper's Table 1 from one command.

``run_bench(config)``:

1. trains the original model once (cached by content: dataset, subset, model, recipe, seed);
2. per trial seed draws the forget set from the SAME training set, trains Retrain on the
   retain set with the original recipe and its own init/shuffle seed derived from the trial seed
   (:func:`retrain_seed`; cached by content + forget-index digest + that seed, both stored with the
   row) and evaluates it, and evaluates the original on the same split (the "do nothing" row);
3. runs every method with the shared optimizer and with DualOptim from the original
   model, evaluates, and stores each result in the results database. Every row (Retrain, Original, each run)
   is a :class:`dualoptim.runner.Job` run by the core :class:`~dualoptim.runner.Runner`: a row whose key is
   already stored is skipped, so a killed benchmark resumes where it stopped, and a diverged run is a row;
4. writes the table (terminal, Markdown, CSV, summary.json) and the figures: :func:`report.write_report`, which
   reads everything it shows back from the database (``dualoptim report`` does only that step).

Validation mode (``BenchConfig.validation``, used by ``benchmarks/tune_vision.py``): the training set is
the same subset (so the same cached original model), but "TA" and the MIA's non-member set come from a
validation split carved from training images the subset does not use; the test set is dropped as soon as
it is read from disk and never evaluated, and every stored row says ``eval_split: "validation"``.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ..cache import get_or_build
from ..config import check_fields, check_name, field_types, from_dict, load_json, located
from ..errors import ConfigError
from ..optim import OptimSpec, get_optimizer_info
from ..runner import Job, Outcome, Runner
from ..stats import DEFAULT_METRICS
from ..store import ResultsStore, run_key
from . import report
from .checkpoint import ClassifierMeta, load_classifier, save_classifier
from .data import ImageData, load_dataset, stratified_subset
from .forget import ForgetSplit, make_forget_split
from .methods import get_method_info
from .metrics import evaluate, metrics_callback
from .presets import PRESETS
from .train import TrainConfig, train_new
from .unlearn import UnlearnConfig, unlearn_classifier

_SET_BY_BENCH = ("method", "optim", "seed", "eval_every", "track_grads", "preset")  # not in runs[i].config


@dataclass
class RunSpec:
    """One row of the table: a method with one optimizer spec and its hyper-parameters.

    ``config`` overrides fields of the :class:`dualoptim.vision.unlearn.UnlearnConfig` that the
    benchmark's ``unlearn_preset`` gives for this method and optimizer (forget_lr, retain_lr,
    epochs, iterations, batch sizes, ``options`` of the method ...).
    """

    method: str
    optim: str
    config: dict[str, Any] = field(default_factory=dict)
    label: str | None = None  # row name; default "<method>[+DO] [<optim>]"

    @property
    def row(self) -> str:
        return self.label or report.row_label(self.method, self.optim)


@dataclass
class BenchConfig:
    """A benchmark: data, model, recipe, forget sets and the runs to compare (all stored with results)."""

    name: str
    dataset: str = "fashion-mnist"
    train_subset: int | None = None
    subset_seed: int = 0
    model: str = "cnn"
    model_options: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)
    init_seed: int = 0
    forget: str = "random:0.1"
    unlearn_preset: str = "fashion-mnist-quick"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    runs: list[RunSpec] = field(default_factory=list)
    eval_every: int | None = None
    curve_samples: int = 2000
    track_grads: bool = False
    sweep: str | None = None  # a run-config field varied across runs: adds Gap/Std-vs-value plots
    # MIA_SVC (stored, not in the table) fits an RBF SVC on n retain + n test points; n = |test| as in SalUn
    # when None. The SVC fit dominates evaluation time (tens of seconds for n = 10k), so fast presets cap n.
    svc_samples: int | None = None
    # Validation mode (tuning): TA / MIA non-members from `validation_size` training images outside the
    # subset (stratified, seeded by subset_seed); the test set is never evaluated. Needs train_subset.
    validation: bool = False
    validation_size: int = 5000
    description: str = ""

    def __post_init__(self) -> None:
        check_name(self.name, "name")  # ROOT/<name> is written: never '..' or a path
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds must be distinct and non-empty, got {self.seeds}")
        if not self.runs:
            raise ConfigError("a benchmark needs at least one run")
        self.runs = [r if isinstance(r, RunSpec) else RunSpec(**r) for r in self.runs]
        TrainConfig.from_dict(self.recipe)  # validate early
        if self.eval_every is not None and self.eval_every < 1:
            raise ConfigError(f"eval_every must be >= 1, got {self.eval_every}")
        if self.validation and self.train_subset is None:
            raise ConfigError("validation mode carves its split from training images the benchmark does not use: "
                              "it needs train_subset")
        if self.validation_size < 1:
            raise ConfigError(f"validation_size must be >= 1, got {self.validation_size}")

    @property
    def eval_split(self) -> str:
        """Where TA and the MIA's non-members come from: ``"validation"`` or ``"test"``."""
        return "validation" if self.validation else "test"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_file(cls, path: str | Path) -> BenchConfig:
        """Read a JSON config (the same fields as this class). Every nested field is checked before any work
        (type, range, unknown keys: :mod:`dualoptim.config`); the one error names the file and the path of the
        bad value, e.g. ``bench.json: runs[2].config.forget_lr must be a finite number, got 'fast'``."""
        raw = load_json(path)
        try:
            cfg = from_dict(cls, raw)  # types and keys, then __post_init__: the name (ROOT/<name>), the recipe
            if cfg.unlearn_preset not in PRESETS:
                raise ConfigError(f"unlearn_preset {cfg.unlearn_preset!r} is unknown; valid: {', '.join(PRESETS)}")
            for i, run in enumerate(cfg.runs):  # the UnlearnConfig each run will build, with this config's values
                try:
                    get_method_info(run.method)
                except ConfigError as e:
                    raise located(e, f"runs[{i}].method") from None
                try:
                    for name in OptimSpec.parse(run.optim).names:
                        get_optimizer_info(name)
                except ValueError as e:
                    raise located(e, f"runs[{i}].optim") from None
                where = f"runs[{i}].config"
                check_fields(UnlearnConfig, run.config, where, exclude=_SET_BY_BENCH)
                try:
                    UnlearnConfig.from_preset(run.method, run.optim, preset=cfg.unlearn_preset, seed=cfg.seeds[0],
                                              eval_every=cfg.eval_every, track_grads=cfg.track_grads, **run.config)
                except (ConfigError, ValueError, TypeError) as e:
                    raise located(e, where, field_types(UnlearnConfig)) from None
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
        return cfg


@dataclass
class BenchContext:
    """Where a benchmark keeps its things."""

    root: Path = Path("runs")
    db: Path | None = None
    data_dir: str | None = None
    progress: bool = True

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    def store(self) -> ResultsStore:
        return ResultsStore(self.db or self.root / "results.db")


def _log(msg: str) -> None:
    print(msg, flush=True)


def _data(cfg: BenchConfig, ctx: BenchContext) -> ImageData:
    if not cfg.validation:
        return load_dataset(cfg.dataset, ctx.data_dir, train_subset=cfg.train_subset, subset_seed=cfg.subset_seed)
    return validation_data(load_dataset(cfg.dataset, ctx.data_dir), cfg.train_subset, cfg.subset_seed,
                           cfg.validation_size)


def validation_data(full: ImageData, train_subset: int, subset_seed: int, size: int) -> ImageData:
    """``full`` restricted to the benchmark's training subset, with its test set REPLACED by ``size`` training
    images outside that subset (stratified, seeded): the split tuning evaluates on.

    The training tensors equal ``full.subset(train_subset, subset_seed)``'s, so the original model (and its cache
    entry) is the one the reported benchmark uses; the test tensors are dropped.
    """
    if full.train_subset is not None:
        raise ConfigError(f"{full.name} is already a subset: validation needs the full training set")
    sub = stratified_subset(full.train_y, train_subset, subset_seed)
    unused = torch.ones(full.num_train, dtype=torch.bool)
    unused[sub] = False
    pool = torch.nonzero(unused).reshape(-1)
    if size > len(pool):
        raise ConfigError(f"validation_size {size} exceeds the {len(pool)} training images outside the "
                          f"{train_subset}-image subset")
    val = pool[stratified_subset(full.train_y[pool], size, subset_seed + 1)]
    return replace(full, train_x=full.train_x[sub].contiguous(), train_y=full.train_y[sub].contiguous(),
                   test_x=full.train_x[val].contiguous(), test_y=full.train_y[val].contiguous(),
                   train_subset=train_subset, subset_seed=subset_seed)


def retrain_seed(init_seed: int, trial_seed: int) -> int:
    """The init/shuffle seed of trial ``trial_seed``'s Retrain: derived from both seeds (sha256), so each trial's
    Retrain is an independent training run, none reuses the original's seed, and a trial seed always gets the
    same Retrain (cacheable)."""
    digest = hashlib.sha256(f"retrain/{init_seed}/{trial_seed}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _original_key(cfg: BenchConfig) -> str:
    return run_key(kind="original", dataset=cfg.dataset, train_subset=cfg.train_subset, subset_seed=cfg.subset_seed,
                   model=cfg.model, model_options=cfg.model_options, recipe=TrainConfig.from_dict(cfg.recipe).to_dict(),
                   init_seed=cfg.init_seed)


def _train_or_load(kind: str, key: str, cfg: BenchConfig, ctx: BenchContext, data: ImageData,
                   split: ForgetSplit | None, seed: int | None = None
                   ) -> tuple[torch.nn.Module, dict[str, float], bool]:
    """A cached model (trained on the retain set of ``split`` when given); returns (model, timings, cache_hit).

    ``seed`` (Retrain) seeds initialisation and shuffling; None (the original): ``cfg.init_seed`` and the recipe's.
    """

    def load(folder: Path) -> tuple[torch.nn.Module, dict[str, float]]:
        model, meta, _ = load_classifier(folder)
        return model, meta.timings

    def build(folder: Path) -> tuple[torch.nn.Module, dict[str, float]]:
        recipe = TrainConfig.from_dict(cfg.recipe if seed is None else {**cfg.recipe, "seed": seed})
        init_seed = cfg.init_seed if seed is None else seed
        model, out = train_new(cfg.model, data, None if split is None else split.retain_idx, recipe, init_seed,
                               cfg.model_options, ctx.progress, kind)
        meta = ClassifierMeta.of(data, cfg.model, cfg.model_options, recipe=recipe.to_dict(),
                                 role="original" if split is None else "retrain", init_seed=init_seed,
                                 timings={"train_s": out["time_s"], "train_cpu_s": out["cpu_s"]})
        save_classifier(folder, model, meta, split)
        return model, meta.timings

    got = get_or_build(ctx.cache / f"{kind}-{key}", load, build)
    return (*got.value, got.hit)


def run_bench(cfg: BenchConfig, ctx: BenchContext | None = None) -> list[dict[str, Any]]:
    """Run (or resume) the benchmark and write its outputs; returns the Table-1 rows."""
    ctx = ctx or BenchContext()
    exp = f"vision/{cfg.name}"
    with ctx.store() as store:
        store.put_series(f"config:{exp}", [cfg.to_dict()])
        _execute(cfg, ctx, store, exp)
        return report.write_report(store, exp, ctx.root / cfg.name)


def _execute(cfg: BenchConfig, ctx: BenchContext, store: ResultsStore, exp: str) -> None:
    runner = Runner(store, exp, len(cfg.seeds) * (2 + len(cfg.runs)), _log, name=f"bench {cfg.name}")
    data = _data(cfg, ctx)
    original_key = _original_key(cfg)
    _log(f"[bench {cfg.name}] {data.name}: {data.num_train} train / {len(data.test_y)} {cfg.eval_split} images, model "
         f"{cfg.model} {cfg.model_options or ''}, forget {cfg.forget}, seeds {cfg.seeds}, {len(cfg.runs)} runs")
    original, timings, hit = _train_or_load("original", original_key, cfg, ctx, data, None)
    _log(f"[bench {cfg.name}] original model {'from cache' if hit else 'trained'} ({timings.get('train_s', 0):.0f} s)")
    jobs = [job for trial, seed in enumerate(cfg.seeds)
            for job in _trial_jobs(cfg, ctx, data, exp, original_key, original, trial, seed)]
    # the rows of THIS configuration: rows stored under older presets stay in the database but not in the table
    store.put_series(f"{report.KEYS}{exp}", [{"keys": [job.key for job in jobs]}])
    for job in jobs:
        runner.run(job)
    runner.close()


def _trial_jobs(cfg: BenchConfig, ctx: BenchContext, data: ImageData, exp: str, original_key: str,
                original: torch.nn.Module, trial: int, seed: int) -> list[Job]:
    """One trial's jobs: its Retrain row, its Original ("do nothing") row, then one row per run."""
    split = make_forget_split(cfg.forget, data.train_y, seed)
    rseed = retrain_seed(cfg.init_seed, seed)
    where = f"trial {trial + 1}/{len(cfg.seeds)}"
    # model cache: content only (the original's key covers data, model and recipe)
    retrain_key = run_key(kind="retrain", original=original_key, forget=split.digest, seed=rseed)
    base_params = {"recipe": cfg.recipe, "seed": seed, "forget": cfg.forget, "retrain_seed": rseed,
                   "eval_split": cfg.eval_split}

    def evaluated(model: torch.nn.Module) -> dict[str, float]:
        return evaluate(model, data, split, seed=seed, svc_max_samples=cfg.svc_samples)

    def retrain() -> Outcome:
        model, timings, hit = _train_or_load("retrain", retrain_key, cfg, ctx, data, split, seed=rseed)
        return Outcome(evaluated(model), timings=timings, extra={"cache_hit": hit},
                       summary="from cache" if hit else "trained")

    def unlearn_row(ucfg: UnlearnConfig) -> Outcome:
        cpu_job = time.process_time()
        model, _, _ = load_classifier(ctx.cache / f"original-{original_key}")
        callbacks = [metrics_callback(data, split, cfg.curve_samples, seed, DEFAULT_METRICS)] if cfg.eval_every else []
        model, result = unlearn_classifier(model, data, split, ucfg, callbacks=callbacks, progress=ctx.progress)
        t0 = time.perf_counter()
        metrics = evaluated(model)
        series = {":evals": result.evals, **({":history": result.history} if cfg.track_grads else {})}
        return Outcome(metrics, series=series,
                       timings={"unlearn_s": result.seconds, "prepare_s": result.prepare_seconds,
                                "eval_s": time.perf_counter() - t0, "job_cpu_s": time.process_time() - cpu_job,
                                "steps": result.steps, "state_bytes": result.state_bytes})

    common = {"trial": trial, "forget_hash": split.digest}
    # Result rows are per experiment: two benchmarks sharing a database and a Retrain model both get its row.
    jobs = [Job(run_key(kind="retrain-row", experiment=exp, model=retrain_key, svc_samples=cfg.svc_samples,
                        eval_split=cfg.eval_split), method=report.RETRAIN, optimizer="-", compute=retrain,
                params=base_params, label=f"{where} Retrain", **common),
            # one row per trial even when every trial forgets the same set (class-wise): the trial seed is in the key
            Job(run_key(kind="original-row", experiment=exp, original=original_key, forget=split.digest, seed=seed,
                        svc_samples=cfg.svc_samples, eval_split=cfg.eval_split), method=report.ORIGINAL,
                optimizer="-", compute=lambda: Outcome(evaluated(original)), params=base_params,
                label=f"{where} Original", **common)]
    for run in cfg.runs:
        ucfg = UnlearnConfig.from_preset(run.method, run.optim, preset=cfg.unlearn_preset, seed=seed,
                                         eval_every=cfg.eval_every, track_grads=cfg.track_grads, **run.config)
        params = {**ucfg.to_dict(), "eval_split": cfg.eval_split}
        key = run_key(kind="unlearn", experiment=exp, original=original_key, forget=split.digest, params=params,
                      curve_samples=cfg.curve_samples, svc_samples=cfg.svc_samples)
        jobs.append(Job(key, method=run.method, optimizer=run.optim, compute=lambda u=ucfg: unlearn_row(u),
                        params=params, extra={"label": run.row}, label=f"{where} {run.row}", **common))
    return jobs
