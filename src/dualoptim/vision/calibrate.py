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
a slice of the data (rule v3); :func:`verdict_text` words the result. Nothing here reads a Retrain model.

Rule v5 (``train_epochs`` given, docs/defaults.md) has no separate probe: the run starts at :data:`START_LR`
and its own checks move the forget lr one rung at a time; epoch-mode methods run interleaved
(:func:`interleaved`); the Gap's entropy-LR membership attack joins the sample-wise target
(:func:`member_rates`); :func:`work_budget` caps the run at 20 % of a Retrain's work. Rule v6 (the same, plus
:data:`MEMBER_GUARD`) treats a fall of the held-out set's member rate under that attack below the original's as
a utility drop (restore, smaller forget lr): a Retrain keeps that rate where the original has it. Rules v7 (a
restore also restores the optimizer's state) and v8 (repair before rollback) were measured against v6, lost, and
were removed (docs/defaults.md).
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
# rules v4/v5: a work budget of WORK_FRACTION x a Retrain of the user's train_epochs, in units of one training step
# on one retain batch (docs/defaults.md); rule v5's costs: a least-squares fit to v4's measured runs
WORK_FRACTION = 0.2
STEP_WORK = 1.2  # per forget or retain step
CHECK_WORK = 2.4  # per check: the fit's 1.6 + the v5 check's retain subsample and attack fit (an estimate)
MAX_CHECKS = 11  # charged in all: <= 10 during unlearning + the one before the first step
PREP_WORK = 1.1  # per forget + retain batch, for a method with a preparation (SalUn, SFRon, SCRUB)
START_LR = 1e-3  # rule v5's first forget lr: the median final forget lr of v3's runs (Adam and SGD, seeds 2-5)
MIN_TOL_MIA = 2.0  # points: the member-rate tolerance's floor
NO_BUDGET = "time budget unknown: pass train_epochs"
# rule v6: the held-out member rate may not fall more than MEMBER_K standard errors below the original's; False
# runs rule v5 exactly (a switch for paired measurements, benchmarks/defaults_check.py --rule v5)
MEMBER_GUARD = True
MEMBER_K = 3.0


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


def member_rates(retain: torch.Tensor, heldout: torch.Tensor, forget: torch.Tensor) -> tuple[float, float]:
    """The Gap's membership attack (``metrics.mia_entropy_lr``: a logistic regression on output entropy with
    balanced classes, fitted on retain = member vs held-out = non-member softmax outputs): the % of forget
    samples and the % of held-out samples (in-sample) it calls member."""
    from .metrics import entropy_member_rates

    m_f, m_h = entropy_member_rates(retain, heldout, forget, heldout)
    return m_f, m_h


def member_tolerance(forget_rate: float, heldout_rate: float, n_forget: int, n_heldout: int, k: float) -> float:
    """``tol_mia`` (points): how far the forget set's member rate (%) may sit from the held-out set's, ``k``
    standard errors of the difference of two rates at their pooled value, at least ``MIN_TOL_MIA``."""
    p = (forget_rate + heldout_rate) / 200.0
    return max(MIN_TOL_MIA, k * 100.0 * math.sqrt(p * (1 - p) * (1 / max(n_forget, 1) + 1 / max(n_heldout, 1))))


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
           retain: tuple[torch.Tensor, torch.Tensor] | None = None, mia: bool = False) -> dict[str, Any]:
    """Where the model stands against the retrain-free target, from softmax outputs ``(probs, labels)``.

    Args:
        forget, heldout, retain: softmax outputs and labels of the forget set, the held-out set (or None) and
            the retain set (used without held-out data, and by the attack of ``mia``).
        kind, classes: ``"sample"`` or ``"class"`` forgetting and the forgotten classes.
        kept_before: the original model's accuracy on what must be kept (the same samples), or None.
        k: standard errors of tolerance (1 while unlearning, 2 for the verdict).
        mia: rule v5: the sample-wise target also needs the forget set's member rate under the Gap's attack
            within ``tol_mia`` of the held-out set's (:func:`member_rates`; needs ``retain``).

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
        gap_mia = 0.0
        if mia and retain is not None and len(retain[1]):
            m_f, m_h = member_rates(retain[0], ph, pf)
            tol_mia = member_tolerance(m_f, m_h, len(yf), len(yh), k)
            out.update(MIA_forget=m_f, MIA_heldout=m_h, tol_mia=tol_mia)
            gap_mia = (m_f - m_h) / tol_mia  # within +-1: indistinguishable by the attack
        if out["FA"] < ha - tol["tol_acc"] or auc < 0.5 - tol["tol_auc"] or gap_mia < -1:
            out["status"] = "overshot"
        elif out["FA"] <= ha + tol["tol_acc"] and auc <= 0.5 + tol["tol_auc"] and gap_mia <= 1:
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
        if a.get("MIA_forget") is not None:
            nums += (f"; entropy-attack member rate forget {a['MIA_forget']:.1f}% vs {heldout_name} "
                     f"{a['MIA_heldout']:.1f}% (allowed ±{a['tol_mia']:.1f})")
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
                  heldout_name: str = "held-out", mia: bool = False) -> tuple[str, dict[str, Any]]:
    """The audit's verdict from ``(forget, retain, held-out or None)`` softmax outputs and labels of the
    original and the unlearned model (full sets, k = 2 standard errors): ``(sentence, details)``.
    ``heldout_name`` says in the sentence (and ``details["heldout"]``) which held-out data were used; ``mia``:
    rule v5's target (the Gap's membership attack too)."""
    kind, classes = forget_kind(original[0][1], original[1][1])
    before = assess(original[0], original[2], kind, classes, None, 2.0, retain=original[1], mia=mia)
    final = assess(unlearned[0], unlearned[2], kind, classes, before.get("kept"), 2.0, retain=unlearned[1], mia=mia)
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
    that it ends the run. With ``member_guard`` (rule v6) a check whose held-out member rate under the attack
    fell more than ``tol_member`` below the first check's is handled the same way (the same count). A restore
    puts back the model alone: rules v7 (the optimizer's state too) and v8 (repair before rollback) were measured
    and removed (docs/defaults.md).
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
    mia: bool = False  # rule v5: the Gap's membership attack is part of the sample-wise target
    max_scale: float = 1.0  # escalation: the forget lr may grow by PROBE_RATIO per check up to this factor
    backoffs: int = 0  # rule v3: utility drops answered by a restore + a smaller forget lr so far
    member_guard: dict[str, Any] | None = None  # rule v6: {} to switch the guard on; filled at the first check
    _last: int = -1
    _prev: dict[str, Any] | None = None
    _good: tuple[int, dict[str, torch.Tensor]] | None = None

    def measure(self, k: float = 1.0) -> dict[str, Any]:
        f = (probs_of(self.net, self.forget[0]), self.forget[1].cpu())
        h = None if self.heldout is None else (probs_of(self.net, self.heldout[0]), self.heldout[1].cpu())
        r = None
        if self.retain is not None and (h is None or self.mia):
            r = (probs_of(self.net, self.retain[0]), self.retain[1].cpu())
        a = assess(f, h, self.kind, self.classes, self.kept_before, k, retain=r, mia=self.mia)
        if self.kept_before is None:
            self.kept_before = a.get("kept")
            a["kept_before"] = self.kept_before
        g = self.member_guard
        if g is not None and a.get("MIA_heldout") is not None:
            if "heldout_before" not in g:  # the original's rate: the guard's reference (rule v6)
                n_h = len(h[1]) if h is not None else 0
                g.update(heldout_before=a["MIA_heldout"], n_heldout=n_h,
                         **member_guard_tolerance(a["MIA_heldout"], n_h))
            a["member_drop"] = a["MIA_heldout"] < g["heldout_before"] - g["tol_member"]
        return a

    def __call__(self, event: Any) -> str | None:
        if event.phase == "forget" or (event.phase != "start" and event.step - self._last < self.every):
            return None
        self._last = event.step
        a = self.measure()
        self.checks.append({"step": event.step, **{k: a.get(k) for k in CHECK_FIELDS if k in a or k in CHECK_ALWAYS}})
        if a["utility_drop"] or a.get("member_drop"):  # rule v6: a member-rate drop is treated like a utility drop
            what = "utility drop" if a["utility_drop"] else "member-rate drop"
            if self.restore and self._good is not None:
                self.net.load_state_dict(self._good[1])
                if self.backoffs < MAX_BACKOFFS:  # rule v3: back off and go on from the last good state
                    self.backoffs += 1
                    scale = event.lr_scale["forget"] / PROBE_RATIO
                    event.lr_scale["forget"] = scale
                    self.max_scale = scale  # never escalate back to a forget lr that dropped utility
                    self.checks[-1].update(forget_lr_scale=scale, restored=self._good[0])
                    return None
                return f"{what}: restored step {self._good[0]}"
            return what
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


CHECK_FIELDS = ("FA", "HA", "HA_forgotten", "AUC", "MIA_forget", "MIA_heldout", "kept", "status", "utility_drop",
                "member_drop")
CHECK_ALWAYS = ("FA", "HA", "HA_forgotten", "AUC", "kept", "status", "utility_drop")  # the others: when measured


def member_guard_tolerance(heldout_rate: float, n_heldout: int) -> dict[str, float]:
    """Rule v6: how far (points) the held-out member rate may fall below the original's ``heldout_rate`` (%)
    measured on ``n_heldout`` samples: :data:`MEMBER_K` binomial standard errors, at least ``MIN_TOL_MIA``."""
    p = min(max(heldout_rate / 100.0, 0.0), 1.0)
    return {"tol_member": max(MIN_TOL_MIA, MEMBER_K * 100.0 * math.sqrt(p * (1 - p) / max(n_heldout, 1))),
            "k": MEMBER_K}


def _progressed(prev: dict[str, Any], now: dict[str, Any]) -> bool:
    """Did the forget set move towards the target by at least half a tolerance since the previous check?"""
    if now["kind"] == "class":
        return now["FA"] < prev["FA"] - MIN_TOL_ACC / 2
    auc_moved = now.get("AUC") is not None and now["AUC"] < prev["AUC"] - now.get("tol_auc", MIN_TOL_AUC) / 2
    mia_moved = (now.get("MIA_forget") is not None and prev.get("MIA_forget") is not None
                 and now["MIA_forget"] - now["MIA_heldout"] < prev["MIA_forget"] - prev["MIA_heldout"]
                 - now["tol_mia"] / 2)
    return now["FA"] < prev["FA"] - now.get("tol_acc", MIN_TOL_ACC) / 2 or auc_moved or mia_moved


# ------------------------------------------------------------------------------------------- one run

def calibrated_schedule(schedule: Any, forget_batches: int, retain_batches: int) -> Any:
    """The method's schedule with its forget:retain balance (docs/defaults.md, rule v2): at most ``MAX_EPOCHS``
    epochs, or ``RETAIN_PASSES`` passes over the retain set of iterations (SFRon's 1500 overfit small sets)."""
    if schedule.mode == "iteration":
        cap = max(schedule.forget_every, RETAIN_PASSES * retain_batches)
        return replace(schedule, iterations=min(schedule.iterations, cap))
    return replace(schedule, epochs=min(schedule.epochs, MAX_EPOCHS))


def interleaved(schedule: Any, forget_batches: int, retain_batches: int) -> Any:
    """Rule v5: an epoch-mode schedule in iteration mode with the same forget:retain balance, spread out: one
    forget step every ``retain_batches // forget_batches`` retain steps (``round(forget_batches /
    retain_batches)`` at a time when the forget set has more batches), so that a check between two forget steps
    sees their effect and an escalation acts on the next ones. ``epochs`` epochs become ``epochs x
    retain_batches`` iterations. Other schedules (iteration mode; SCRUB's ``msteps``) are returned unchanged."""
    if schedule.mode != "epoch" or schedule.forget_epochs is not None or schedule.retain_batches_per_epoch is not None:
        return schedule
    f, r = max(forget_batches, 1), max(retain_batches, 1)
    return replace(schedule, mode="iteration", iterations=schedule.epochs * r, forget_every=max(1, r // f),
                   forget_steps=max(1, round(f / r)), retain_steps=1)


def make_monitor(net: nn.Module, sets: Any, kind: str, classes: list[int], seed: int, mia: bool = False) -> Monitor:
    """Fixed random subsamples (at most MONITOR_SAMPLES per group) of ``sets`` (``vision.inputs.Sets``) for the
    checks during unlearning; ``mia`` (rule v5, sample-wise with held-out data) adds a retain subsample for the
    membership attack."""
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
    mia = mia and heldout is not None and kind == "sample"
    if heldout is None or mia:
        (retain,) = subsample(sets.retain.evaluation(), MONITOR_SAMPLES, seed + 2)
    return Monitor(net, forget, heldout, kind, classes, retain, mia=mia)


# rules whose sample-wise target includes the Gap's membership attack; v7 and v8 (removed) stay: their audits exist
ATTACK_RULES = ("v5", "v6", "v7", "v8")


def attack_target(calibration: dict[str, Any]) -> bool:
    """Does the run's rule (``calibration["rule"]``) judge forgetting with the membership attack too (v5-v8)?"""
    return calibration.get("rule") in ATTACK_RULES


def rule_name() -> str:
    """The rule a run with ``train_epochs`` follows under the module switch :data:`MEMBER_GUARD`: "v6" or "v5"."""
    return "v6" if MEMBER_GUARD else "v5"


RULES = ("v6", "v5")  # what the switch selects for runs with train_epochs (paired measurements)


def use_rule(name: str) -> None:
    """Set the module switch so that runs with ``train_epochs`` follow rule ``name`` (one of :data:`RULES`)."""
    global MEMBER_GUARD
    if name not in RULES:
        raise ValueError(f"unknown rule {name!r}; valid: {', '.join(RULES)}")
    MEMBER_GUARD = name != "v5"


def calibrate_run(net: nn.Module, sets: Any, make_method: Callable[[], Any], plan: Callable[[Any], tuple[int, int]],
                  make_optimizer: Callable[[nn.Module, float], Any], forget_optimizer: str, schedule: Any,
                  train_epochs: int | None, length_given: bool, kind: str, classes: list[int], seed: int
                  ) -> tuple[float, Any, Monitor, dict[str, Any]]:
    """Calibrate one run without a Retrain (docs/defaults.md): rule v5 when ``train_epochs`` is given and the
    length is not (no probe: the run starts at :data:`START_LR`, interleaved, within the work budget, the
    membership attack in the target; with :data:`MEMBER_GUARD`, rule v6: plus the held-out member-rate guard,
    recorded as ``rule`` "v6" with ``calibration["member_guard"]`` where the guard applies), else
    rule v3 (the forget-lr probe, skipped when the target is met already; the method's capped schedule).

    Args:
        net: the model to unlearn (not changed: the v3 probe works on copies).
        sets: the run's forget / retain / test batches (``vision.inputs.Sets``).
        make_method: a fresh instance of the method (one per probe candidate).
        plan: ``plan(schedule) -> (forget steps, retain steps)`` on these sets.
        make_optimizer: ``make_optimizer(module, forget_lr)`` builds the run's optimizer.
        forget_optimizer: the forget optimizer's name (picks the ladder).
        schedule: the method's schedule, already capped as rule v3 says unless ``length_given``.
        train_epochs: how long the original was trained (rule v5's budget), or None (rule v3's).
        length_given: the user gave ``epochs=`` / ``iterations=`` (no budget cap: rule v3).
        kind, classes, seed: forgetting kind and classes, seed of the subsamples and the probe.

    Returns:
        The forget lr, the schedule to run, the monitor (the engine's ``stop`` hook) and the audit's
        ``calibration`` fields (``rule``: "v6", "v5" or "v3").
    """
    candidates = ladder(forget_optimizer)
    heldout = "test" if sets.test is not None else None
    if train_epochs is not None and not length_given:  # rule v5
        monitor = make_monitor(net, sets, kind, classes, seed, mia=True)
        schedule = interleaved(schedule, len(sets.forget), len(sets.retain))
        from ..engine import Method

        prepares = type(make_method()).prepare is not Method.prepare  # SalUn, SFRon, SCRUB
        schedule, budget = work_budget(schedule, plan, len(sets.forget), len(sets.retain), train_epochs, prepares)
        budget["source"] = "train_epochs="
        cycle = schedule.forget_every * schedule.retain_steps + schedule.forget_steps if (
            schedule.mode == "iteration") else 2
        monitor.every = max(2, sum(plan(schedule)) // 10, cycle)
        monitor.max_scale = candidates[-1] / START_LR
        fields = {"rule": rule_name(), "budget": budget, "mode": "auto",
                  "reason": "no forget_lr given", "forget_lr": START_LR,
                  "start_lr": START_LR, "probe": [], "heldout": heldout, "check_every": monitor.every,
                  "target": "FA, loss AUC and entropy-attack member rate vs held-out" if monitor.mia else None}
        if MEMBER_GUARD and monitor.mia:  # rule v6; the record is the monitor's, filled at the first check
            monitor.member_guard = fields["member_guard"] = {}
        return START_LR, schedule, monitor, fields
    monitor = make_monitor(net, sets, kind, classes, seed)
    if monitor.measure()["status"] in ("target met", "overshot"):  # nothing to do: the run stops at step 0
        forget_lr, probe_rows = candidates[0], []
    else:
        forget_lr, probe_rows = probe_forget_lr(net, make_method, make_optimizer, next(iter(sets.forget)),
                                                next(iter(sets.retain)), monitor, candidates, seed)
    if train_epochs is None:
        budget = {"train_epochs": None, "note": NO_BUDGET}
    else:
        budget = {"train_epochs": train_epochs, "source": "train_epochs=", "note": "epochs= / iterations= given"}
    monitor.every = max(2, sum(plan(schedule)) // 10)
    monitor.max_scale = candidates[-1] / forget_lr
    fields = {"rule": "v3", "budget": budget, "mode": "auto", "reason": "no forget_lr given", "forget_lr": forget_lr,
              "probe": probe_rows, "heldout": heldout, "check_every": monitor.every}
    return forget_lr, schedule, monitor, fields


# ----------------------------------------------------------------------------------------------- budget

def work_budget(schedule: Any, plan: Callable[[Any], tuple[int, int]], forget_batches: int, retain_batches: int,
                train_epochs: int, prepares: bool) -> tuple[Any, dict[str, Any]]:
    """Rule v5: ``schedule`` capped so that the run's work is at most ``WORK_FRACTION`` of a Retrain.

    A Retrain is ``train_epochs`` passes over the retain set: ``W_R = train_epochs x retain_batches`` units
    (one unit = one training step on one retain batch). The fixed part (``CHECK_WORK`` per check for
    ``MAX_CHECKS`` checks, and ``PREP_WORK x (forget_batches + retain_batches)`` when the method ``prepares``)
    is charged first; the schedule keeps the longest length (iterations, or epochs in epoch mode) up to its own
    whose ``STEP_WORK x (forget + retain steps)`` fits in what is left, never below one forget cycle
    (``forget_every`` iterations) or 1 epoch. ``plan(schedule) -> (forget steps, retain steps)``.

    Returns:
        The capped schedule and the budget record for the audit (``calibration["budget"]``).
    """
    retrain_work = float(train_epochs * retain_batches)
    prep = PREP_WORK * (forget_batches + retain_batches) if prepares else 0.0
    fixed = CHECK_WORK * MAX_CHECKS + prep
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
                    "fixed_work": fixed, "preparation_work": prep, key: lo, f"{key}_v3": own,
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
