"""Core pieces: engine (Algorithm 1), atomic io, stats, results store."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sqlite3

import pytest
import torch
import torch.nn.functional as F

from dualoptim import build_optimizer
from dualoptim.engine import Method, Schedule, run_unlearning
from dualoptim.errors import ConfigError, DataNotFoundError, DivergenceError
from dualoptim.io import atomic_write_json, atomic_write_text, load_checkpoint, save_checkpoint
from dualoptim.stats import format_cell, gap_table, mean_std
from dualoptim.store import ResultsStore, run_key


class Recorder(Method):
    """Records which phase saw which batch; losses are plain CE (negated for forget)."""

    name = "recorder"

    def __init__(self, uses_forget=True, uses_retain=True):
        self.uses_forget, self.uses_retain = uses_forget, uses_retain
        self.seen: list[tuple[str, int]] = []
        self.prepared = False

    def prepare(self, ctx):
        self.prepared = True

    def forget_loss(self, model, batch, info):
        self.seen.append(("forget", int(batch[2])))
        return -F.cross_entropy(model(batch[0]), batch[1])

    def retain_loss(self, model, batch, info):
        self.seen.append(("retain", int(batch[2])))
        return F.cross_entropy(model(batch[0]), batch[1])


def batches(n, offset, seed):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g), torch.tensor(offset + i))
            for i in range(n)]


def setup(spec="adam+sgd"):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    return model, build_optimizer(model.parameters(), spec, 1e-2, 1e-2)


def test_epoch_mode_alternates_full_passes():
    model, opt = setup()
    m = Recorder()
    res = run_unlearning(model, m, opt, batches(2, 0, 1), batches(3, 100, 2), Schedule(epochs=2, forget_epochs=1),
                         progress=False)
    assert m.prepared
    assert m.seen == [("forget", 0), ("forget", 1), ("retain", 100), ("retain", 101), ("retain", 102),
                      ("retain", 100), ("retain", 101), ("retain", 102)]
    assert res.steps == 8 and [r["phase"] for r in res.history][:2] == ["forget", "forget"]


def test_iteration_mode_forget_every_k_and_cycling():
    model, opt = setup()
    m = Recorder()
    run_unlearning(model, m, opt, batches(2, 0, 1), batches(2, 100, 2),
                   Schedule(mode="iteration", iterations=5, forget_every=2, forget_steps=1, retain_steps=1),
                   progress=False)
    assert m.seen == [("forget", 0), ("retain", 100), ("retain", 101), ("forget", 1), ("retain", 100),
                      ("retain", 101), ("forget", 0), ("retain", 100)]


def test_dual_and_shared_differ_and_use_the_right_states():
    results = {}
    for spec in ("adam+sgd", "sgd"):
        model, opt = setup(spec)
        run_unlearning(model, Recorder(), opt, batches(2, 0, 1), batches(3, 100, 2), Schedule(epochs=2),
                       progress=False)
        results[spec] = torch.cat([p.detach().flatten() for p in model.parameters()])
        if spec == "adam+sgd":
            assert all("exp_avg" in opt.forget.state[p] for p in model.parameters())
            assert all("momentum_buffer" in opt.retain.state[p] for p in model.parameters())
    assert not torch.allclose(results["adam+sgd"], results["sgd"])


def test_cosine_schedule_and_lr_restored():
    model, opt = setup()
    res = run_unlearning(model, Recorder(), opt, batches(2, 0, 1), batches(2, 100, 2),
                         Schedule(epochs=2, forget_lr_schedule="cosine"), progress=False)
    f_lrs = [r["lr"] for r in res.history if r["phase"] == "forget"]
    r_lrs = [r["lr"] for r in res.history if r["phase"] == "retain"]
    assert f_lrs == pytest.approx([1e-2, 1e-2 * 0.5 * (1 + 2**-0.5), 5e-3, 1e-2 * 0.5 * (1 - 2**-0.5)])
    assert r_lrs == pytest.approx([1e-2] * 4)
    assert [g["lr"] for g in opt.param_groups] == [1e-2, 1e-2]


def test_joint_mode_and_its_errors():
    model, opt = setup("sgd")
    m = Recorder()
    run_unlearning(model, m, opt, batches(2, 0, 1), batches(3, 100, 2), Schedule(mode="joint", epochs=1),
                   progress=False)
    assert m.seen == [("forget", 0), ("retain", 100), ("forget", 1), ("retain", 101)]
    model, opt = setup("adam+sgd")
    with pytest.raises(ConfigError, match="joint mode takes one optimizer"):
        run_unlearning(model, m, opt, batches(1, 0, 1), batches(1, 0, 2), Schedule(mode="joint"), progress=False)


def test_grad_tracking_and_callbacks():
    model, opt = setup()
    calls = []

    def cb(event):
        assert not event.model.training and not torch.is_grad_enabled()
        calls.append(event.step)
        return {"acc": 1.0}

    res = run_unlearning(model, Recorder(), opt, batches(2, 0, 1), batches(2, 100, 2), Schedule(epochs=1),
                         callbacks=[cb], eval_every=2, track_grads=True, progress=False)
    assert calls == [0, 2, 4, 4] and [e["step"] for e in res.evals] == [0, 2, 4, 4]
    assert all(r["grad_norm"] > 0 for r in res.history)
    assert "cos" not in res.history[0] and -1 <= res.history[2]["cos"] <= 1


def test_nan_guard_names_step_and_phase():
    class Exploding(Recorder):
        def retain_loss(self, model, batch, info):
            return super().retain_loss(model, batch, info) * float("nan")

    model, opt = setup()
    with pytest.raises(DivergenceError, match=r"retain loss became nan at step 2 \(retain step 0"):
        run_unlearning(model, Exploding(), opt, batches(2, 0, 1), batches(2, 100, 2), progress=False)


def test_weights_that_overflow_on_the_last_step_are_caught():
    """Every loss finite, but the last step sends the weights to inf: the run must not return that model."""
    model = torch.nn.Linear(4, 3)
    opt = build_optimizer(model.parameters(), "sgd", 1e39, 1e39)  # lr beyond float32: w - lr * g = -inf
    with pytest.raises(DivergenceError, match=r"parameters weight, bias became NaN/inf by step 1"):
        run_unlearning(model, Recorder(uses_retain=False), opt, batches(1, 0, 1), [], Schedule(epochs=1),
                       progress=False)


def test_schedule_validation():
    with pytest.raises(ConfigError, match="unknown schedule mode"):
        Schedule(mode="alternating")
    with pytest.raises(ConfigError, match="epochs must be a positive integer"):
        Schedule(epochs=0)
    with pytest.raises(ConfigError, match="forget_lr_schedule"):
        Schedule(forget_lr_schedule="linear")
    model, opt = setup()
    with pytest.raises(ConfigError, match="empty"):
        run_unlearning(model, Recorder(), opt, [], batches(1, 0, 1), Schedule(mode="iteration"), progress=False)


def test_no_schedule_means_the_methods_default_schedule():
    class OneEpoch(Recorder):
        def default_schedule(self):
            return Schedule(epochs=1, retain_batches_per_epoch=1)

    model, opt = setup()
    m = OneEpoch()
    res = run_unlearning(model, m, opt, batches(2, 0, 1), batches(3, 100, 2), progress=False)
    assert m.seen == [("forget", 0), ("forget", 1), ("retain", 100)] and res.steps == 3
    assert Method().default_schedule() == Schedule()  # the base: 10 epochs, epoch mode


def test_a_gradient_left_on_the_model_does_not_leak_into_the_first_step():
    # a model fresh from training carries its last .grad; the first unlearning step must not add it
    results = []
    for stale in (False, True):
        model, opt = setup("sgd")
        if stale:
            for p in model.parameters():
                p.grad = torch.full_like(p, 100.0)
        run_unlearning(model, Recorder(), opt, batches(1, 0, 1), batches(1, 100, 2), Schedule(epochs=1),
                       progress=False)
        results.append([p.detach().clone() for p in model.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_engine_times_prepare_apart_from_the_step_loop(monkeypatch):
    import dualoptim.engine as engine

    clock = [1000.0]  # a fake clock: only prepare() advances it
    monkeypatch.setattr(engine.time, "perf_counter", lambda: clock[0])

    class SlowPrepare(Recorder):
        def prepare(self, ctx):
            clock[0] += 7.0

    model, opt = setup()
    res = run_unlearning(model, SlowPrepare(), opt, batches(1, 0, 1), batches(1, 100, 2), Schedule(epochs=1),
                         progress=False)
    assert res.prepare_seconds == 7.0 and res.seconds == 0.0 and res.steps == 2


def test_atomic_writes_leave_nothing_half_written(tmp_path):
    path = tmp_path / "sub" / "r.json"
    atomic_write_json(path, {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    with pytest.raises(ValueError):
        atomic_write_json(path, {"a": float("nan")})
    assert json.loads(path.read_text()) == {"a": 1}
    assert sorted(p.name for p in path.parent.iterdir()) == ["r.json"]
    atomic_write_text(path, "x")
    assert path.read_text() == "x"


def test_checkpoint_round_trip_and_errors(tmp_path):
    ck = tmp_path / "ck"
    save_checkpoint(ck, {"w": torch.arange(6.0).reshape(2, 3)}, {"model": "cnn", "classes": 10})
    save_checkpoint(ck, {"w": torch.ones(2)}, {"model": "cnn", "v": 2})  # replaces atomically
    tensors, meta = load_checkpoint(ck)
    assert torch.equal(tensors["w"], torch.ones(2)) and meta == {"model": "cnn", "v": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    mask = os.umask(0)
    os.umask(mask)
    assert (ck.stat().st_mode & 0o777) == 0o777 & ~mask  # not mkdtemp's 0700
    assert ((ck / "meta.json").stat().st_mode & 0o777) == 0o666 & ~mask
    with pytest.raises(DataNotFoundError, match="not found"):
        load_checkpoint(tmp_path / "nope")
    (ck / "model.safetensors").write_bytes((ck / "model.safetensors").read_bytes()[:20])
    with pytest.raises(ConfigError, match="corrupt or truncated"):
        load_checkpoint(ck)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    torch.save({"w": torch.ones(1)}, pickled / "model.safetensors")
    (pickled / "meta.json").write_text("{}")
    with pytest.raises(ConfigError, match="corrupt"):
        load_checkpoint(pickled)
    (pickled / "meta.json").write_text("{not json")
    with pytest.raises(ConfigError, match="meta.json is corrupt"):
        load_checkpoint(pickled)


def test_save_checkpoint_failure_keeps_previous(tmp_path, monkeypatch):
    ck = tmp_path / "ck"
    save_checkpoint(ck, {"w": torch.zeros(1)}, {"v": 1})
    with pytest.raises(ValueError):
        save_checkpoint(ck, {"w": torch.ones(1)}, {"v": float("inf")})
    tensors, meta = load_checkpoint(ck)
    assert meta == {"v": 1} and sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_stats_gap_and_std():
    assert mean_std([1.0, 3.0]) == (2.0, pytest.approx(2**0.5))
    assert mean_std([5.0]) == (5.0, 0.0)
    per_trial = {
        "Retrain": [{"FA": 90, "RA": 100, "TA": 90, "MIA": 70}, {"FA": 92, "RA": 100, "TA": 92, "MIA": 74}],
        "SalUn": [{"FA": 95, "RA": 99, "TA": 90, "MIA": 60}, {"FA": 97, "RA": 99, "TA": 90, "MIA": 60}],
    }
    rows = gap_table(per_trial)
    assert [r["name"] for r in rows] == ["Retrain", "SalUn"]
    assert rows[0]["Gap"] == 0
    s = rows[1]
    assert s["FA"] == {"mean": 96, "std": pytest.approx(2**0.5), "gap": 5}
    assert s["Gap"] == pytest.approx((5 + 1 + 1 + 12) / 4)
    assert s["Std"] == pytest.approx(2**0.5 / 4)
    assert format_cell(s["FA"]) == "96.00 ± 1.41 (5.00)"
    with pytest.raises(ValueError, match="reference row"):
        gap_table({"SalUn": per_trial["SalUn"]})
    with pytest.raises(ValueError, match="lacks metrics"):
        gap_table({"Retrain": [{"FA": 1}]})


def test_store_round_trip(tmp_path):
    db = tmp_path / "r.db"
    key = run_key(method="salun", seed=1, lr=0.1)
    assert key == run_key(lr=0.1, seed=1, method="salun") != run_key(method="salun", seed=2, lr=0.1)
    with ResultsStore(db) as store:
        assert not store.has(key)
        store.put(key, experiment="e", trial=0, method="salun", optimizer="adam+sgd", metrics={"FA": 1.5},
                  params={"lr": 0.1}, forget_hash="abc", timings={"s": 2.0})
        store.put_series(key, [{"step": 0, "FA": 99.0}])
        assert store.has(key)
        row = store.get(key)
        assert row["metrics"] == {"FA": 1.5} and row["params"] == {"lr": 0.1} and "torch" in row["versions"]
        assert store.series(key) == [{"step": 0, "FA": 99.0}] and store.experiments() == ["e"]
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _writer(db, worker, n):
    with ResultsStore(db) as store:
        for i in range(n):
            store.put(f"{worker}-{i}", experiment="c", trial=i, method=f"m{worker}", optimizer="sgd",
                      metrics={"i": i}, params={})


def test_store_two_processes_write_concurrently(tmp_path):
    db = tmp_path / "c.db"
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(db), w, 40)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with ResultsStore(db) as store:
        assert len(store.rows("c")) == 80
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_atomic_dir_replaces_on_success_and_keeps_the_old_folder_on_failure(tmp_path):
    from dualoptim.io import atomic_dir

    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("one")
        (tmp / "sub").mkdir()  # sub-folders (e.g. sharded weights) are moved with it
    assert (target / "a.txt").read_text() == "one" and (target / "sub").is_dir()
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_dir(target) as tmp:
            (tmp / "a.txt").write_text("two")
            raise RuntimeError("boom")
    assert (target / "a.txt").read_text() == "one"  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary folder left behind
