"""Concurrent first opens of one results database (reliability issue 19).

Several processes that open a fresh database at the same moment used to fail with "database is locked":
``PRAGMA journal_mode=WAL`` does not wait for the busy timeout. The openers are long-lived processes that
meet at a multiprocessing barrier before each round and then all open a NEW database file at once, so
one test exercises many simultaneous first opens in a few seconds.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import sqlite3
from pathlib import Path

from dualoptim.store import ResultsStore

OPENERS = 4
ROUNDS = 50


def _opener(folder: str, worker: int, rounds: int, barrier, results) -> None:
    for r in range(rounds):
        try:
            barrier.wait(timeout=60)
            with ResultsStore(Path(folder) / f"round-{r}.db") as store:
                store.put(f"{worker}", experiment="race", trial=worker, method="m", optimizer="sgd",
                          metrics={"r": r}, params={})
            results.put((r, worker, None))
        except Exception as e:  # reported to the parent, which fails the test with the message
            results.put((r, worker, f"{type(e).__name__}: {e}"))


def test_simultaneous_first_opens_never_fail(tmp_path):
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(OPENERS), ctx.Queue()
    procs = [ctx.Process(target=_opener, args=(str(tmp_path), w, ROUNDS, barrier, results), daemon=True)
             for w in range(OPENERS)]
    for p in procs:
        p.start()
    failures, done = [], 0
    try:
        while done < OPENERS * ROUNDS:
            r, worker, error = results.get(timeout=120)
            done += 1
            if error is not None:
                failures.append(f"round {r} opener {worker}: {error}")
    except queue.Empty:
        failures.append(f"only {done} of {OPENERS * ROUNDS} opens reported within the time limit")
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.terminate()
    assert not failures, f"{len(failures)} failed opens, first: {failures[:3]}"
    for r in range(ROUNDS):
        conn = sqlite3.connect(tmp_path / f"round-{r}.db")
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == OPENERS
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()


def test_corrupt_or_locked_database_gets_one_clear_message(tmp_path):
    from dualoptim.errors import StoreError

    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not an SQLite file" * 100)
    try:
        ResultsStore(junk)
    except StoreError as e:
        assert "not a dualoptim results database" in str(e) and "disk space" not in str(e)
    else:
        raise AssertionError("a corrupt database was opened")
    held = tmp_path / "held.db"
    holder = sqlite3.connect(held, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")  # another process keeps the (not yet WAL) database locked
    try:
        ResultsStore(held, timeout=0.2)
    except StoreError as e:
        assert "locked by another process" in str(e)
    else:
        raise AssertionError("a locked database was opened")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
