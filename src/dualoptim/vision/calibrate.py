"""Retrain-free calibration and the verdict: has the forget set been forgotten, without a Retrain?

The rule and its reasoning are in docs/defaults.md. In short, held-out data (a validation or test set the
original never trained on) define what "never seen" looks like:

- sample-wise forgetting: the forget set must score like held-out data (forget accuracy FA no more than
  ``tol_acc`` above held-out accuracy HA; a loss-threshold membership attack cannot tell forget from held-out
  samples: AUC <= 0.5 + ``tol_auc``);
- class-wise forgetting (every forget label is absent from the retain set): the forgotten classes' held-out
  accuracy and FA fall to ~0 (<= 2 %);
- in both cases held-out accuracy of what must be kept may not fall by more than ``tol_util``.

:func:`assess` applies these definitions to softmax outputs (``k`` = 1 standard error while unlearning, 2 for
the final verdict); :class:`Monitor` measures them on small fixed subsamples during unlearning and is the
engine's ``stop`` hook; :func:`probe_forget_lr` picks the forget learning rate by a short geometric probe on
a slice of the data; :func:`verdict_text` words the result. Nothing here reads a Retrain model.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

MONITOR_SAMPLES = 256  # per group (forget / held-out / held-out of forgotten classes / retain)
PROBE_PAIRS = 6  # (forget step, retain step) pairs per probe candidate
PROBE_RATIO = math.sqrt(10.0)
PROBE_LADDER = {"adam": (1e-4, 1e-2), "sgd": (1e-3, 1.0)}  # first and last candidate per optimizer family
CLASS_TARGET = 2.0  # %: forgotten-class accuracy of a model that never saw the class (~0)
MIN_TOL_ACC, MIN_TOL_AUC, MIN_TOL_UTIL = 2.0, 0.02, 2.0
MAX_EPOCHS = 10  # rule v2: epoch mode keeps the method's (paper's) 10 epochs with full retain passes
RETAIN_PASSES = 5  # rule v2: iteration mode (SFRon): ~5 passes over the retain set (paper: 1500 / 316 = 4.7)
MAX_BACKOFFS = 2  # rule v3: a utility drop restores the last good state and divides the forget lr by sqrt(10),
#                   at most twice (a factor 10 below the lr in use); the next drop ends the run as in rule v2
# rule v4: a work budget of WORK_FRACTION x a Retrain of the user's train_epochs, in units of one training step on
# one retain batch (docs/defaults.md); the costs are the v3 profile's (Fashion-MNIST / mlp, SalUn + DualOptim)
WORK_FRACTION = 0.2
STEP_WORK = 1.35  # a masked DualOptim step: 5.0 ms vs the Retrain's 3.7 ms
PROBE_WORK = 20.0  # per probe candidate tried: 12 steps x 1.35 + model copy, optimizer and preparation
CHECK_WORK = 12.0  # all checks of a run: <= 11 during unlearning + the one before the first step
NO_BUDGET = "time budget unknown: pass train_epochs"


# ------------------------------------------------------------------------------------------- statistics

def per_sample_loss(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each sample from softmax outputs."""
    return -probs.double().gather(1, labels.reshape(-1, 1).long()).reshape(-1).clamp_min(1e-30).log()


def attack_auc(forget_loss: torch.Tensor, heldout_loss: torch.Tensor) -> float:
    """AUC of a loss-threshold membership attack telling forget (positive) from held-out samples.

    A member has a lower loss, so the attack scores ``-loss`` (fitting it on retain = member vs held-out =
    non-member gives this direction). AUC = P(a forget sample's loss < a held-out sample's loss), ties
    count 1/2: 0.5 = indistinguishable, 1 = every forget sample looks like training data, < 0.5 = the forget
    set looks *less* like training data than unseen data does.
    """
    f, h = forget_loss.double().reshape(-1), heldout_loss.double().reshape(-1)
    if not len(f) or not len(h):
        return float("nan")
    both = torch.cat([f, h])
    order = both.argsort()
    ranks = torch.empty_like(both)
    ranks[order] = torch.arange(1, len(both) + 1, dtype=both.dtype)
    # average ranks over ties (Mann-Whitney)
    uniq, inverse = torch.unique(both, return_inverse=True)
    sums = torch.zeros(len(uniq), dtype=both.dtype).index_add_(0, inverse, ranks)
    counts = torch.zeros(len(uniq), dtype=both.dtype).index_add_(0, inverse, torch.ones_like(ranks))
    ranks = (sums / counts)[inverse]
    # U of held-out = number of (forget, held-out) pairs where held-out loss is larger
    u_h = ranks[len(f):].sum() - len(h) * (len(h) + 1) / 2
    return float(u_h / (len(f) * len(h)))


def tolerances(n_forget: int, n_heldout: int, heldout_acc: float, k: float) -> dict[str, float]:
    """``tol_acc`` (points), ``tol_auc`` and ``tol_util`` (points) for these sample sizes (docs/defaults.md)."""
    p = min(max(heldout_acc / 100.0, 0.0), 1.0)
    nf, nh = max(n_forget, 1), max(n_heldout, 1)
    return {"tol_acc": max(MIN_TOL_ACC, k * 100.0 * math.sqrt(p * (1 - p) * (1 / nf + 1 / nh))),
            "tol_auc": max(MIN_TOL_AUC, k * math.sqrt((nf + nh + 1) / (12.0 * nf * nh))),
            "tol_util": max(MIN_TOL_UTIL, 2.0 * 100.0 * math.sqrt(p * (1 - p) / nh))}


def _tol_util(kept: float | None, n: int) -> float:
    """``tol_util`` for an accuracy ``kept`` (%) measured on ``n`` samples."""
    if kept is None or kept != kept or n < 1:
        return MIN_TOL_UTIL
    return tolerances(1, n, kept, 2.0)["tol_util"]


def _acc(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return 100.0 * (probs.argmax(1) == labels).double().mean().item() if len(labels) else float("nan")


def forget_kind(forget_labels: torch.Tensor, retain_labels: torch.Tensor) -> tuple[str, list[int]]:
    """``("class", forgotten classes)`` when no forget label occurs in the retain set, else ``("sample", [])``."""
    f = set(torch.unique(forget_labels).tolist())
    if f and not f & set(torch.unique(retain_labels).tolist()):
        return "class", sorted(int(c) for c in f)
    return "sample", []


def assess(forget: tuple[torch.Tensor, torch.Tensor], heldout: tuple[torch.Tensor, torch.Tensor] | None,
           kind: str, classes: Sequence[int], kept_before: float | None, k: float,
           retain: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, Any]:
    """Where the model stands against the retrain-free target, from softmax outputs ``(probs, labels)``.

    Args:
        forget, heldout, retain: softmax outputs and labels of the forget set, the held-out set (or None) and
            (only used without held-out data) the retain set.
        kind, classes: ``"sample"`` or ``"class"`` forgetting and the forgotten classes.
        kept_before: the original model's accuracy on what must be kept (the same samples), or None.
        k: standard errors of tolerance (1 while unlearning, 2 for the verdict).

    Returns:
        ``{"status": "target met" | "overshot" | "not met" | "unknown", "utility_drop": bool, ...numbers}``.
    """
    pf, yf = forget
    out: dict[str, Any] = {"kind": kind, "FA": _acc(pf, yf), "n_forget": len(yf)}
    if kind == "class":
        cls = torch.tensor(list(classes), dtype=torch.long)
        if heldout is not None:
            ph, yh = heldout
            in_cls = torch.isin(yh, cls)
            out["HA_forgotten"] = _acc(ph[in_cls], yh[in_cls]) if in_cls.any() else None
            out["kept"] = _acc(ph[~in_cls], yh[~in_cls]) if (~in_cls).any() else None
            out["n_heldout"] = int(in_cls.sum())
        elif retain is not None:
            out["kept"] = _acc(*retain)
        forgotten = [v for v in (out["FA"], out.get("HA_forgotten")) if v is not None and v == v]
        out["status"] = "target met" if all(v <= CLASS_TARGET for v in forgotten) else "not met"
        n_kept = int((~in_cls).sum()) if heldout is not None else (len(retain[1]) if retain is not None else 0)
        tol_util = _tol_util(out.get("kept"), n_kept)
    elif heldout is not None and len(heldout[1]):
        ph, yh = heldout
        ha = _acc(ph, yh)
        tol = tolerances(len(yf), len(yh), ha, k)
        auc = attack_auc(per_sample_loss(pf, yf), per_sample_loss(ph, yh))
        out.update(HA=ha, kept=ha, AUC=auc, n_heldout=len(yh), **tol)
        if out["FA"] < ha - tol["tol_acc"] or auc < 0.5 - tol["tol_auc"]:
            out["status"] = "overshot"
        elif out["FA"] <= ha + tol["tol_acc"] and auc <= 0.5 + tol["tol_auc"]:
            out["status"] = "target met"
        else:
            out["status"] = "not met"
        tol_util = tol["tol_util"]
    else:
        out["status"] = "unknown"
        out["kept"] = _acc(*retain) if retain is not None else None
        tol_util = _tol_util(out["kept"], len(retain[1]) if retain is not None else 0)
    out["tol_util"] = tol_util
    kept = out.get("kept")
    out["kept_before"] = kept_before
    out["utility_drop"] = bool(kept is not None and kept_before is not None and kept < kept_before - tol_util)
    return out


def verdict_text(a: dict[str, Any], heldout_name: str = "held-out") -> tuple[str, str]:
    """``(status, sentence)`` for an :func:`assess` result on the full sets after unlearning.

    Status is ``"forgotten"``, ``"NOT forgotten"``, ``"utility lost"`` or ``"unknown"``; the sentence
    starts with it and gives each number with its meaning.
    """
    util = ""
    if a.get("kept") is not None and a.get("kept_before") is not None:
        what = "held-out accuracy of the other classes" if a["kind"] == "class" else f"{heldout_name} accuracy"
        if a.get("HA") is None and a.get("HA_forgotten") is None:
            what = "retain accuracy"
        util = f"{what} {a['kept']:.1f} vs {a['kept_before']:.1f} before ({a['kept'] - a['kept_before']:+.1f})"
    if a["kind"] == "class":
        ha = a.get("HA_forgotten")
        nums = (f"forgotten class(es) accuracy: forget set {a['FA']:.1f}%"
                + (f", {heldout_name} images of the class {ha:.1f}%" if ha is not None else "")
                + f"; a model that never saw the class scores ~0 (target <= {CLASS_TARGET:g}%)")
    elif a["status"] == "unknown":
        return "unknown", (f"unknown: no held-out data, so nothing says how unseen data scores (forget accuracy "
                           f"{a['FA']:.1f}%" + (f"; {util}" if util else "") + "); pass test= / --heldout")
    else:
        nums = (f"forget accuracy {a['FA']:.1f}% vs {heldout_name} {a['HA']:.1f}% (allowed +{a['tol_acc']:.1f}); "
                f"membership-attack AUC forget vs {heldout_name} {a['AUC']:.2f} (0.5 = indistinguishable, "
                f"allowed +{a['tol_auc']:.2f})")
    if a["status"] in ("target met", "overshot") and a["utility_drop"]:
        how = ("forgotten" if a["status"] == "target met"
               else "over-forgotten (it looks LESS like training data than unseen data does)")
        return "utility lost", (f"utility lost: {util} (allowed -{a['tol_util']:.1f}); the forget set is "
                                f"{how} ({nums})")
    if a["status"] == "target met":
        return "forgotten", f"forgotten: the forget set now scores like unseen data ({nums})" + (
            f"; utility kept ({util})" if util else "")
    if a["status"] == "overshot":
        return "forgotten", (f"forgotten, overshot: the forget set now looks LESS like training data than unseen "
                             f"data does, which an auditor can notice ({nums})" + (f"; {util}" if util else ""))
    return "NOT forgotten", f"NOT forgotten: the forget set still scores like training data ({nums})" + (
        f"; {util}" if util else "")


Pair = tuple[torch.Tensor, torch.Tensor]


def final_verdict(original: tuple[Pair, Pair, Pair | None], unlearned: tuple[Pair, Pair, Pair | None],
                  heldout_name: str = "held-out") -> tuple[str, dict[str, Any]]:
    """The audit's verdict from ``(forget, retain, held-out or None)`` softmax outputs and labels of the
    original and the unlearned model (full sets, k = 2 standard errors): ``(sentence, details)``.
    ``heldout_name`` says in the sentence (and ``details["heldout"]``) which held-out data were used."""
    kind, classes = forget_kind(original[0][1], original[1][1])
    before = assess(original[0], original[2], kind, classes, None, 2.0, retain=original[1])
    final = assess(unlearned[0], unlearned[2], kind, classes, before.get("kept"), 2.0, retain=unlearned[1])
    status, text = verdict_text(final, heldout_name)
    heldout = heldout_name if original[2] is not None else None
    return text, {**final, "target": final["status"], "status": status, "classes": list(classes), "before": before,
                  "heldout": heldout}


# --------------------------------------------------------------------------------------------- subsets

def subsample(batches: Iterable[tuple[torch.Tensor, torch.Tensor]], cap: int, seed: int,
              group: Callable[[torch.Tensor], torch.Tensor] | None = None, groups: int = 1
              ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A uniform random sample of at most ``cap`` samples per group (``group(labels)`` -> group ids), in one
    pass over ``batches`` (random keys, keep the top ``cap`` per group)."""
    g = torch.Generator().manual_seed(seed)
    pool: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None] = [None] * groups
    for x, y in batches:
        ids = group(y).cpu() if group is not None else torch.zeros(len(y), dtype=torch.long)
        keys = torch.rand(len(y), generator=g)
        for gi in range(groups):
            sel = (ids == gi).nonzero().reshape(-1)
            if not len(sel):
                continue
            sel_d = sel.to(y.device)
            cand = (x[sel_d], y[sel_d], keys[sel])
            if pool[gi] is not None:
                cand = tuple(torch.cat([a, b.to(a.device)]) for a, b in zip(pool[gi], cand))  # type: ignore[assignment]
            if len(cand[2]) > cap:
                top = cand[2].topk(cap).indices
                cand = (cand[0][top.to(cand[0].device)], cand[1][top.to(cand[1].device)], cand[2][top])
            pool[gi] = cand  # type: ignore[assignment]
    return [(p[0], p[1]) if p is not None else (torch.empty(0), torch.empty(0, dtype=torch.long)) for p in pool]


@torch.no_grad()
def probs_of(net: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Softmax outputs (float32, CPU) in eval mode; the mode is restored."""
    was = net.training
    net.eval()
    try:
        out = [torch.softmax(net(x[i:i + batch_size]).float(), 1).cpu() for i in range(0, len(x), batch_size)]
    finally:
        net.train(was)
    return torch.cat(out) if out else torch.empty(0, 0)


# --------------------------------------------------------------------------------------------- monitor

@dataclass
class Monitor:
    """Measures the target on fixed subsamples during unlearning; usable as the engine's ``stop`` hook.

    ``every``: minimum steps between checks (a check happens only after a retain step, when the retain
    phase has repaired what the forget steps broke). ``checks`` records every check. A check that finds a
    utility drop restores the last state that passed the utility test (rule v2) and, up to
    :data:`MAX_BACKOFFS` times, goes on from there with the forget lr divided by sqrt(10) (rule v3); after
    that it ends the run.
    """

    net: nn.Module
    forget: tuple[torch.Tensor, torch.Tensor]
    heldout: tuple[torch.Tensor, torch.Tensor] | None
    kind: str
    classes: list[int]
    retain: tuple[torch.Tensor, torch.Tensor] | None = None
    every: int = 1
    checks: list[dict[str, Any]] = field(default_factory=list)
    kept_before: float | None = None
    restore: bool = True  # rule v2: a utility drop restores the last state that passed the utility test
    max_scale: float = 1.0  # escalation: the forget lr may grow by PROBE_RATIO per check up to this factor
    backoffs: int = 0  # rule v3: utility drops answered by a restore + a smaller forget lr so far
    _last: int = -1
    _prev: dict[str, Any] | None = None
    _good: tuple[int, dict[str, torch.Tensor]] | None = None

    def measure(self, k: float = 1.0) -> dict[str, Any]:
        f = (probs_of(self.net, self.forget[0]), self.forget[1].cpu())
        h = None if self.heldout is None else (probs_of(self.net, self.heldout[0]), self.heldout[1].cpu())
        r = None
        if h is None and self.retain is not None:
            r = (probs_of(self.net, self.retain[0]), self.retain[1].cpu())
        a = assess(f, h, self.kind, self.classes, self.kept_before, k, retain=r)
        if self.kept_before is None:
            self.kept_before = a.get("kept")
            a["kept_before"] = self.kept_before
        return a

    def __call__(self, event: Any) -> str | None:
        if event.phase == "forget" or (event.phase != "start" and event.step - self._last < self.every):
            return None
        self._last = event.step
        a = self.measure()
        self.checks.append({"step": event.step, **{k: a.get(k) for k in ("FA", "HA", "HA_forgotten", "AUC", "kept",
                                                                         "status", "utility_drop")}})
        if a["utility_drop"]:
            if self.restore and self._good is not None:
                self.net.load_state_dict(self._good[1])
                if self.backoffs < MAX_BACKOFFS:  # rule v3: back off and go on from the last good state
                    self.backoffs += 1
                    scale = event.lr_scale["forget"] / PROBE_RATIO
                    event.lr_scale["forget"] = scale
                    self.max_scale = scale  # never escalate back to a forget lr that dropped utility
                    self.checks[-1].update(forget_lr_scale=scale, restored=self._good[0])
                    return None
                return f"utility drop: restored step {self._good[0]}"
            return "utility drop"
        if self.restore:
            self._good = (event.step, {k: v.detach().clone() for k, v in self.net.state_dict().items()})
        if a["status"] in ("target met", "overshot"):
            return "target already met before unlearning" if event.phase == "start" else a["status"]
        prev, self._prev = self._prev, a
        if a["status"] == "not met" and prev is not None and not _progressed(prev, a):
            scale = event.lr_scale["forget"] * PROBE_RATIO
            if scale <= self.max_scale * (1 + 1e-9):
                event.lr_scale["forget"] = scale  # escalation: no progress since the last check
                self.checks[-1]["forget_lr_scale"] = scale
        return None


def _progressed(prev: dict[str, Any], now: dict[str, Any]) -> bool:
    """Did the forget set move towards the target by at least half a tolerance since the previous check?"""
    if now["kind"] == "class":
        return now["FA"] < prev["FA"] - MIN_TOL_ACC / 2
    auc_moved = now.get("AUC") is not None and now["AUC"] < prev["AUC"] - now.get("tol_auc", MIN_TOL_AUC) / 2
    return now["FA"] < prev["FA"] - now.get("tol_acc", MIN_TOL_ACC) / 2 or auc_moved


# ------------------------------------------------------------------------------------------- one run

def calibrated_schedule(schedule: Any, forget_batches: int, retain_batches: int) -> Any:
    """The method's schedule with its forget:retain balance (docs/defaults.md, rule v2): at most ``MAX_EPOCHS``
    epochs, or ``RETAIN_PASSES`` passes over the retain set of iterations (SFRon's 1500 overfit small sets)."""
    if schedule.mode == "iteration":
        cap = max(schedule.forget_every, RETAIN_PASSES * retain_batches)
        return replace(schedule, iterations=min(schedule.iterations, cap))
    return replace(schedule, epochs=min(schedule.epochs, MAX_EPOCHS))


def make_monitor(net: nn.Module, sets: Any, kind: str, classes: list[int], seed: int) -> Monitor:
    """Fixed random subsamples (at most MONITOR_SAMPLES per group) of ``sets`` (``vision.inputs.Sets``) for the
    checks during unlearning."""
    (forget,) = subsample(sets.forget.evaluation(), MONITOR_SAMPLES, seed)
    heldout = retain = None
    if sets.test is not None:
        if kind == "class":
            cls = torch.tensor(classes, dtype=torch.long)
            parts = subsample(sets.test.evaluation(), MONITOR_SAMPLES, seed + 1,
                              group=lambda y: (~torch.isin(y.cpu(), cls)).long(), groups=2)
            parts = [p for p in parts if len(p[1])]
            heldout = (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))
        else:
            (heldout,) = subsample(sets.test.evaluation(), MONITOR_SAMPLES, seed + 1)
    else:
        (retain,) = subsample(sets.retain.evaluation(), MONITOR_SAMPLES, seed + 2)
    return Monitor(net, forget, heldout, kind, classes, retain)


def calibrate_run(net: nn.Module, sets: Any, make_method: Callable[[], Any], plan: Callable[[Any], tuple[int, int]],
                  make_optimizer: Callable[[nn.Module, float], Any], forget_optimizer: str, schedule: Any,
                  train_epochs: int | None, length_given: bool, kind: str, classes: list[int], seed: int
                  ) -> tuple[float, Any, Monitor, dict[str, Any]]:
    """Calibrate one run without a Retrain (docs/defaults.md, rules v1-v4): the monitor's subsamples, the
    forget-lr probe (skipped when the target is met already), the work budget and the check interval.

    Args:
        net: the model to unlearn (not changed: the probe works on copies).
        sets: the run's forget / retain / test batches (``vision.inputs.Sets``).
        make_method: a fresh instance of the method (one per probe candidate).
        plan: ``plan(schedule) -> (forget steps, retain steps)`` on these sets.
        make_optimizer: ``make_optimizer(module, forget_lr)`` builds the run's optimizer.
        forget_optimizer: the forget optimizer's name (picks the probe's ladder).
        schedule: the method's schedule, already capped as rule v3 says unless ``length_given``.
        train_epochs: how long the original was trained (rule v4's budget), or None (rule v3's).
        length_given: the user gave ``epochs=`` / ``iterations=`` (no budget cap).
        kind, classes, seed: forgetting kind and classes, seed of the subsamples and the probe.

    Returns:
        The forget lr, the schedule to run, the monitor (the engine's ``stop`` hook) and the audit's
        ``calibration`` fields.
    """
    monitor = make_monitor(net, sets, kind, classes, seed)
    candidates = ladder(forget_optimizer)
    if monitor.measure()["status"] in ("target met", "overshot"):  # nothing to do: the run stops at step 0
        forget_lr, probe_rows = candidates[0], []
    else:
        forget_lr, probe_rows = probe_forget_lr(net, make_method, make_optimizer, next(iter(sets.forget)),
                                                next(iter(sets.retain)), monitor, candidates, seed)
    if train_epochs is not None and not length_given:  # rule v4: a work budget
        schedule, budget = work_budget(schedule, plan, len(sets.forget), len(sets.retain), train_epochs,
                                       len(probe_rows))
        budget["source"] = "train_epochs="
    elif train_epochs is None:
        budget = {"train_epochs": None, "note": NO_BUDGET}
    else:
        budget = {"train_epochs": train_epochs, "source": "train_epochs=", "note": "epochs= / iterations= given"}
    monitor.every = max(2, sum(plan(schedule)) // 10)
    monitor.max_scale = candidates[-1] / forget_lr
    fields = {"budget": budget, "mode": "auto", "reason": "no forget_lr given", "forget_lr": forget_lr,
              "probe": probe_rows, "heldout": "test" if sets.test is not None else None, "check_every": monitor.every}
    return forget_lr, schedule, monitor, fields


# ----------------------------------------------------------------------------------------------- budget

def work_budget(schedule: Any, plan: Callable[[Any], tuple[int, int]], forget_batches: int, retain_batches: int,
                train_epochs: int, probe_candidates: int) -> tuple[Any, dict[str, Any]]:
    """Rule v4: ``schedule`` capped so that the run's work is at most ``WORK_FRACTION`` of a Retrain.

    A Retrain is ``train_epochs`` passes over the retain set: ``W_R = train_epochs x retain_batches`` units
    (one unit = one training step on one retain batch). The fixed part (``PROBE_WORK`` per probe candidate
    tried, ``CHECK_WORK`` for the checks, ``forget_batches + retain_batches`` for the method's preparation) is
    charged first; the schedule keeps the longest length (epochs, or iterations in iteration mode) up to its
    own whose ``STEP_WORK x (forget + retain steps)`` fits in what is left, never below 1 epoch / one forget
    step (``forget_every`` iterations). ``plan(schedule) -> (forget steps, retain steps)``.

    Returns:
        The capped schedule and the budget record for the audit (``calibration["budget"]``).
    """
    retrain_work = float(train_epochs * retain_batches)
    fixed = PROBE_WORK * probe_candidates + CHECK_WORK + forget_batches + retain_batches
    left = WORK_FRACTION * retrain_work - fixed
    key = "iterations" if schedule.mode == "iteration" else "epochs"
    own = getattr(schedule, key)
    floor = min(own, schedule.forget_every if key == "iterations" else 1)

    def fits(n: int) -> bool:
        return STEP_WORK * sum(plan(replace(schedule, **{key: n}))) <= left

    lo, hi = floor, own  # the largest n in [floor, own] that fits (work grows with n), else the floor
    if fits(hi):
        lo = hi
    else:
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    capped = replace(schedule, **{key: lo})
    work = fixed + STEP_WORK * sum(plan(capped))
    return capped, {"train_epochs": train_epochs, "fraction": WORK_FRACTION, "retrain_work": retrain_work,
                    "fixed_work": fixed, "probe_candidates": probe_candidates, key: lo, f"{key}_v3": own,
                    "planned_work": work, "planned_fraction": work / retrain_work if retrain_work else None,
                    "floor": lo == floor and not fits(lo)}


# ------------------------------------------------------------------------------------------------ probe

def ladder(forget_optimizer: str) -> list[float]:
    """Candidate forget learning rates (ratio sqrt(10)) for an optimizer family."""
    lo, hi = PROBE_LADDER["adam" if forget_optimizer.startswith("adam") else "sgd"]
    n = round(math.log(hi / lo) / math.log(PROBE_RATIO))
    return [lo * PROBE_RATIO ** i for i in range(n + 1)]


def probe_forget_lr(net: nn.Module, make_method: Callable[[], Any], make_optimizer: Callable[[nn.Module, float], Any],
                    forget_batch: tuple[torch.Tensor, torch.Tensor], retain_batch: tuple[torch.Tensor, torch.Tensor],
                    monitor: Monitor, candidates: Sequence[float], seed: int) -> tuple[float, list[dict[str, Any]]]:
    """The smallest candidate forget lr that meets the target on the slice without a utility drop.

    Each candidate runs :data:`PROBE_PAIRS` (forget step, retain step) pairs of the method on a copy of
    ``net`` with the slice (one forget batch, one retain batch); the slice's forget samples are then assessed
    against the monitor's held-out subsample. A utility drop stops the ascent (the previous candidate is
    taken); without a hit the largest candidate tried is taken. Returns the lr and one row per candidate.
    """
    from ..engine import Schedule, run_unlearning

    rows: list[dict[str, Any]] = []
    chosen = None
    for lr in candidates:
        trial = copy.deepcopy(net)
        torch.manual_seed(seed)
        sched = Schedule(mode="iteration", iterations=PROBE_PAIRS)
        run_unlearning(trial, make_method(), make_optimizer(trial, lr), [forget_batch], [retain_batch], sched,
                       progress=False)
        probe = Monitor(trial, forget_batch, monitor.heldout, monitor.kind, monitor.classes, monitor.retain,
                        kept_before=monitor.kept_before)
        a = probe.measure()
        rows.append({"forget_lr": lr, **{k: a.get(k) for k in ("FA", "HA", "HA_forgotten", "AUC", "kept", "status",
                                                               "utility_drop")}})
        if a["utility_drop"]:
            chosen = chosen if chosen is not None else lr
            break
        chosen = lr
        if a["status"] in ("target met", "overshot"):
            break
    return float(chosen if chosen is not None else candidates[0]), rows
