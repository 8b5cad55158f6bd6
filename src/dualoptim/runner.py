"""The benchmark job runner shared by every modality.

A benchmark is a list of jobs, each with a content key (:func:`dualoptim.store.run_key` of everything
that determines its result). :meth:`Runner.run` skips a job whose key is already stored (so a killed
benchmark resumes where it stopped), otherwise runs it and stores its row. A job that diverges
(:class:`~dualoptim.errors.DivergenceError`, or a non-finite metric) is stored as a *diverged* row --
a result, not a crash -- and the benchmark goes on. Each job is logged with the time elapsed and an
estimate of the time left (from the jobs this process ran).

Reference rows (Retrain/Original, Retain) are jobs like the others; a job that later jobs depend on
(e.g. the retain model's truth ratios) is read back with ``store.get(key)`` after :meth:`Runner.run`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import DivergenceError
from .store import ResultsStore


@dataclass
class Outcome:
    """What a job computed: its metrics, timings, extra fields and per-step curves.

    ``series`` maps a key suffix to a curve stored with ``store.put_series(key + suffix, rows)``
    (``""``: the curve under the job's own key).
    """

    metrics: Mapping[str, Any]
    timings: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)
    series: Mapping[str, list[dict[str, Any]]] = field(default_factory=dict)
    summary: str = ""  # appended to the job's log line, e.g. "FA 0.0%  FD 12.3"


@dataclass
class Job:
    """One row of a benchmark: where it is stored and how to compute it.

    ``compute`` returns an :class:`Outcome`; ``params``, ``forget_hash`` and ``extra`` are stored with
    the row (a diverged row as well).
    """

    key: str
    trial: int
    method: str
    optimizer: str
    compute: Callable[[], Outcome]
    params: Mapping[str, Any] = field(default_factory=dict)
    forget_hash: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)
    label: str = ""  # in the log; default "<method> <optimizer> trial <trial>"


def non_finite(metrics: Mapping[str, Any]) -> list[str]:
    """Names of the metrics that are NaN or infinite."""
    return [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]


class Runner:
    """Runs the jobs of one experiment into an open :class:`ResultsStore`.

    Args:
        store: the results database (opened by the caller with ``with``).
        experiment: the experiment name every row is stored under.
        total: the number of jobs the benchmark will pass to :meth:`run` (for the time-left estimate).
        log: a print-like function.
        name: the log prefix.
    """

    def __init__(self, store: ResultsStore, experiment: str, total: int, log: Callable[[str], Any] = print,
                 name: str | None = None) -> None:
        self.store, self.experiment, self.total, self.log = store, experiment, total, log
        self.name = name or experiment
        self.start = time.perf_counter()
        self.done = 0  # jobs passed to run()
        self.computed, self.spent = 0, 0.0  # jobs run by this process and their seconds

    def where(self) -> str:
        """``done/total, x min elapsed, ~y min left``."""
        left = self.total - self.done
        eta = f", ~{self.spent / self.computed * left / 60:.1f} min left" if self.computed and left > 0 else ""
        return f"{self.done}/{self.total}, {(time.perf_counter() - self.start) / 60:.1f} min elapsed{eta}"

    def run(self, job: Job) -> bool:
        """Run ``job`` unless its key is stored; returns whether it ran. Its row is stored either way after."""
        self.done += 1
        if self.store.has(job.key):
            return False
        label = job.label or f"{job.method} {job.optimizer} trial {job.trial}"
        t0 = time.perf_counter()
        row = dict(experiment=self.experiment, trial=job.trial, method=job.method, optimizer=job.optimizer,
                   params=job.params, forget_hash=job.forget_hash)
        try:
            out = job.compute()
            bad = non_finite(out.metrics)
            if bad:
                raise DivergenceError(f"metrics {', '.join(bad)} are not finite")
        except DivergenceError as e:  # a result, not a crash: the row counts it and the benchmark goes on
            self.store.put(job.key, **row, metrics={}, extra={**job.extra, "diverged": str(e)},
                           timings={"unlearn_s": time.perf_counter() - t0})  # as vision's diverged rows
            self._finished(t0, f"{label} DIVERGED: {e}")
            return True
        for suffix, rows in out.series.items():
            self.store.put_series(job.key + suffix, rows)
        self.store.put(job.key, **row, metrics=out.metrics, extra={**job.extra, **out.extra}, timings=out.timings)
        self._finished(t0, f"{label}: {out.summary}" if out.summary else label)
        return True

    def _finished(self, t0: float, what: str) -> None:
        seconds = time.perf_counter() - t0
        self.computed, self.spent = self.computed + 1, self.spent + seconds
        self.log(f"[{self.name}] {what} ({seconds:.0f} s; {self.where()})")

    def close(self) -> None:
        """Log the total time."""
        self.log(f"[{self.name}] finished in {(time.perf_counter() - self.start) / 60:.1f} min")


__all__ = ["Job", "Outcome", "Runner", "non_finite"]
