"""The benchmark's protocol: independent Retrains, the validation mode tuning uses, paired statistics, labels."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from dualoptim.errors import ConfigError
from dualoptim.optim import OptimSpec
from dualoptim.stats import paired_difference, t_quantile, trial_gaps
from dualoptim.store import ResultsStore
from dualoptim.vision import bench, report
from dualoptim.vision.bench import BenchConfig, BenchContext, retrain_seed, run_bench, validation_data
from dualoptim.vision.bench_presets import get_bench_preset, list_bench_presets
from dualoptim.vision.checkpoint import load_classifier
from dualoptim.vision.data import stratified_subset
from dualoptim.vision.presets import PRESETS
from dualoptim.vision.unlearn import UnlearnConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: results depend on the thread count

TINY = {
    "name": "proto",
    "dataset": "digits",
    "model": "cnn",
    "model_options": {"width": 8, "hidden": 32},
    "recipe": {"epochs": 6, "lr": 0.1},
    "seeds": [0, 1, 2],
    "runs": [{"method": "salun", "optim": "sgd", "config": {"epochs": 1, "retain_batches_per_epoch": 2}},
             {"method": "salun", "optim": "adam+sgd", "config": {"epochs": 1, "retain_batches_per_epoch": 2}}],
    "svc_samples": 100,
}


def stored(db: Path, experiment: str) -> list[dict]:
    with ResultsStore(db) as store:
        return store.rows(experiment)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, one_thread):
    root = tmp_path_factory.mktemp("proto")
    table = run_bench(BenchConfig(**TINY), BenchContext(root=root, progress=False))
    return root, table


def test_retrain_seeds_differ_across_trials_and_are_recorded(finished):
    root, _ = finished
    rows = [r for r in stored(root / "results.db", "vision/proto") if r["method"] == "Retrain"]
    seeds = {r["params"]["seed"]: r["params"]["retrain_seed"] for r in rows}
    assert sorted(seeds) == [0, 1, 2]
    assert len(set(seeds.values())) == 3 and 0 not in seeds.values()  # none reuses the original's init seed 0
    assert all(v == retrain_seed(0, s) for s, v in seeds.items())
    # the cached Retrain models were trained with those seeds (init and shuffle), one model per seed
    metas = [load_classifier(p)[1] for p in (root / "cache").iterdir() if p.name.startswith("retrain-")]
    assert sorted(m.init_seed for m in metas) == sorted(seeds.values())
    assert sorted(m.recipe["seed"] for m in metas) == sorted(seeds.values())
    assert retrain_seed(0, 1) != retrain_seed(1, 1)  # another original seed, other Retrains


def test_a_fixed_forget_set_still_gets_one_row_per_trial(tmp_path):
    """Class-wise forgetting draws the same set in every trial: Retrain (own seed) and Original still count 3."""
    cfg = BenchConfig(**{**TINY, "name": "cls", "forget": "class:1", "runs": TINY["runs"][1:]})
    table = run_bench(cfg, BenchContext(root=tmp_path, progress=False))
    assert [(r["name"], r["trials"]) for r in table] == [("Retrain", 3), ("Original", 3), ("salun+DO [adam+sgd]", 3)]
    assert table[0]["FA"]["mean"] == 0  # a Retrain never saw the class


def test_paired_column_in_every_output(finished):
    root, table = finished
    do = next(r for r in table if r["optimizer"] == "adam+sgd")
    assert do["paired"]["vs"] == "salun [sgd]" and do["paired"]["n"] == 3
    assert next(r for r in table if r["optimizer"] == "sgd")["paired"] is None
    md = (root / "proto" / "table.md").read_text()
    assert "ΔGap vs shared [95% CI]" in md and "ddof=1" in md
    summary = json.loads((root / "proto" / "summary.json").read_text())
    assert "ddof=1" in summary["conventions"]
    p = next(r for r in summary["rows"] if r["optimizer"] == "adam+sgd")["paired"]
    assert p["lo"] <= p["mean"] <= p["hi"] and p["holds"] == (p["lo"] > 0 or p["hi"] < 0)
    assert "dGap_mean" in (root / "proto" / "table.csv").read_text().splitlines()[0]


def test_validation_mode_never_reads_the_test_set(tmp_path, monkeypatch):
    """Tuning evaluates on training images outside the subset: poisoned test labels (-1, never predicted) leave
    every validation metric intact, and each stored row says which split it was evaluated on."""
    real = bench.load_dataset

    def poisoned(*args, **kwargs):
        data = real(*args, **kwargs)
        return bench.replace(data, test_y=torch.full_like(data.test_y, -1))

    monkeypatch.setattr(bench, "load_dataset", poisoned)
    cfg = BenchConfig(**{**TINY, "name": "val", "seeds": [100], "runs": TINY["runs"][:1], "train_subset": 900,
                         "validation": True, "validation_size": 300})
    ctx = BenchContext(root=tmp_path, progress=False)
    assert (bench._data(BenchConfig(**{**TINY, "train_subset": 900}), ctx).test_y == -1).all()  # poison reaches
    table = run_bench(cfg, ctx)
    assert all(r["TA"]["mean"] > 50 for r in table)  # on the test set it would be 0
    rows = stored(tmp_path / "results.db", "vision/val")
    assert len(rows) == 3 and {r["params"]["eval_split"] for r in rows} == {"validation"}


def test_validation_split_is_disjoint_and_training_set_unchanged(digits):
    data = validation_data(digits, 900, 0, 300)
    sub = stratified_subset(digits.train_y, 900, 0)
    assert torch.equal(data.train_x, digits.train_x[sub]) and torch.equal(data.train_x, digits.subset(900, 0).train_x)
    unused = sorted(set(range(digits.num_train)) - set(sub.tolist()))
    pool = digits.train_x[unused].reshape(len(unused), -1)
    val = data.test_x.reshape(300, -1)
    # every validation image is one of the unused training images (and none of the real test images is used)
    assert all(bool((pool == v).all(1).any()) for v in val)
    assert torch.bincount(data.test_y, minlength=10).min() >= 25  # stratified
    with pytest.raises(ConfigError, match="exceeds"):
        validation_data(digits, 900, 0, 1000)
    with pytest.raises(ConfigError, match="train_subset"):
        BenchConfig(**{**TINY, "validation": True})


def test_tuning_uses_validation_mode_and_refuses_reported_seeds():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.tune_vision import GRID, _scrub_points, tune_config

    cfg = tune_config([100, 101, 102])
    quick = get_bench_preset("quick")
    assert cfg.validation and cfg.seeds == [100, 101, 102]
    assert (cfg.train_subset, cfg.recipe, cfg.model_options) == (quick.train_subset, quick.recipe, quick.model_options)
    for method in {g[0] for g in GRID}:  # both sides of a method get the same number of points (over its blocks)
        sides = {g[1] for g in GRID if g[0] == method}
        assert len({sum(len(g[2]) for g in GRID if g[:2] == (method, side)) for side in sides}) == 1
    salun = [(optim, p) for m, optim, points in GRID if m == "salun" for p in points]
    # every SalUn point pins its mask ratio (a preset's must not leak in), and both sides search the same ratios
    assert all("ratio" in p.get("options", {}) for _, p in salun)
    ratios = {side: {p["options"]["ratio"] for optim, p in salun if optim == side} for side in ("sgd", "adam+sgd")}
    assert ratios["sgd"] == ratios["adam+sgd"] and len(ratios["sgd"]) > 1
    for mode, entry in PRESETS["fashion-mnist-quick"]["salun"].items():  # each SalUn preset is a searched point
        point = {"forget_lr": entry.forget_lr, "options": {"ratio": entry.options["ratio"]}}
        assert (entry.optim, point) in salun, (mode, entry)
    assert 0.018 in [p["forget_lr"] for p in next(g[2] for g in GRID if g[:2] == ("salun", "sgd"))]
    scrub = {g[1]: g[2] for g in GRID if g[0] == "scrub"}  # its own paper's knobs, the same grid on both sides
    grid = _scrub_points()
    assert all(p in side for side in scrub.values() for p in grid)  # then refining points per side
    assert {(p["options"]["T"], p["options"]["msteps"]) for p in grid} == {(1.0, 10), (1.0, 3), (4.0, 10), (4.0, 3)}
    # every SCRUB point pins its options: a preset's T must not leak into a point stored without one
    assert all({"T", "msteps"} <= set(p["options"]) for side in scrub.values() for p in side)
    labels = [r.row for r in cfg.runs]
    assert len(set(labels)) == len(labels)  # one table row per point
    assert "sfron [sgd] alpha=10" in labels and "scrub+DO [adam+adam] T=4 msteps=3 forget_lr=0.001" in labels
    sfron = [r for r in cfg.runs if (r.method, r.optim) == ("sfron", "sgd")]
    assert all(r.config["forget_lr"] == r.config["retain_lr"] for r in sfron)  # shared SFRon: eta_f = eta_r
    assert len({r.config["options"]["alpha"] for r in sfron}) == len(sfron)
    with pytest.raises(SystemExit):
        tune_config([0, 100])


def test_paired_difference_arithmetic():
    assert trial_gaps([{"FA": 1.0, "RA": 5.0}], [{"FA": 3.0, "RA": 4.0}], ("FA", "RA")) == [1.5]
    assert t_quantile(0.975, 4) == pytest.approx(2.776445, abs=1e-5)
    p = paired_difference([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    half = 4.302653 * 1.0 / math.sqrt(3)
    assert (p["n"], p["mean"], p["std"]) == (3, 2.0, 1.0)
    assert p["lo"] == pytest.approx(2 - half, abs=1e-5) and p["hi"] == pytest.approx(2 + half, abs=1e-5)
    assert not p["holds"]  # the interval [-0.48, 4.48] contains 0
    q = paired_difference([1.0, 1.1, 0.9, 1.0], [2.0, 2.0, 2.0, 2.1])
    assert q["mean"] == pytest.approx(-1.025) and q["hi"] < 0 and q["holds"]
    assert paired_difference([1.0], [0.0])["lo"] is None
    with pytest.raises(ValueError):
        paired_difference([1.0], [1.0, 2.0])


def test_summarize_pairs_by_forget_set():
    def row(method, optim, trial, fh, fa):
        return {"method": method, "optimizer": optim, "trial": trial, "forget_hash": fh, "extra": {},
                "metrics": {"FA": fa, "RA": 90.0, "TA": 80.0, "MIA": 50.0}}

    rows = [row("Retrain", "-", t, f"h{t}", 80.0 + t) for t in range(3)]
    rows += [row("salun", "sgd", t, f"h{t}", 90.0 + t) for t in range(3)]
    rows += [row("salun", "adam+sgd", t, f"h{t}", 82.0 + t) for t in range(3)]
    rows += [row("salun", "adam+adam:decouple=none", t, f"h{t}", 85.0) for t in range(3)]
    table = {r["name"]: r for r in report.summarize(rows)}
    p = table["salun+DO [adam+sgd]"]["paired"]
    assert p["vs"] == "salun [sgd]" and p["mean"] == pytest.approx((2 - 10) / 4) and p["std"] == 0
    assert table["salun [adam+adam:decouple=none]"]["paired"] is None  # a shared state is never +DO
    assert "ΔGap" in report.table_markdown(list(table.values()))
    # the moment ablation (no row with the paper's shared optimizer): +DO (mv) is compared with decouple=none
    moments = [r for r in rows if r["optimizer"] != "sgd" and r["optimizer"] != "adam+sgd"]
    moments += [row("salun", f"adam+adam:decouple={d}", t, f"h{t}", 88.0) for t in range(3) for d in ("m", "mv")]
    table = {r["name"]: r for r in report.summarize(moments)}
    assert table["salun+DO [adam+adam:decouple=mv]"]["paired"]["vs"] == "salun [adam+adam:decouple=none]"


def test_do_label_only_on_decoupled_states():
    for name in list_bench_presets():
        for run in get_bench_preset(name).runs:
            assert ("+DO" in report.row_label(run.method, run.optim)) == OptimSpec.parse(run.optim).is_dual, run
    assert report.row_label("scrub", "adam+adam:decouple=none") == "scrub [adam+adam:decouple=none]"


def test_quick_presets_shape():
    quick = get_bench_preset("quick")
    assert (quick.train_subset, quick.recipe["epochs"], quick.seeds) == (5000, 40, [0, 1, 2, 3, 4])
    assert {(r.method, r.optim) for r in quick.runs} == {
        ("sfron", "sgd"), ("sfron", "adam+sgd"), ("sfron", "sgd+sgd"), ("salun", "sgd"), ("salun", "adam+sgd"),
        ("salun", "sgd+sgd"), ("scrub", "adam"), ("scrub", "adam+adam")}
    qc = get_bench_preset("quick-class")
    assert qc.forget.startswith("class:") and qc.runs == quick.runs and qc.recipe == quick.recipe
    for run in quick.runs:  # an sgd+sgd control runs with the shared side's options (SFRon's alpha, SalUn's ratio)
        if run.optim == "sgd+sgd":
            cfg = UnlearnConfig.from_preset(run.method, run.optim, preset=quick.unlearn_preset, **run.config)
            shared = PRESETS[quick.unlearn_preset][run.method]["shared"]
            assert (cfg.forget_lr, cfg.options) == (shared.forget_lr, dict(shared.options)), run
    moments = {r.optim for r in get_bench_preset("ablation-moments").runs}
    assert moments == {f"adam+adam:decouple={d}" for d in ("none", "m", "v", "mv")}
    assert {"sgd+sgd", "adam+sgd", "sgd+adam", "adam+adam"} <= {r.optim for r in
                                                              get_bench_preset("ablation-optimizers").runs}
