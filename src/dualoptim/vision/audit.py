"""The unlearning audit: what a practitioner can show after deleting samples from a model.

An :class:`Audit` holds, for the original, the unlearned and (optionally) the Retrain model, the metrics of
``vision.metrics`` (all in %):

- FA / UA: accuracy on the forget set and 100 - FA; RA: retain accuracy; TA: test accuracy;
- MIA: **entropy-LR member rate** (% of forget samples an entropy logistic regression, fit on retain =
  member vs test = non-member, calls member; the target is Retrain's value, lower = more forgotten);
- MIA_SVC: **SVC-confidence non-member rate** (SalUn's MIA-efficacy: % of forget samples an RBF SVC on
  the true-class probability calls non-member; higher = more forgotten).

Without any Retrain it gives a **verdict** (``verdict``: "forgotten: ..." / "NOT forgotten: ..." /
"utility lost: ..." / "unknown: ...", details in ``verdict_details``; the retrain-free rule of
``vision.calibrate`` and docs/defaults.md), how the run was calibrated (``calibration``) and every warning
that changes what the numbers mean (``warnings``: mismatched Retrain/original, degenerate models).
With a Retrain reference it adds the Gap to Retrain (mean |metric - Retrain| over FA, RA, TA, MIA, the
DualOptim paper's Table-1 Gap for one trial), plus time taken, method, optimizer, hyper-parameters and
versions. ``to_json()`` / ``write_json(path)`` and ``write_html(path)`` (one self-contained file: tables and
the process plot as an embedded PNG) write atomically.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..io import atomic_write_json, atomic_write_text
from ..stats import DEFAULT_METRICS, gap_table
from ..store import versions as store_versions
from .calibrate import attack_target
from .metrics import DESCRIPTIONS, METRICS

GAP_METRICS = DEFAULT_METRICS  # the Gap's metrics, as in the benchmark tables (stats)
FORMAT = 2
GAP_DEFINITION = ("Gap to Retrain = mean over FA, RA, TA and MIA (entropy-LR member rate) of |model - Retrain|, "
                  "in points; 0 = indistinguishable from retraining without the forget set. \"Original\" is doing "
                  "nothing: unlearning helps only where its Gap is below Original's.")
HUGE_WEIGHT = 1e4
VERDICT_COLOURS = {"forgotten": "#1b7a2e", "NOT forgotten": "#b3261e", "utility lost": "#b36b00",
                   "unknown": "#555555"}


def budget_text(b: dict[str, Any]) -> str:
    """The calibration's time budget in words, starting with "time budget" (rule v4, docs/defaults.md)."""
    if "retrain_work" not in b:
        note = str(b.get("note", "?"))
        return note if note.startswith("time budget") else f"time budget: none ({note})"
    key = "iterations" if "iterations" in b else "epochs"
    floor = ", the floor: calibration's fixed part alone uses the budget" if b.get("floor") else ""
    frac = b.get("planned_fraction")
    return (f"time budget: {100 * b['fraction']:.0f}% of a Retrain of {b['train_epochs']} epochs "
            f"({b.get('source', 'given')}): {b[key]} {key[:-1] if b[key] == 1 else key} (without the budget "
            f"{b[f'{key}_v3']}){floor}; planned work "
            + (f"{100 * frac:.0f}% of a Retrain's" if frac is not None else "?"))


def lr_source(cal: dict[str, Any]) -> str:
    """Where a calibrated run's forget lr came from, in words (rules v3, v5-v8, docs/defaults.md)."""
    if attack_target(cal):
        guard = ", with the held-out member-rate guard" if cal.get("member_guard") is not None else ""
        return f"(rule {cal['rule']}: the start lr, moved one rung at a time by the checks{guard})"
    return "from the probe" if cal.get("probe") else "(probe skipped: the target was met already)"


def degenerate_warnings(name: str, metrics: dict[str, float | None], num_classes: int,
                        model: torch.nn.Module | None = None) -> list[str]:
    """Warnings that make a model's numbers meaningless: non-finite or huge weights, accuracy near chance."""
    out = []
    if model is not None:
        worst = 0.0
        for p in model.parameters():
            if not torch.isfinite(p.detach()).all():
                out.append(f"the {name} model has NaN/inf weights")
                break
            worst = max(worst, float(p.detach().abs().max())) if p.numel() else worst
        else:
            if worst > HUGE_WEIGHT:
                out.append(f"the {name} model has huge weights (max |w| = {worst:.3g}): it has probably diverged")
    chance = 100.0 / max(num_classes, 1)
    for m in ("RA", "TA"):
        v = metrics.get(m)
        if v is not None and v == v and v <= chance + 0.5 * (100.0 - chance) * 0.1:
            out.append(f"the {name} model is near chance accuracy ({m} {v:.1f}% with {num_classes} classes, chance "
                       f"{chance:.1f}%): its other numbers mean little")
            break
    return out


def versions() -> dict[str, str]:
    """The results' versions (``store.versions``: package, torch, Python, git) plus the attack libraries'."""
    import numpy
    import sklearn

    return {**store_versions(), "numpy": numpy.__version__, "scikit-learn": sklearn.__version__}


def gaps(rows: dict[str, dict[str, float | None]], metrics: tuple[str, ...] = GAP_METRICS
         ) -> tuple[dict[str, float], dict[str, dict[str, float]], list[str]]:
    """Gap to ``rows["Retrain"]`` of every other row over the metrics all rows have (stats.gap_table)."""
    used = [m for m in metrics if all(r.get(m) is not None for r in rows.values())]
    if not used:
        return {}, {}, []
    table = gap_table({k: [{m: float(v[m]) for m in used}] for k, v in rows.items()}, "Retrain", used)
    return ({r["name"]: r["Gap"] for r in table if r["name"] != "Retrain"},
            {r["name"]: {m: r[m]["gap"] for m in used} for r in table if r["name"] != "Retrain"}, used)


@dataclass
class Audit:
    """Metrics of the original, unlearned and Retrain models and everything needed to interpret them.

    ``gap`` maps ``"Original"`` / ``"Unlearned"`` to the Gap to Retrain over ``gap_metrics`` (empty
    without Retrain); ``metric_gaps`` holds the per-metric absolute differences.
    """

    method: str
    optim: str
    hyperparameters: dict[str, Any]
    sizes: dict[str, int]
    original: dict[str, float | None]
    unlearned: dict[str, float | None]
    retrain: dict[str, float | None] | None = None
    gap: dict[str, float] = field(default_factory=dict)
    metric_gaps: dict[str, dict[str, float]] = field(default_factory=dict)
    gap_metrics: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    process: list[dict[str, float]] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    metric_definitions: dict[str, str] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    verdict: str = ""
    verdict_details: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def build(cls, *, method: str, optim: str, hyperparameters: dict[str, Any], sizes: dict[str, int],
              original: dict[str, float | None], unlearned: dict[str, float | None],
              retrain: dict[str, float | None] | None = None, timings: dict[str, float] | None = None,
              process: list[dict[str, float]] | None = None, source: dict[str, Any] | None = None,
              verdict: str = "", verdict_details: dict[str, Any] | None = None,
              calibration: dict[str, Any] | None = None, warnings: list[str] | None = None) -> Audit:
        """An audit with Gap, versions, timestamp and metric definitions filled in."""
        gap, metric_gaps, used = ({}, {}, [])
        if retrain is not None:
            gap, metric_gaps, used = gaps({"Retrain": retrain, "Original": original, "Unlearned": unlearned})
        return cls(method=method, optim=optim, hyperparameters=hyperparameters, sizes=dict(sizes),
                   original=dict(original), unlearned=dict(unlearned),
                   retrain=None if retrain is None else dict(retrain),
                   gap=gap, metric_gaps=metric_gaps, gap_metrics=used, timings=dict(timings or {}),
                   process=list(process or []), versions=versions(),
                   created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                   metric_definitions={**{m: DESCRIPTIONS[m] for m in METRICS}, "Gap": GAP_DEFINITION},
                   source=dict(source or {}), verdict=verdict, verdict_details=dict(verdict_details or {}),
                   calibration=dict(calibration or {}), warnings=list(warnings or []))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "dualoptim.audit", "format": FORMAT, **asdict(self)}

    def to_json(self) -> str:
        """The audit as JSON text (NaN is not JSON: an undefined metric is ``null``)."""
        return json.dumps(_finite(self.to_dict()), indent=2, sort_keys=True, allow_nan=False) + "\n"

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        """Atomically write :meth:`to_json` to ``path``."""
        return atomic_write_json(path, _finite(self.to_dict()))

    def summary(self) -> str:
        """A few plain-text lines: one row per model, Gap when there is a Retrain reference."""
        lines = [f"{self.method} [{self.optim}]: forget {self.sizes.get('forget')}, retain {self.sizes.get('retain')}, "
                 f"test {self.sizes.get('test')}{self._heldout_size()} samples; unlearning "
                 f"{self.timings.get('unlearn_s', 0):.1f} s"]
        for name, row in self._rows():
            cells = " ".join(f"{m}={_fmt(row.get(m))}" for m in METRICS)
            gap = f"  Gap={self.gap[name]:.2f}" if name in self.gap else ""
            lines.append(f"  {name:<9} {cells}{gap}")
        if self.gap:
            lines.append("  (Gap = mean |model - Retrain| over FA, RA, TA, MIA in points; Original = doing nothing)")
        cal = self.calibration
        if cal.get("mode") == "auto":
            lines.append(f"calibrated: forget lr {cal.get('forget_lr', 0):.3g} {lr_source(cal)}, stopped: "
                         f"{cal.get('stop_reason', '?')} after {self.timings.get('unlearn_steps', '?')} steps")
            if cal.get("budget"):
                lines.append(budget_text(cal["budget"]))
        elif cal:
            lines.append(f"not calibrated ({cal.get('reason', 'off')})")
        if self.verdict:
            lines.append(f"verdict: {self.verdict}")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def _heldout_size(self, sep: str = ", ") -> str:
        """The held-out set of the verdict, when it is not the test set (``dualoptim audit --heldout FILE``)."""
        n = self.sizes.get("heldout")
        return "" if n is None or n == self.sizes.get("test") else f"{sep}held-out (verdict) {n}"

    def _rows(self) -> list[tuple[str, dict[str, float | None]]]:
        rows = [("Original", self.original), ("Unlearned", self.unlearned)]
        return rows + ([("Retrain", self.retrain)] if self.retrain is not None else [])

    def write_html(self, path: str | os.PathLike[str]) -> Path:
        """Atomically write one self-contained HTML report (no external files, scripts or fonts)."""
        return atomic_write_text(path, self.to_html())

    def to_html(self) -> str:
        e = html.escape
        head = ["Model", *[f"{m} (%)" for m in METRICS], f"Gap to Retrain ({', '.join(self.gap_metrics)})"]
        body = []
        for name, row in self._rows():
            gap = f"{self.gap[name]:.2f}" if name in self.gap else ("0.00" if name == "Retrain" and self.gap else "-")
            body.append([name, *[_fmt(row.get(m)) for m in METRICS], gap])
        parts = [f"<h1>Unlearning audit: {e(self.method)} [{e(self.optim)}]</h1>",
                 f"<p>{e(self.created)} &middot; forget {self.sizes.get('forget')} / retain "
                 f"{self.sizes.get('retain')} / test {self.sizes.get('test')}{e(self._heldout_size(' / '))} "
                 "samples</p>"]
        if self.verdict:
            status = self.verdict_details.get("status", self.verdict.split(":")[0])
            colour = VERDICT_COLOURS.get(status, "#555555")
            parts.append(f'<p class="verdict" style="border-left:6px solid {colour};padding:0.5em 1em;'
                         f'background:#f6f6f6"><b style="color:{colour}">Verdict: {e(status)}</b><br>'
                         f"{e(self.verdict)}</p>")
        for w in self.warnings:
            parts.append(f'<p class="warning" style="color:#b3261e"><b>Warning:</b> {e(w)}</p>')
        cal = self.calibration
        if cal:
            how = (f"calibrated without a Retrain: forget lr {cal.get('forget_lr', 0):.3g} {lr_source(cal)}; "
                   f"stopped: {cal.get('stop_reason', '?')}" if cal.get("mode") == "auto"
                   else f"not calibrated ({cal.get('reason', 'off')})")
            if cal.get("budget"):
                how += f"; {budget_text(cal['budget'])}"
            parts.append(f"<p>Run: {e(how)} (docs/defaults.md).</p>")
        parts += ["<h2>Metrics</h2>", _table(head, body), f"<p>{e(GAP_DEFINITION)}</p>",
                 "<h2>What the metrics mean</h2>",
                 _table(["Metric", "Definition"], [[k, v] for k, v in self.metric_definitions.items()])]
        if self.retrain is None:
            parts.append("<p><b>No Retrain reference</b>: pass <code>retrain=True</code> (or a Retrain model) to see "
                         "how close the unlearned model is to retraining without the forget set.</p>")
        img = self._process_png()
        if img:
            parts += ["<h2>Unlearning process</h2>",
                      f'<img alt="unlearning process" src="data:image/png;base64,{img}" style="max-width:100%">']
        settings = [[k, json.dumps(v, sort_keys=True, default=str)] for k, v in sorted(self.hyperparameters.items())]
        parts += ["<h2>Time</h2>", _table(["Item", "Value"], [[k, _fmt(v)] for k, v in sorted(self.timings.items())]),
                  "<h2>Settings</h2>", _table(["Setting", "Value"], settings)]
        if self.source:
            parts += ["<h2>Inputs</h2>", _table(["Input", "Value"], [[k, json.dumps(v, default=str)]
                                                                       for k, v in sorted(self.source.items())])]
        parts += ["<h2>Versions</h2>", _table(["Package", "Version"], sorted(self.versions.items()))]
        style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
                 "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
                 "text-align:right}td:first-child,th:first-child{text-align:left}code{background:#eee}")
        return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>dualoptim audit</title>"
                f"<style>{style}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")

    def _process_png(self) -> str | None:
        """The process plot (FA/RA/TA/MIA vs step, Retrain dashed) as base64 PNG, via report.plot_process."""
        if len(self.process) < 2:
            return None
        from .report import plot_process

        metrics = [m for m in GAP_METRICS if any(m in r for r in self.process)]
        retrain = {m: v for m, v in (self.retrain or {}).items() if v is not None}
        with tempfile.TemporaryDirectory() as tmp:
            path = plot_process(Path(tmp), {f"{self.method} [{self.optim}]": [self.process]}, retrain, metrics)
            return base64.b64encode(path.read_bytes()).decode("ascii") if path else None


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "n/a"
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def _table(head: list[str], rows: list[Any]) -> str:
    e = html.escape
    out = ["<table><tr>" + "".join(f"<th>{e(str(h))}</th>" for h in head) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in rows]
    return "\n".join(out) + "</table>"


def _finite(obj: Any) -> Any:
    """NaN/inf floats -> None, recursively (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if obj == obj and abs(obj) != float("inf") else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj
