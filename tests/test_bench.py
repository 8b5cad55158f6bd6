"""Benchmark runner on digits with tiny budgets: database rows, cache, resume after a real kill, outputs."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dualoptim.cli import main
from dualoptim.errors import ConfigError
from dualoptim.vision.bench import BenchConfig, BenchContext, RunSpec, run_bench
from dualoptim.vision.bench_presets import get_bench_preset, list_bench_presets
from dualoptim.vision.unlearn import UnlearnConfig

TINY = {
    "name": "tiny",
    "dataset": "digits",
    "model": "cnn",
    "model_options": {"width": 8, "hidden": 32},
    "recipe": {"epochs": 8, "lr": 0.1},
    "seeds": [0, 1],
    "runs": [
        {"method": "salun", "optim": "sgd", "config": {"epochs": 1, "retain_batches_per_epoch": 3}},
        {"method": "salun", "optim": "adam+sgd", "config": {"epochs": 1, "retain_batches_per_epoch": 3}},
        {"method": "sfron", "optim": "adam+sgd", "config": {"iterations": 6}},
    ],
    "eval_every": 3,
    "track_grads": True,
    "curve_samples": 100,
}


def write_config(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps({**TINY, **changes}))
    return path


def count_rows(db: Path) -> int:
    if not db.exists():
        return 0
    con = sqlite3.connect(db, timeout=30)
    try:
        return con.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: results depend on the thread count


@pytest.fixture(scope="module")
def finished(tmp_path_factory, one_thread):
    """One uninterrupted run of the tiny benchmark."""
    root = tmp_path_factory.mktemp("bench")
    cfg = BenchConfig(**TINY)
    table = run_bench(cfg, BenchContext(root=root, progress=False))
    return root, table


def test_rows_outputs_and_summary_schema(finished):
    root, table = finished
    assert count_rows(root / "results.db") == 2 * (2 + 3)  # per trial: Retrain, Original, 3 runs
    out = root / "tiny"
    for name in ("table.md", "table.csv", "summary.json", "process.png", "grad_norms.png", "grad_cosine.png"):
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["name"] == "tiny"
    rows = summary["rows"]
    assert [(r["method"], r["optimizer"]) for r in rows][:2] == [("Retrain", "-"), ("Original", "-")]
    assert {(r["method"], r["optimizer"]) for r in rows[2:]} == {("salun", "sgd"), ("salun", "adam+sgd"),
                                                                  ("sfron", "adam+sgd")}
    for r in rows:
        assert set(r) >= {"method", "optimizer", "FA", "RA", "TA", "MIA", "Gap", "Std"}
        for m in ("FA", "RA", "TA", "MIA"):
            assert set(r[m]) == {"mean", "std", "gap"} and 0 <= r[m]["mean"] <= 100
        gaps = [r[m]["gap"] for m in ("FA", "RA", "TA", "MIA")]
        assert r["Gap"] == pytest.approx(sum(gaps) / 4)
    assert rows[0]["Gap"] == 0
    assert "Retrain" in (out / "table.md").read_text().splitlines()[2]


def test_two_experiments_share_models_not_rows(finished):
    """A second benchmark on the same root reuses the cached original and Retrain models but gets its own rows
    (a Retrain row stored by another experiment must not leave this one without its Gap reference)."""
    root, _ = finished
    models = sorted(p.name for p in (root / "cache").iterdir())
    cfg = BenchConfig(**{**TINY, "name": "tiny-2", "runs": TINY["runs"][:1]})
    table = run_bench(cfg, BenchContext(root=root, progress=False))
    assert [(r["method"], r["trials"]) for r in table] == [("Retrain", 2), ("Original", 2), ("salun", 2)]
    assert sorted(p.name for p in (root / "cache").iterdir()) == models  # nothing retrained
    assert count_rows(root / "results.db") == 2 * (2 + 3) + 2 * (2 + 1)


def test_rows_of_an_earlier_configuration_are_left_out_of_the_table(finished, capsys):
    """Changing a preset changes the runs' keys: the table shows the current configuration's rows only (the old
    ones, with the same labels, would otherwise be averaged in as extra trials), and says so."""
    root, _ = finished

    def tiny_lr(lr: float) -> BenchConfig:
        run = {"method": "salun", "optim": "adam+sgd", "config": {"epochs": 1, "retain_batches_per_epoch": 3,
                                                                   "forget_lr": lr}}
        return BenchConfig(**{**TINY, "name": "tiny-preset", "runs": [run]})

    first = run_bench(tiny_lr(1e-4), BenchContext(root=root, progress=False))
    capsys.readouterr()
    second = run_bench(tiny_lr(3e-2), BenchContext(root=root, progress=False))
    assert [(r["name"], r["trials"]) for r in second] == [(r["name"], 2) for r in first]  # 2 trials, not 4
    assert (second[2]["FA"], second[2]["MIA"]) != (first[2]["FA"], first[2]["MIA"])  # the new rows, not the old
    assert "2 stored row(s) from an earlier configuration" in capsys.readouterr().err
    assert main(["report", str(root / "tiny-preset")]) == 0  # the database alone gives the same table
    assert json.loads((root / "tiny-preset" / "summary.json").read_text())["rows"][2]["MIA"] == second[2]["MIA"]


def test_sweep_writes_the_sensitivity_plot(finished):
    root, _ = finished
    runs = [{"method": "salun", "optim": "adam+sgd", "label": f"salun+DO lr_f={lr:g}",
             "config": {"epochs": 1, "retain_batches_per_epoch": 3, "forget_lr": lr}} for lr in (1e-4, 1e-3)]
    cfg = BenchConfig(**{**TINY, "name": "tiny-sweep", "runs": runs, "sweep": "forget_lr"})
    table = run_bench(cfg, BenchContext(root=root, progress=False))
    assert [r["name"] for r in table] == ["Retrain", "Original", "salun+DO lr_f=0.0001", "salun+DO lr_f=0.001"]
    assert (root / "tiny-sweep" / "sensitivity.png").stat().st_size > 0


def test_a_diverging_run_is_a_result_not_a_crash(finished, capsys):
    """One method diverging (NaN) must not stop the benchmark: it is stored, counted and shown as such."""
    root, _ = finished
    runs = [{"method": "ga", "optim": "sgd", "config": {"epochs": 1, "forget_lr": 1e6}},
            {"method": "salun", "optim": "adam+sgd", "config": {"epochs": 1, "retain_batches_per_epoch": 3}}]
    cfg = BenchConfig(**{**TINY, "name": "tiny-nan", "runs": runs})
    table = run_bench(cfg, BenchContext(root=root, progress=False))
    assert "DIVERGED" in capsys.readouterr().out
    ga = next(r for r in table if r["method"] == "ga")
    assert (ga["trials"], ga["diverged"], ga["Gap"]) == (0, 2, None)
    assert next(r for r in table if r["method"] == "salun")["trials"] == 2
    assert "| ga [sgd] | 0 (+2 diverged) | — |" in (root / "tiny-nan" / "table.md").read_text()
    rows = json.loads((root / "tiny-nan" / "summary.json").read_text())["rows"]
    assert next(r for r in rows if r["method"] == "ga")["FA"] is None
    rows_before = count_rows(root / "results.db")
    run_bench(cfg, BenchContext(root=root, progress=False))  # a diverged run is a stored result: not retried
    assert count_rows(root / "results.db") == rows_before


def test_second_run_hits_every_cache(finished, capsys):
    root, table = finished
    db = root / "results.db"
    before = {r[0]: r[1] for r in sqlite3.connect(db).execute("SELECT key, created FROM runs")}
    models = sorted(p.name for p in (root / "cache").iterdir())
    t = time.perf_counter()
    again = run_bench(BenchConfig(**TINY), BenchContext(root=root, progress=False))
    assert time.perf_counter() - t < 20
    assert "original model from cache" in capsys.readouterr().out
    after = {r[0]: r[1] for r in sqlite3.connect(db).execute("SELECT key, created FROM runs")}
    assert after == before  # nothing recomputed
    assert sorted(p.name for p in (root / "cache").iterdir()) == models
    assert again == table


def test_report_regenerates_from_the_database_alone(finished):
    root, _ = finished
    out = root / "tiny"
    md = (out / "table.md").read_text()
    for name in ("table.md", "summary.json", "process.png"):
        (out / name).unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "table.md").read_text() == md
    assert json.loads((out / "summary.json").read_text())["config"]["name"] == "tiny"
    assert (out / "process.png").exists()


def test_killed_run_resumes_to_the_same_table(finished, tmp_path):
    root, _ = finished
    config = write_config(tmp_path)
    new_root = tmp_path / "runs"
    cmd = [sys.executable, "-m", "dualoptim.cli", "bench", "--config", str(config), "--root", str(new_root),
           "--no-progress", "--threads", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while count_rows(new_root / "results.db") < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-run, after some results were stored
    proc.wait()
    killed_at = count_rows(new_root / "results.db")
    assert 0 < killed_at < 10, "the kill should land mid-run"
    assert subprocess.run(cmd, capture_output=True, timeout=300).returncode == 0
    assert count_rows(new_root / "results.db") == 10
    # Same seeds, same numbers: the resumed run's table equals the uninterrupted one to the last bit.
    resumed = json.loads((new_root / "tiny" / "summary.json").read_text())
    assert resumed["rows"] == json.loads((root / "tiny" / "summary.json").read_text())["rows"]
    assert {"dualoptim", "torch", "python"} <= set(resumed["versions"])
    leftovers = [p for p in (new_root / "cache").iterdir() if p.name.startswith(".")]
    assert leftovers == [] or all(p.name.endswith(".tmp") for p in leftovers)


def test_presets_and_config_errors(tmp_path):
    assert {"quick", "offline-full", "paper-cifar10", "sensitivity"} <= set(list_bench_presets())
    quick = get_bench_preset("quick")
    assert quick.train_subset == 5000 and quick.seeds == [0, 1, 2, 3, 4]
    assert {(r.method, "+" in r.optim) for r in quick.runs} == {(m, d) for m in ("sfron", "salun", "scrub")
                                                                for d in (False, True)}
    grids: dict[tuple[str, str], list[float]] = {}
    for r in get_bench_preset("sensitivity").runs:
        grids.setdefault((r.method, r.optim), []).append(r.config["forget_lr"])
    assert {m for m, _ in grids} == {"salun", "sfron"} and len(grids) == 4
    for (method, optim), lrs in grids.items():  # >= 30x, centred on the preset's tuned forget lr
        assert max(lrs) / min(lrs) >= 30
        assert sorted(lrs)[len(lrs) // 2] == UnlearnConfig.from_preset(method, optim, dataset="fashion-mnist").forget_lr
    with pytest.raises(ConfigError, match="unknown benchmark preset"):
        get_bench_preset("fast")
    with pytest.raises(ConfigError, match="at least one run"):
        BenchConfig(name="x", runs=[])
    with pytest.raises(ConfigError, match="distinct"):
        BenchConfig(name="x", runs=[RunSpec("ga", "sgd")], seeds=[1, 1])
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**TINY, "epochs": 3}))
    assert main(["bench", "--config", str(bad), "--root", str(tmp_path / "r")]) == 2
    assert not (tmp_path / "r").exists()
    assert main(["bench", "--root", str(tmp_path / "r")]) == 2
    assert main(["report", str(tmp_path / "nothing")]) == 2


def test_two_bench_processes_share_one_database(finished, tmp_path):
    config = write_config(tmp_path, seeds=[0])
    root = tmp_path / "shared"
    cmd = [sys.executable, "-m", "dualoptim.cli", "bench", "--config", str(config), "--root", str(root),
           "--no-progress"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert count_rows(root / "results.db") == 5
    con = sqlite3.connect(root / "results.db")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert sorted(p.name.split("-")[0] for p in (root / "cache").iterdir()) == ["original", "retrain"]
