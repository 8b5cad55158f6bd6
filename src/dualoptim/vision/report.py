"""Paper-style outputs of a benchmark, built from the results database alone (:func:`write_report`).

* Table 1: one row per method x optimizer, each metric as ``mean ± std (gap)``, then Gap
  and Std (Retrain first) -- terminal (rich), Markdown, CSV and ``summary.json``. Each DualOptim row
  also gets ΔGap: its per-trial Gap minus its method's shared row's, paired by forget set, with a 95%
  t-interval, marked ``*`` where the interval excludes 0 (:data:`FOOTER` states the conventions).
* Figures 1/2 (unlearning process), 3 (forget vs retain gradient norms) and 4 (cosine
  similarity of forget and retain gradients) as PNG files.
"""

from __future__ import annotations

import csv
import io
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..io import atomic_write_bytes, atomic_write_json, atomic_write_text
from ..optim import OptimSpec
from ..stats import DEFAULT_METRICS, format_cell, gap_table, paired_difference, trial_gaps
from ..store import ResultsStore
from ..tables import Table
from .methods import get_method_info

RETRAIN = "Retrain"
ORIGINAL = "Original"  # the model before unlearning: what "doing nothing" scores against Retrain
FOOTER = ("mean ± std over trials (sample std, ddof=1); (gap) = |mean − Retrain's mean|; Gap, Std = their means "
          "over the metrics. ΔGap = per-trial Gap (mean over metrics of |run − that trial's Retrain|) of the +DO row "
          "minus its method's shared row, paired by forget set: mean [95% Student-t interval]; * = the interval "
          "excludes 0 (the difference holds over these trials).")


def is_dual(optimizer: str) -> bool:
    """Whether a stored optimizer spec keeps decoupled states (``+DO``); False for ``-`` and shared specs."""
    try:
        return OptimSpec.parse(optimizer).is_dual
    except ValueError:
        return False


def row_label(method: str, optimizer: str) -> str:
    """Row name: ``Retrain``, ``Original``, ``SalUn [sgd]`` (shared) or ``SalUn+DO [adam+sgd]`` (DualOptim).

    ``+DO`` is read from the parsed spec: ``adam+adam:decouple=none`` (one shared Adam state) gets none.
    """
    if method in (RETRAIN, ORIGINAL):
        return method
    return f"{method}{'+DO' if is_dual(optimizer) else ''} [{optimizer}]"


def label_of(row: Mapping[str, Any]) -> str:
    """The table row a stored run belongs to (its stored label, else method and optimizer)."""
    return row.get("extra", {}).get("label") or row_label(row["method"], row["optimizer"])


def summarize(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str] = DEFAULT_METRICS) -> list[dict[str, Any]]:
    """Table-1 rows from stored runs (one per method x optimizer; trials grouped): Retrain, Original, methods.

    A trial whose loss diverged (NaN/inf) is counted in the row's ``diverged`` and left out of its statistics;
    a row whose every trial diverged has ``trials == 0`` and no statistics (``None``).
    """
    per_trial: dict[str, list[dict[str, float]]] = defaultdict(list)
    by_trial: dict[str, dict[tuple[int, str], dict[str, float]]] = defaultdict(dict)
    spec_by_label: dict[str, tuple[str, str]] = {}
    diverged: dict[str, int] = defaultdict(int)
    order = {RETRAIN: 0, ORIGINAL: 1}
    for r in sorted(rows, key=lambda r: (order.get(r["method"], 2), r["method"], is_dual(r["optimizer"]), r["trial"])):
        label = label_of(r)
        spec_by_label[label] = (r["method"], r["optimizer"])
        if r.get("extra", {}).get("diverged"):
            diverged[label] += 1
        else:
            per_trial[label].append(r["metrics"])
            by_trial[label][(r["trial"], r.get("forget_hash") or "")] = r["metrics"]
    stats = {row["name"]: row for row in gap_table(per_trial, reference=RETRAIN, metrics=metrics)}
    empty = {"trials": 0, **dict.fromkeys(metrics), "Gap": None, "Std": None}
    return [{**stats.get(label, {"name": label, **empty}), "method": method, "optimizer": optimizer,
             "diverged": diverged[label], "paired": _paired(label, spec_by_label, by_trial, metrics)}
            for label, (method, optimizer) in spec_by_label.items()]


def shared_partner(label: str, spec_by_label: Mapping[str, tuple[str, str]]) -> str | None:
    """The shared row a +DO row is compared with: its method's one shared row with the default label (when there
    are several: the method's paper optimizer, else the one fully shared Adam state ``decouple=none`` of the
    moment ablation); None for shared rows or when ambiguous (sweeps). ``spec_by_label``: row label -> (method,
    optimizer)."""
    method, optimizer = spec_by_label[label]
    if method in (RETRAIN, ORIGINAL) or not is_dual(optimizer):
        return None
    shared = [k for k, (m, o) in spec_by_label.items() if m == method and not is_dual(o) and k == row_label(m, o)]
    if len(shared) > 1:
        try:
            paper = get_method_info(method).shared_optim
        except Exception:  # an unregistered method name read back from a database: no preference
            paper = None
        by_paper = [k for k in shared if spec_by_label[k][1] == paper]
        shared = by_paper or [k for k in shared if OptimSpec.parse(spec_by_label[k][1]).decouple == ""]
    return shared[0] if len(shared) == 1 else None


def _paired(label: str, spec_by_label: Mapping[str, tuple[str, str]],
            by_trial: Mapping[str, Mapping[tuple[int, str], Mapping[str, float]]],
            metrics: Sequence[str]) -> dict[str, Any] | None:
    """ΔGap of a +DO row against its shared partner over the trials (forget sets) both ran without diverging."""
    partner = shared_partner(label, spec_by_label)
    if partner is None or RETRAIN not in by_trial:
        return None
    keys = sorted(set(by_trial.get(label, {})) & set(by_trial.get(partner, {})) & set(by_trial[RETRAIN]))
    if not keys:
        return None
    ref = [by_trial[RETRAIN][k] for k in keys]
    gaps = trial_gaps([by_trial[label][k] for k in keys], ref, metrics)
    base = trial_gaps([by_trial[partner][k] for k in keys], ref, metrics)
    return {"vs": partner, **paired_difference(gaps, base)}


def format_paired(p: Mapping[str, Any] | None) -> str:
    """``-1.23 [-2.01, -0.45] *`` (ΔGap, its 95% interval, * when the interval excludes 0); ``""`` for none."""
    if not p:
        return ""
    if p["lo"] is None:
        return f"{p['mean']:+.2f} (n={p['n']})"
    return f"{p['mean']:+.2f} [{p['lo']:+.2f}, {p['hi']:+.2f}]{' *' if p['holds'] else ''}"


def _cells(r: Mapping[str, Any], metrics: Sequence[str]) -> list[str]:
    """Trials, the metric cells, Gap and Std of one row as printed (``—`` where every trial diverged)."""
    trials = str(r["trials"]) + (f" (+{r['diverged']} diverged)" if r.get("diverged") else "")
    if not r["trials"]:
        return [trials, *["—"] * (len(metrics) + 2), ""]
    return [trials, *[format_cell(r[m]) for m in metrics], f"{r['Gap']:.2f}", f"{r['Std']:.2f}",
            format_paired(r.get("paired"))]


def _table(table: Sequence[Mapping[str, Any]], metrics: Sequence[str], title: str = "") -> Table:
    head = ["Method", "Trials", *[f"{m} (%)" for m in metrics], "Gap ↓", "Std ↓", "ΔGap vs shared [95% CI]"]
    return Table(head, [[r["name"], *_cells(r, metrics)] for r in table], title, FOOTER, "l" + "r" * len(head))


def table_markdown(table: Sequence[Mapping[str, Any]], metrics: Sequence[str] = DEFAULT_METRICS) -> str:
    """The table as GitHub Markdown."""
    return _table(table, metrics).markdown() + "\n" + FOOTER + "\n"


def table_csv(table: Sequence[Mapping[str, Any]], metrics: Sequence[str] = DEFAULT_METRICS) -> str:
    """The table as CSV (one column per mean/std/gap)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["method", "optimizer", "trials", "diverged",
                *[f"{m}_{k}" for m in metrics for k in ("mean", "std", "gap")], "Gap", "Std",
                "dGap_vs", "dGap_mean", "dGap_lo", "dGap_hi", "dGap_holds"])
    for r in table:
        values = [r[m][k] if r["trials"] else None for m in metrics for k in ("mean", "std", "gap")]
        p = r.get("paired") or {}
        w.writerow([r["method"], r["optimizer"], r["trials"], r.get("diverged", 0),
                    *["" if v is None else f"{v:.4f}" for v in [*values, r["Gap"], r["Std"]]],
                    p.get("vs", ""), *["" if p.get(k) is None else f"{p[k]:.4f}" for k in ("mean", "lo", "hi")],
                    "" if not p else str(p["holds"]).lower()])
    return buf.getvalue()


def print_table(table: Sequence[Mapping[str, Any]], title: str, metrics: Sequence[str] = DEFAULT_METRICS) -> None:
    """Print the table with rich (to stdout)."""
    _table(table, metrics, title).print(width=220)


def write_tables(folder: Path, table: Sequence[Mapping[str, Any]], config: Mapping[str, Any],
                 metrics: Sequence[str] = DEFAULT_METRICS, versions: Mapping[str, str] | None = None) -> list[Path]:
    """``table.md``, ``table.csv`` and ``summary.json`` (with the producing versions) in ``folder``, atomically."""
    summary = {"rows": [{"method": r["method"], "optimizer": r["optimizer"], "trials": r["trials"],
                         "diverged": r.get("diverged", 0), **{m: dict(r[m]) if r[m] else None for m in metrics},
                         "Gap": r["Gap"], "Std": r["Std"], "paired": r.get("paired")} for r in table],
               "conventions": FOOTER, "config": dict(config), "versions": dict(versions or {})}
    return [atomic_write_text(folder / "table.md", table_markdown(table, metrics)),
            atomic_write_text(folder / "table.csv", table_csv(table, metrics)),
            atomic_write_json(folder / "summary.json", summary)]


def _pyplot() -> Any:
    """``matplotlib.pyplot`` on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    """Write ``fig`` as a PNG atomically and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _mean_band(curves: Sequence[Sequence[tuple[float, float]]]) -> tuple[list[float], list[float], list[float]]:
    """Mean and std over trials at the steps all trials share."""
    import numpy as np

    steps = sorted(set.intersection(*[{s for s, _ in c} for c in curves])) if curves else []
    vals = np.array([[dict(c)[s] for s in steps] for c in curves], dtype=float)
    if not steps:
        return [], [], []
    std = vals.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros(len(steps))
    return steps, vals.mean(axis=0).tolist(), std.tolist()


def plot_process(folder: Path, series: Mapping[str, Sequence[Sequence[Mapping[str, float]]]],
                 retrain: Mapping[str, float], metrics: Sequence[str] = DEFAULT_METRICS) -> Path | None:
    """Figure 1/2: each metric vs unlearning step, mean ± std over trials, Retrain dashed."""
    plt = _pyplot()
    labels = [k for k, v in series.items() if any(len(t) > 1 for t in v)]
    if not labels:
        return None
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4))
    for ax, m in zip(axes, metrics):
        for i, label in enumerate(labels):
            curves = [[(e["step"], e[m]) for e in trial if m in e] for trial in series[label]]
            steps, mean, std = _mean_band([c for c in curves if c])
            if not steps:
                continue
            color = f"C{i}"
            ax.plot(steps, mean, color=color, label=label, lw=1.5)
            ax.fill_between(steps, [a - b for a, b in zip(mean, std)], [a + b for a, b in zip(mean, std)],
                            color=color, alpha=0.2)
        if m in retrain:
            ax.axhline(retrain[m], color="black", ls="--", lw=1, label="Retrain")
        ax.set_title(m)
        ax.set_xlabel("unlearning step")
        ax.set_ylabel("%")
    axes[0].legend(fontsize=7)
    fig.suptitle("Unlearning process (mean ± std over trials)")
    return _save(fig, folder / "process.png")


def _moving_average(values: Sequence[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def plot_gradients(folder: Path, history: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]]) -> list[Path]:
    """Figure 3 (forget vs retain gradient norms) and Figure 4 (their cosine similarity, moving average)."""
    plt = _pyplot()
    labels = [k for k, v in history.items() if v and any("grad_norm" in r for r in v[0])]
    if not labels:
        return []
    fig, axes = plt.subplots(1, len(labels), figsize=(4.2 * len(labels), 3.2), squeeze=False)
    fig2, axes2 = plt.subplots(1, len(labels), figsize=(4.2 * len(labels), 3.2), squeeze=False)
    for ax, ax2, label in zip(axes[0], axes2[0], labels):
        trial = history[label][0]  # one trial, as in the paper's figures
        for phase, color in (("forget", "C3"), ("retain", "C0")):
            pts = [(r["step"], r["grad_norm"]) for r in trial if r["phase"] == phase and "grad_norm" in r]
            if pts:
                ax.plot(*zip(*pts), ".", ms=2, color=color, label=f"{phase} gradient")
        cos = [(r["step"], r["cos"]) for r in trial if "cos" in r]
        if cos:
            steps, values = zip(*cos)
            ax2.plot(steps, values, ".", ms=2, color="C7", alpha=0.5, label="cos(g_f, g_r)")
            ax2.plot(steps, _moving_average(values, 20), color="C1", label="moving average (20)")
            ax2.axhline(0, color="black", lw=0.8)
        ax.set_yscale("log")
        for a, ylabel in ((ax, "gradient norm"), (ax2, "cosine similarity")):
            a.set_title(label, fontsize=9)
            a.set_xlabel("unlearning step")
            a.set_ylabel(ylabel)
            a.legend(fontsize=7)
    return [_save(fig, folder / "grad_norms.png"), _save(fig2, folder / "grad_cosine.png")]


def plot_sweep(folder: Path, points: Mapping[str, Sequence[tuple[float, float, float]]], param: str,
               original_gap: float | None = None) -> Path | None:
    """Gap and Std versus a swept hyper-parameter (log x), one line per method x optimizer.

    ``points[label] = [(value, Gap, Std), ...]``; ``original_gap`` (the model before unlearning) is drawn as a
    dotted line: a setting above it is worse than doing nothing.
    """
    plt = _pyplot()
    if not points:
        return None
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.4))
    for i, (label, pts) in enumerate(sorted(points.items())):
        pts = sorted(pts)
        style = "-" if "+DO" in label else "--"
        a1.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", color=f"C{i}", label=label)
        a2.plot([p[0] for p in pts], [p[2] for p in pts], style, marker="o", color=f"C{i}", label=label)
    if original_gap is not None:
        a1.axhline(original_gap, color="gray", ls=":", lw=1, label="Original (no unlearning)")
    for a, name in ((a1, "Gap to Retrain ↓"), (a2, "Std over trials ↓")):
        a.set_xscale("log")
        a.set_xlabel(param)
        a.set_ylabel(f"{name} (%)")
    a1.legend(fontsize=7)
    fig.suptitle(f"Sensitivity to {param}")
    return _save(fig, folder / "sensitivity.png")


KEYS = "keys:"  # + experiment: the series holding the result keys of the configuration last run


def write_report(store: ResultsStore, exp: str, out_dir: Path) -> list[dict[str, Any]]:
    """Table and figures of experiment ``exp`` from the database alone, written to ``out_dir``."""
    rows = store.rows(exp)
    current = store.series(f"{KEYS}{exp}")
    if current:  # the rows of the configuration last run; older presets' rows are left out, said once
        keep = set(current[0]["keys"])
        stale = sum(r["key"] not in keep for r in rows)
        rows = [r for r in rows if r["key"] in keep]
        if stale:
            print(f"{exp}: {stale} stored row(s) from an earlier configuration of this benchmark (e.g. older "
                  "presets) left out of the table; they stay in the database", file=sys.stderr)
    if not rows:
        raise ConfigError(f"no results for experiment {exp!r} in {store.path}")
    if not any(r["method"] == RETRAIN for r in rows):
        raise ConfigError(f"experiment {exp!r} has no Retrain rows: Gap cannot be computed")
    stored_config = (store.series(f"config:{exp}") or [{}])[0]
    table = summarize(rows)
    print_table(table, f"{exp}: mean ± std (gap to Retrain) over trials, %")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = write_tables(out_dir, table, stored_config, versions=rows[-1]["versions"])
    curves: dict[str, dict[str, list]] = {":evals": {}, ":history": {}}  # per row label: one curve per trial
    for r in rows:
        for suffix, by_label in curves.items():
            if r["method"] != RETRAIN and (curve := store.series(r["key"] + suffix)):
                by_label.setdefault(label_of(r), []).append(curve)
    retrain = {m: table[0][m]["mean"] for m in DEFAULT_METRICS}
    figure = plot_process(out_dir, curves[":evals"], retrain)
    figures = ([figure] if figure else []) + plot_gradients(out_dir, curves[":history"])
    sweep = stored_config.get("sweep")
    if sweep:
        points: dict[str, list[tuple[float, float, float]]] = {}
        for row in table[1:]:
            values = {r["params"].get(sweep) for r in rows if label_of(r) == row["name"]}
            if row["trials"] and len(values) == 1 and isinstance(next(iter(values)), (int, float)):
                group = row_label(row["method"], row["optimizer"])
                points.setdefault(group, []).append((float(values.pop()), row["Gap"], row["Std"]))
        original = [row["Gap"] for row in table if row["method"] == ORIGINAL]
        figure = plot_sweep(out_dir, points, sweep, original[0] if original else None)
        figures += [figure] if figure else []
    print(f"wrote {', '.join(str(p) for p in [*paths, *figures])}")
    return table

