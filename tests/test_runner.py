"""The core job runner, model cache and table renderer (no model: plain functions and a temporary database)."""

from __future__ import annotations

import pytest

from dualoptim.cache import get_or_build, key_folder
from dualoptim.errors import DivergenceError
from dualoptim.runner import Job, Outcome, Runner
from dualoptim.store import ResultsStore, run_key
from dualoptim.tables import Table, mean_cell, mean_std_cell


def test_cache_builds_once_and_never_leaves_a_half_written_folder(tmp_path):
    folder = key_folder(tmp_path, "model", kind="model", lr=0.1)
    assert folder == tmp_path / f"model-{run_key(kind='model', lr=0.1)}"

    def failing(target):
        target.mkdir()
        (target / "weights").write_text("half")
        raise KeyboardInterrupt  # killed mid-build

    with pytest.raises(KeyboardInterrupt):
        get_or_build(folder, lambda f: pytest.fail("nothing to load"), failing)
    assert list(tmp_path.iterdir()) == []  # neither the folder nor a temporary one is left

    def build(target):
        target.mkdir()
        (target / "weights").write_text("w")
        return "built"

    first = get_or_build(folder, lambda f: pytest.fail("nothing to load yet"), build)
    assert (first.value, first.hit, first.folder) == ("built", False, folder)
    second = get_or_build(folder, lambda f: (f / "weights").read_text(), lambda f: pytest.fail("rebuilt"))
    assert (second.value, second.hit) == ("w", True)
    assert [p.name for p in tmp_path.iterdir()] == [folder.name]


def _job(key: str, trial: int, compute) -> Job:
    return Job(key, trial=trial, method="m", optimizer="adam+sgd", compute=compute, params={"p": 1},
               forget_hash="h", extra={"label": "m+DO"})


def test_runner_stores_skips_and_survives_divergence(tmp_path):
    calls, lines = [], []

    def ok(value: float):
        def compute() -> Outcome:
            calls.append(value)
            return Outcome({"FA": value}, timings={"unlearn_s": 1.0}, extra={"steps": 3},
                           series={"": [{"step": 0}], ":evals": [{"FA": value}]}, summary=f"FA {value}")
        return compute

    def diverges() -> Outcome:
        raise DivergenceError("forget loss became nan at step 3")

    with ResultsStore(tmp_path / "r.db") as store:
        runner = Runner(store, "exp", total=4, log=lines.append, name="t")
        assert runner.run(_job("a", 0, ok(1.0)))
        assert runner.run(_job("b", 1, diverges))  # stored as a result; the run goes on
        assert runner.run(_job("c", 2, ok(float("nan"))))  # a non-finite metric is a divergence too
        assert runner.run(_job("d", 3, ok(2.0)))
        rows = {r["key"]: r for r in store.rows("exp")}
        assert rows["a"]["metrics"] == {"FA": 1.0} and rows["a"]["extra"] == {"label": "m+DO", "steps": 3}
        assert rows["a"]["optimizer"] == "adam+sgd" and rows["a"]["params"] == {"p": 1}
        assert store.series("a") == [{"step": 0}] and store.series("a:evals") == [{"FA": 1.0}]
        assert rows["b"]["metrics"] == {} and "step 3" in rows["b"]["extra"]["diverged"]
        assert rows["b"]["forget_hash"] == "h" and rows["b"]["extra"]["label"] == "m+DO"
        assert set(rows["b"]["timings"]) == {"unlearn_s"}
        assert "FA" in rows["c"]["extra"]["diverged"] and rows["c"]["metrics"] == {}
        assert "DIVERGED" in lines[1] and "4/4" in lines[-1] and "FA 2.0" in lines[-1]
        again = Runner(store, "exp", total=4, log=lambda _: pytest.fail("a stored job was logged"))
        assert not any(again.run(_job(k, 0, lambda: pytest.fail("a stored job ran"))) for k in "abcd")
    assert len(calls) == 3  # each job computed once


def test_runner_time_left_estimate(tmp_path):
    with ResultsStore(tmp_path / "r.db") as store:
        runner = Runner(store, "exp", total=3, log=lambda _: None)
        assert runner.where().startswith("0/3") and "left" not in runner.where()
        runner.run(_job("a", 0, lambda: Outcome({"FA": 1.0})))
        assert runner.where().startswith("1/3") and "min left" in runner.where()


def test_table_cells_and_markdown():
    assert mean_std_cell([1.0, 3.0], ".1f") == "2.0 ± 1.4"
    assert mean_std_cell([2.0], ".1f") == "2.0 ± 0.0" and mean_std_cell([2.0], ".1f", std_of_one=False) == "2.0"
    assert mean_std_cell([]) == "-" and mean_cell([]) == "-" and mean_cell([1.0, 2.0], ".1f") == "1.5"
    table = Table(["a", "b"], [["1", "2"]])
    assert table.markdown() == "| a | b |\n|---|---|\n| 1 | 2 |\n"


def test_table_prints_cells_as_text_with_caption_and_alignment(capsys):
    Table(["method", "n"], [["salun+DO [adam+sgd]", "7"], ["ft [sgd]", "12"]], "title", "the caption",
          "lr").print(width=60)
    out = capsys.readouterr().out
    assert "salun+DO [adam+sgd]" in out and "ft [sgd]" in out  # brackets are not read as rich markup
    assert "title" in out and "the caption" in out
    assert "│  7 │" in out and "│ 12 │" in out  # the second column is right-aligned


def test_llm_table_reads_the_scheme_from_params_and_counts_diverged_runs():
    from dualoptim.llm.bench import format_table

    def row(seed, spec, scheme, metrics, extra=None):
        return {"experiment": "llm/quick/forget10", "method": "me+gd", "optimizer": spec, "trial": seed,
                "metrics": metrics, "extra": extra or {}, "timings": {"unlearn_s": 10.0 + seed},
                "params": {"unlearn": {"scheme": scheme, "forget_lr": 1e-4}}}

    rows = [row(0, "adamw+adamw", "dual", {"MC*": 0.5, "FE*": 0.25, "Avg*": 0.375, "FQ_ks": 0.01}),
            row(1, "adamw+adamw", "dual", {"MC*": 0.7, "FE*": 0.25, "Avg*": 0.475, "FQ_ks": 0.03}),
            row(2, "adamw+adamw", "dual", {}, {"diverged": "forget loss became nan"}),
            row(0, "adamw", "alternate", {"MC*": 0.5, "FE*": 0.5, "Avg*": 0.5, "FQ_ks": None})]
    table = format_table(rows)
    assert table.rows[0] == ["forget10", "me+gd", "dual", "0.0001", "3 (1 diverged)", "0.600 ± 0.141",
                             "0.250 ± 0.000", "0.425 ± 0.071", "2.0e-02 ± 1.4e-02", "11", "-"]
    assert table.rows[1][2:5] == ["alternate", "0.0001", "1"] and table.rows[1][5] == "0.500"
    assert table.rows[1][8] == "-"  # no FQ without a retain model
