"""Statistics over trials: mean ± std and the paper's Gap / Std against Retrain.

Gap (DualOptim paper, Table 1) = mean over metrics of |mean_trials(method) - mean_trials(Retrain)|;
Std = mean over the same metrics of the standard deviation across trials (sample std,
ddof=1; 0 for a single trial; the paper's parser uses the population std, ddof=0). Retrain's
numbers always come from Retrain models of the same trials (the reference code hard-coded them).

Whether one row beats another is a paired question: both ran on the same forget sets, so
:func:`trial_gaps` gives each trial's Gap (mean over metrics of |run - that trial's Retrain|) and
:func:`paired_difference` the mean difference over trials with a two-sided Student-t interval;
a difference "holds" when its interval excludes 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

DEFAULT_METRICS = ("FA", "RA", "TA", "MIA")


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0.0 for one value)."""
    if len(values) == 0:
        raise ValueError("mean_std of no values")
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def gap_table(per_trial: Mapping[str, Sequence[Mapping[str, float]]], reference: str = "Retrain",
              metrics: Sequence[str] = DEFAULT_METRICS) -> list[dict[str, Any]]:
    """Table-1 rows: per metric mean/std/gap, then the row's Gap and Std.

    Args:
        per_trial: row name -> one metrics dict per trial.
        reference: the row the gaps are measured against (its own gaps are 0).
        metrics: the metric names to summarise (each must be in every trial's dict).

    Returns:
        One dict per row, reference first: ``{"name", "trials", <metric>: {"mean", "std", "gap"}, "Gap", "Std"}``.
    """
    if reference not in per_trial:
        raise ValueError(f"reference row {reference!r} missing; rows: {sorted(per_trial)}")
    summary: dict[str, dict[str, tuple[float, float]]] = {}
    for name, trials in per_trial.items():
        if not trials:
            raise ValueError(f"row {name!r} has no trials")
        for i, t in enumerate(trials):
            missing = [m for m in metrics if m not in t]
            if missing:
                raise ValueError(f"row {name!r} trial {i} lacks metrics {missing}")
        summary[name] = {m: mean_std([float(t[m]) for t in trials]) for m in metrics}
    ref = summary[reference]
    rows = []
    for name in [reference] + [n for n in per_trial if n != reference]:
        row: dict[str, Any] = {"name": name, "trials": len(per_trial[name])}
        for m in metrics:
            mean, std = summary[name][m]
            row[m] = {"mean": mean, "std": std, "gap": abs(mean - ref[m][0])}
        row["Gap"] = sum(row[m]["gap"] for m in metrics) / len(metrics)
        row["Std"] = sum(row[m]["std"] for m in metrics) / len(metrics)
        rows.append(row)
    return rows


def trial_gaps(trials: Sequence[Mapping[str, float]], reference: Sequence[Mapping[str, float]],
               metrics: Sequence[str] = DEFAULT_METRICS) -> list[float]:
    """Per-trial Gap: for trial i, mean over ``metrics`` of |trials[i][m] - reference[i][m]| (same forget set)."""
    if len(trials) != len(reference):
        raise ValueError(f"{len(trials)} trials but {len(reference)} reference trials: they must be paired")
    return [sum(abs(float(t[m]) - float(r[m])) for m in metrics) / len(metrics) for t, r in zip(trials, reference)]


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom."""
    from scipy.stats import t  # scipy comes with scikit-learn (the MIA); imported only when needed

    return float(t.ppf(p, df))


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean of ``a[i] - b[i]`` over pairs with its two-sided Student-t ``confidence`` interval.

    Returns:
        ``{"n", "mean", "std" (ddof=1), "lo", "hi", "holds"}``; ``holds`` is True when the interval excludes 0.
        With fewer than 2 pairs there is no interval (``lo``/``hi`` None, ``holds`` False).
    """
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    diffs = [float(x) - float(y) for x, y in zip(a, b)]
    mean, std = mean_std(diffs)
    n = len(diffs)
    if n < 2:
        return {"n": n, "mean": mean, "std": std, "lo": None, "hi": None, "holds": False}
    half = t_quantile(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
    lo, hi = mean - half, mean + half
    return {"n": n, "mean": mean, "std": std, "lo": lo, "hi": hi, "holds": lo > 0 or hi < 0}


def format_cell(cell: Mapping[str, float], digits: int = 2) -> str:
    """``mean ± std (gap)`` as printed in the paper."""
    return f"{cell['mean']:.{digits}f} ± {cell['std']:.{digits}f} ({cell['gap']:.{digits}f})"
