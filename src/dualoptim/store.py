"""The results database: one embedded SQLite file shared by every benchmark.

Each finished run is one row keyed by a content hash of everything that determines
its result (:func:`run_key`), so a rerun finds finished work and skips it, and a killed
run resumes where it stopped. Writes are single transactions in WAL mode with a busy
timeout, so several processes can write to one database at once. Opening is safe to race as well:
SQLite does not apply the busy timeout to the switch into WAL mode, so that switch and the schema
creation are retried with jittered exponential backoff until the same timeout runs out.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import random
import sqlite3
import subprocess
import time
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from .errors import StoreError

BUSY_TIMEOUT_S = 120.0  # how long one statement waits for another process's lock
_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6

_SCHEMA = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY,
    experiment TEXT NOT NULL,
    trial INTEGER NOT NULL,
    method TEXT NOT NULL,
    optimizer TEXT NOT NULL,
    metrics TEXT NOT NULL,
    params TEXT NOT NULL,
    forget_hash TEXT NOT NULL DEFAULT '',
    timings TEXT NOT NULL DEFAULT '{}',
    extra TEXT NOT NULL DEFAULT '{}',
    versions TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_experiment ON runs(experiment, method, optimizer, trial);
CREATE TABLE IF NOT EXISTS series (key TEXT PRIMARY KEY, rows TEXT NOT NULL);
COMMIT;
"""
_JSON_COLUMNS = ("metrics", "params", "timings", "extra", "versions")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # NaN/inf are not JSON: stored as null
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        return _jsonable(obj.item())
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def _dumps(obj: Any) -> str:
    return json.dumps(_jsonable(obj), sort_keys=True, allow_nan=False)


def run_key(**parts: Any) -> str:
    """A stable content hash of the keyword arguments (order-independent)."""
    return hashlib.sha256(_dumps(parts).encode()).hexdigest()[:24]


@cache
def versions() -> dict[str, str]:
    """Versions that produced a result: package, torch, Python, and the git commit when available."""
    import torch

    from . import __version__

    out = {"dualoptim": __version__, "torch": torch.__version__, "python": platform.python_version()}
    try:
        root = Path(__file__).resolve().parents[2]
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=5)
        if commit.returncode == 0:
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            out["git"] = commit.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def _is_busy(e: sqlite3.Error) -> bool:
    code = getattr(e, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)  # extended codes carry the primary in the low byte
    return "locked" in str(e) or "busy" in str(e)


class _NotWal(sqlite3.OperationalError):
    """``PRAGMA journal_mode=WAL`` answered another mode: it could not take the lock, or WAL is unsupported."""


def _retry_busy(conn: sqlite3.Connection, fn, timeout: float, not_wal_tries: int = 8) -> None:
    """Run ``fn(conn)``; while SQLite reports the database busy/locked, retry with jittered backoff until
    ``timeout`` seconds have passed (then re-raise). A refused WAL switch is retried ``not_wal_tries`` times
    (SQLite may answer the old mode instead of "locked"; a file system without WAL support answers it always)."""
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        try:
            fn(conn)
            return
        except sqlite3.OperationalError as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(e, _NotWal):
                not_wal_tries -= 1
                if not_wal_tries <= 0:
                    raise
            elif not _is_busy(e):
                raise
            if time.monotonic() + delay > deadline:
                raise
        time.sleep(delay * (0.5 + random.random()))  # jitter: racing openers do not retry in lockstep
        delay = min(delay * 2, 0.25)


def _setup(conn: sqlite3.Connection) -> None:
    if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":  # e.g. a file system without shared memory
            raise _NotWal(f"cannot switch to WAL mode (journal mode stays {mode!r})")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(_SCHEMA)


class ResultsStore:
    """An SQLite results database (default ``runs/results.db``).

    Any number of processes may open (and create) the same database at the same moment.

    Args:
        path: the database file; its folder is created if needed.
        timeout: seconds to wait for another process's lock before giving up.

    Raises:
        StoreError: the file is not a results database (corrupt, or another kind of file), it stays locked
            for ``timeout`` seconds, or it cannot be created.
    """

    def __init__(self, path: str | os.PathLike[str] = "runs/results.db", timeout: float = BUSY_TIMEOUT_S) -> None:
        self.path = Path(path)
        conn = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
            _retry_busy(conn, _setup, timeout)
        except sqlite3.DatabaseError as e:
            if conn is not None:
                conn.close()
            if isinstance(e, sqlite3.OperationalError) and _is_busy(e):
                raise StoreError(f"results database {self.path} is locked by another process (waited "
                                 f"{timeout:g} s); wait for it to finish or pass another --db") from None
            if "not a database" in str(e) or "malformed" in str(e):
                raise StoreError(f"{self.path} is not a dualoptim results database (corrupt or another kind of "
                                 f"file: {e}); move it away or pass another --db") from None
            raise StoreError(f"cannot open results database {self.path}: {e}") from None
        except OSError as e:
            raise StoreError(f"cannot create results database {self.path}: {e.strerror or e}") from None
        self._conn = conn

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()

    def __enter__(self) -> ResultsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, sql: str, args: Sequence[Any]) -> None:
        # BEGIN IMMEDIATE takes the write lock up front, so concurrent writers queue (busy timeout)
        # instead of failing half-way; the statement commits as one transaction.
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.execute(sql, args)
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    def has(self, key: str) -> bool:
        """Whether a finished run with this key is stored."""
        return self._conn.execute("SELECT 1 FROM runs WHERE key = ?", (key,)).fetchone() is not None

    def put(self, key: str, *, experiment: str, trial: int, method: str, optimizer: str,
            metrics: Mapping[str, Any], params: Mapping[str, Any], forget_hash: str = "",
            timings: Mapping[str, Any] | None = None, extra: Mapping[str, Any] | None = None) -> None:
        """Store (or replace) one finished run."""
        self._write(
            "INSERT OR REPLACE INTO runs (key, experiment, trial, method, optimizer, metrics, params, forget_hash,"
            " timings, extra, versions, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key, experiment, int(trial), method, optimizer, _dumps(metrics), _dumps(params), forget_hash,
             _dumps(timings or {}), _dumps(extra or {}), _dumps(versions()), time.time()),
        )

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored run with this key, or None."""
        rows = self._select("WHERE key = ?", (key,))
        return rows[0] if rows else None

    def rows(self, experiment: str | None = None) -> list[dict[str, Any]]:
        """All stored runs (of one experiment), oldest first, JSON columns decoded."""
        if experiment is None:
            return self._select("", ())
        return self._select("WHERE experiment = ?", (experiment,))

    def experiments(self) -> list[str]:
        """Names of the experiments in the database."""
        return [r[0] for r in self._conn.execute("SELECT DISTINCT experiment FROM runs ORDER BY experiment")]

    def _select(self, where: str, args: Sequence[Any]) -> list[dict[str, Any]]:
        cur = self._conn.execute(f"SELECT * FROM runs {where} ORDER BY created, rowid", args)
        names = [d[0] for d in cur.description]
        out = []
        for values in cur.fetchall():
            row = dict(zip(names, values))
            for col in _JSON_COLUMNS:
                row[col] = json.loads(row[col])
            out.append(row)
        return out

    def put_series(self, key: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Store a per-step curve (list of dicts) under ``key``."""
        self._write("INSERT OR REPLACE INTO series (key, rows) VALUES (?, ?)", (key, _dumps(list(rows))))

    def series(self, key: str) -> list[dict[str, Any]]:
        """The curve stored under ``key`` (empty if none)."""
        row = self._conn.execute("SELECT rows FROM series WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else []
