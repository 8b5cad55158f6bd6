"""Retrain-free calibration, the verdict and the input checks of ``dualoptim.unlearn`` (issue 15)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.utils.data import Dataset, TensorDataset

import dualoptim
import dualoptim.vision.api as api
from dualoptim.errors import ConfigError
from dualoptim.vision.calibrate import attack_auc, forget_kind, ladder, verdict_text

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: results depend on the thread count


@pytest.fixture(scope="module")
def memorized():
    """A digits MLP trained to 100 % training accuracy on 1500 images (the README's model), and its data."""
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x, dtype=torch.float32) / 16, torch.tensor(y)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Dropout(0.2), nn.Linear(128, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    for _ in range(100):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[:1500]), y[:1500]).backward()
        opt.step()
    model.eval()
    return model, (x[:100], y[:100]), (x[100:1500], y[100:1500]), (x[1500:], y[1500:])


def test_attack_auc_matches_sklearn_with_ties():
    g = torch.Generator().manual_seed(0)
    f = torch.randint(0, 5, (40,), generator=g).double()  # many ties
    h = torch.randint(0, 7, (60,), generator=g).double()
    # forget = positive, score = -loss
    want = roc_auc_score([1] * 40 + [0] * 60, torch.cat([-f, -h]).numpy())
    assert attack_auc(f, h) == pytest.approx(want)
    assert attack_auc(torch.zeros(5), torch.ones(5)) == 1.0 and attack_auc(torch.ones(5), torch.zeros(5)) == 0.0


def test_forget_kind_and_ladder():
    assert forget_kind(torch.tensor([3, 3]), torch.tensor([0, 1, 2])) == ("class", [3])
    assert forget_kind(torch.tensor([3, 1]), torch.tensor([0, 1, 2])) == ("sample", [])
    assert ladder("adam") == pytest.approx([1e-4, 10 ** -3.5, 1e-3, 10 ** -2.5, 1e-2])
    assert ladder("sgd")[0] == pytest.approx(1e-3) and ladder("sgd")[-1] == pytest.approx(1.0)


def test_zero_step_run_says_not_forgotten(memorized, monkeypatch):
    model, forget, retain, test = memorized
    real = api.run_unlearning
    monkeypatch.setattr(api, "run_unlearning", lambda *a, **k: real(*a, **{**k, "stop": lambda e: "zero steps"}))
    out = dualoptim.unlearn(copy.deepcopy(model), forget=forget, retain=retain, test=test, method="salun",
                            progress=False)
    a = out.audit
    assert a.timings["unlearn_steps"] == 0 and a.unlearned == a.original
    assert a.verdict.startswith("NOT forgotten") and a.verdict_details["status"] == "NOT forgotten"
    assert "forget accuracy 99.0% vs held-out" in a.verdict  # numbers with their meaning
    assert "Verdict: NOT forgotten" in a.to_html() and "#b3261e" in a.to_html()  # in words and colour
    assert json.loads(a.to_json())["verdict"] == a.verdict


def test_defaults_forget_a_memorized_model(memorized):
    model, forget, retain, test = memorized
    out = dualoptim.unlearn(copy.deepcopy(model), forget=forget, retain=retain, test=test, method="rl",
                            progress=False)
    a = out.audit
    assert a.original["FA"] >= 99 and a.unlearned["FA"] <= a.original["FA"] - 3  # fails if left unchanged
    assert a.calibration["mode"] == "auto" and a.calibration["probe"] and a.calibration["stop_reason"]
    assert a.hyperparameters["lr_source"].startswith("calibrated")
    assert not a.verdict.startswith("NOT forgotten")
    # without train_epochs the budget is rule v3's, and the audit says the time budget is unknown
    assert a.calibration["budget"] == {"train_epochs": None, "note": "time budget unknown: pass train_epochs"}
    assert a.hyperparameters["schedule"]["epochs"] == 10 and "time budget unknown" in a.summary()


def test_work_budget_caps_the_schedule_to_a_fifth_of_a_retrain():
    """Rule v5: the longest schedule whose work (fixed part first) fits in 0.2 x train_epochs retain passes."""
    from dualoptim.engine import _plan
    from dualoptim.vision.calibrate import CHECK_WORK, MAX_CHECKS, PREP_WORK, STEP_WORK, interleaved, work_budget
    from dualoptim.vision.methods import get_method

    for name in ("salun", "sfron", "rl"):
        m = get_method(name)
        s = m.default_schedule()
        s = api.calibrated_schedule(s, 2, 15) if s.mode == "iteration" else interleaved(s, 2, 15)
        assert s.mode == "iteration"  # v3's cap (SFRon: 5 retain passes); epoch mode interleaved
        plan = lambda sch, m=m: _plan(m, sch, 2, 15)  # noqa: E731 -- 2 forget and 15 retain batches
        prepares = name != "rl"
        for train_epochs in (40, 60, 120):
            capped, b = work_budget(s, plan, 2, 15, train_epochs, prepares)
            fixed = CHECK_WORK * MAX_CHECKS + (PREP_WORK * 17 if prepares else 0.0)
            left = 0.2 * train_epochs * 15 - fixed
            n = capped.iterations
            assert b["iterations"] == n and b["iterations_v3"] == s.iterations
            assert b["retrain_work"] == train_epochs * 15
            assert b["fixed_work"] == pytest.approx(fixed)
            assert STEP_WORK * sum(plan(capped)) <= left or n == s.forget_every
            longer = type(s)(**{**capped.__dict__, "iterations": n + 1})
            assert n == s.iterations or STEP_WORK * sum(plan(longer)) > left  # the longest that fits
            assert b["planned_work"] <= 0.2 * b["retrain_work"] + 1e-9 or b["floor"]
        # a long training leaves v3's length as it is; a 1-epoch one gets the floor: one forget cycle
        assert work_budget(s, plan, 2, 15, 2000, prepares)[0].iterations == s.iterations
        capped, b = work_budget(s, plan, 2, 15, 1, prepares)
        assert capped.iterations == s.forget_every and b["floor"] and plan(capped)[0] >= 1


def test_interleaved_schedule_keeps_the_balance_and_spreads_the_forget_steps():
    """Rule v5: epoch mode becomes iteration mode with a forget step every B_r // B_f retain steps."""
    from dualoptim.engine import Schedule, _plan
    from dualoptim.vision.calibrate import interleaved
    from dualoptim.vision.methods import get_method

    rl = get_method("rl")
    s = interleaved(Schedule(epochs=10), 2, 15)
    assert (s.mode, s.iterations, s.forget_every, s.forget_steps, s.retain_steps) == ("iteration", 150, 7, 1, 1)
    assert _plan(rl, s, 2, 15) == (22, 150)  # epoch mode: (20, 150)
    s = interleaved(Schedule(epochs=2), 8, 3)  # more forget than retain batches: several forget steps at once
    assert (s.forget_every, s.forget_steps) == (1, 3) and _plan(rl, s, 8, 3) == (18, 6)
    kept = [Schedule(epochs=10, forget_epochs=2), Schedule(mode="iteration", iterations=50, forget_every=5)]
    assert all(interleaved(k, 2, 15) is k for k in kept)  # SCRUB's msteps, SFRon: unchanged


def test_rule_v5_no_probe_checks_after_each_forget_cycle_and_escalation_acts(memorized, monkeypatch):
    """Rule v5 (train_epochs given): nothing is copied or thrown away (no probe: the run itself starts at the start
    lr), every check has a forget step behind it, and an escalation changes the very next forget step."""
    import dualoptim.vision.calibrate as cal

    model, forget, retain, test = memorized

    def no_probe(*a, **k):
        raise AssertionError("rule v5 has no separate probe on model copies")

    monkeypatch.setattr(cal, "probe_forget_lr", no_probe)
    out = dualoptim.unlearn(copy.deepcopy(model), forget=forget, retain=retain, test=test, method="rl",
                            train_epochs=40, progress=False)
    monkeypatch.undo()
    c, hist = out.audit.calibration, out.result.history
    assert c["rule"] == "v6" and c["probe"] == [] and c["start_lr"] == cal.START_LR  # v6 = v5 + the member guard
    assert out.audit.hyperparameters["schedule"]["mode"] == "iteration"
    forget_at = [h["step"] for h in hist if h["phase"] == "forget"]
    assert hist[0]["phase"] == "forget" and hist[0]["lr"] == pytest.approx(cal.START_LR)  # from the first step
    steps = [k["step"] for k in c["checks"]]
    assert steps[0] == 0 and len(steps) >= 4  # the one before the first step + >= 3 (>= 3 forget steps here)
    for a, b in zip(steps, steps[1:]):
        assert any(a <= f < b for f in forget_at)  # each check sees at least one forget step
    escalated = [k for k in c["checks"] if k.get("forget_lr_scale") and k.get("restored") is None]
    assert escalated, "the memorized model's forget set does not move at 1e-3 at first: the checks escalate"
    k = escalated[0]
    nxt = next(h for h in hist if h["phase"] == "forget" and h["step"] >= k["step"])
    assert nxt["lr"] == pytest.approx(cal.START_LR * k["forget_lr_scale"])  # acts on the next forget step
    assert "MIA_forget" in c["checks"][0] and "entropy-attack member rate" in out.audit.verdict
    b = c["budget"]
    assert b["planned_work"] <= 0.2 * b["retrain_work"] + 1e-9 and out.result.steps <= sum(
        api._plan_steps(api.get_method("rl"), api.Schedule(**out.audit.hyperparameters["schedule"]), 1, 11))
    assert "20% of a Retrain of 40 epochs" in out.audit.summary() and "rule v6" in out.audit.summary()
    g = c["member_guard"]  # rule v6: the guard's reference is the original's held-out member rate (first check)
    assert g["heldout_before"] == c["checks"][0]["MIA_heldout"] and g["n_heldout"] == cal.MONITOR_SAMPLES
    assert g["tol_member"] == pytest.approx(cal.member_guard_tolerance(g["heldout_before"], 256)["tol_member"])
    assert all("member_drop" in k for k in c["checks"])


def test_member_rate_target_not_met_met_and_overshot():
    """Rule v5's third sample-wise criterion: the Gap's entropy attack calls forget samples members no more (and
    no less) often than held-out samples, within tol_mia."""
    from dualoptim.vision.calibrate import assess

    g = torch.Generator().manual_seed(0)

    def outputs(conf: float, n: int) -> tuple[torch.Tensor, torch.Tensor]:  # right, with confidence ~conf
        c = (conf + 0.02 * torch.rand(n, generator=g)).clamp(max=0.999)
        p = ((1 - c) / 9).reshape(-1, 1).repeat(1, 10)
        p[:, 0] = c
        return p, torch.zeros(n, dtype=torch.long)

    retain, heldout = outputs(0.97, 300), outputs(0.6, 300)
    for conf, want in ((0.97, "not met"), (0.6, "target met"), (0.3, "overshot")):
        a = assess(outputs(conf, 100), heldout, "sample", [], None, 1.0, retain=retain, mia=True)
        assert a["status"] == want, (conf, a)
        assert 0 <= a["MIA_forget"] <= 100 and a["tol_mia"] >= 2.0
    # without mia (rule v3) the attack is not part of the target: a loss-threshold look-alike is "target met"
    assert "MIA_forget" not in assess(outputs(0.6, 100), heldout, "sample", [], None, 1.0, retain=retain)


def test_train_epochs_is_checked_and_an_explicit_length_keeps_rule_v3(memorized):
    model, forget, retain, test = memorized
    out = dualoptim.unlearn(copy.deepcopy(model), forget=forget, retain=retain, test=test, method="rl",
                            train_epochs=3, progress=False)  # 3 x 11 retain batches: the floor, one forget cycle
    a = out.audit
    b = a.calibration["budget"]
    assert b["train_epochs"] == 3 and b["source"] == "train_epochs=" and b["iterations"] == 11 and b["floor"]
    assert a.hyperparameters["schedule"]["iterations"] == 11 and out.result.steps <= 1 + 11
    assert "20% of a Retrain of 3 epochs" in a.summary() and "time budget" in a.to_html()
    out = dualoptim.unlearn(copy.deepcopy(model), forget=forget, retain=retain, test=test, method="rl",
                            train_epochs=3, epochs=2, progress=False)
    assert out.audit.calibration["rule"] == "v3" and out.audit.hyperparameters["schedule"]["epochs"] == 2
    out = dualoptim.unlearn(copy.deepcopy(model), forget=forget, retain=retain, test=test, method="rl",
                            train_epochs=3, epochs=2, forget_lr=1e-4, retain_lr=0.01, progress=False)
    assert out.audit.hyperparameters["schedule"]["epochs"] == 2  # explicit lrs: no calibration, no budget
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ConfigError, match="train_epochs must be an integer >= 1"):
            dualoptim.unlearn(copy.deepcopy(model), forget=forget, retain=retain, test=test, method="rl",
                              train_epochs=bad, progress=False)


def test_class_wise_target_and_explicit_lrs_switch_calibration_off(memorized):
    model, forget, retain, test = memorized
    (fx, fy), (rx, ry) = forget, retain
    xs, ys = torch.cat([fx, rx]), torch.cat([fy, ry])
    f, r = ys == 7, ys != 7
    out = dualoptim.unlearn(copy.deepcopy(model), forget=(xs[f], ys[f]), retain=(xs[r], ys[r]), test=test,
                            method="rl", progress=False)
    a = out.audit
    assert a.calibration["kind"] == "class" and a.calibration["classes"] == [7]
    assert a.unlearned["FA"] <= 2.0 and a.verdict_details["HA_forgotten"] <= 2.0
    assert a.verdict.startswith(("forgotten", "utility lost")) and "never saw the class" in a.verdict
    out = dualoptim.unlearn(copy.deepcopy(model), forget=(xs[f], ys[f]), retain=(xs[r], ys[r]), test=test,
                            method="rl", forget_lr=1e-4, retain_lr=0.01, epochs=1, progress=False)
    assert out.audit.calibration["mode"] == "off" and out.audit.calibration["reason"] == "forget_lr given"
    assert out.audit.hyperparameters["lr_source"] == "given" and out.result.stop_reason == ""


def test_no_heldout_data_gives_an_unknown_verdict(memorized):
    model, forget, retain, _ = memorized
    out = dualoptim.unlearn(copy.deepcopy(model), forget=forget, retain=retain, method="rl", epochs=2,
                            progress=False)
    assert out.audit.verdict.startswith("unknown: no held-out data")
    assert out.audit.calibration["heldout"] is None


def test_overlap_by_content_frozen_model_and_degenerate_warnings(memorized):
    model, forget, retain, test = memorized
    fx, fy = forget
    rx, ry = retain
    dup = (torch.cat([rx, fx[3:5].clone()]), torch.cat([ry, fy[3:5]]))  # copies, not the same tensor
    with pytest.raises(ConfigError, match=r"overlap by content: 2 forget sample\(s\) \(e.g. positions \[3, 4\]\)"):
        dualoptim.unlearn(copy.deepcopy(model), forget=forget, retain=dup, method="rl", progress=False)
    with pytest.raises(ConfigError, match="overlap by content"):
        dualoptim.unlearn(copy.deepcopy(model), forget=TensorDataset(fx, fy), retain=TensorDataset(*dup),
                          method="rl", progress=False)
    frozen = copy.deepcopy(model).requires_grad_(False)
    with pytest.raises(ConfigError, match="every parameter of the model is frozen"):
        dualoptim.unlearn(frozen, forget=forget, retain=retain, method="rl", progress=False)
    dead = copy.deepcopy(model)
    with torch.no_grad():
        dead[-1].weight.zero_()
        dead[-1].bias.copy_(torch.arange(10.0))  # always predicts class 9: chance accuracy
    out = dualoptim.unlearn(dead, forget=forget, retain=retain, test=test, method="rl", forget_lr=1e-6,
                            retain_lr=1e-6, epochs=1, progress=False)
    assert any("near chance accuracy" in w for w in out.audit.warnings)
    assert "near chance accuracy" in out.audit.to_html() and "near chance" in json.loads(out.audit.to_json())[
        "warnings"][0] and "warning: the original model is near chance" in out.audit.summary()


class NeverSeenDataset(Dataset):
    """A user's Dataset the project has never seen: numpy-free, (image, int) pairs built on the fly."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i].view(1, 8, 8), int(self.labels[i])


class NeverSeenNet(nn.Module):
    """A user's model: conv + GroupNorm + a residual linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.GroupNorm(2, 8), nn.GELU())
        self.head = nn.Linear(8 * 64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x).flatten(1))


def test_practitioner_check_with_nothing_but_the_data_and_the_method(memorized):
    _, (fx, fy), (rx, ry), (tx, ty) = memorized
    torch.manual_seed(0)
    net = NeverSeenNet()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    xs, ys = torch.cat([fx, rx]).view(-1, 1, 8, 8), torch.cat([fy, ry])
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(net(xs), ys).backward()
        opt.step()
    out = dualoptim.unlearn(net, forget=NeverSeenDataset(fx, fy), retain=NeverSeenDataset(rx, ry),
                            test=NeverSeenDataset(tx, ty), method="salun")
    a = out.audit
    assert a.verdict.split(":")[0] in ("forgotten", "NOT forgotten", "utility lost")
    assert a.calibration["mode"] == "auto" and a.sizes == {"forget": 100, "retain": 1400, "test": 297}


def test_verdict_wording():
    base = {"kind": "sample", "FA": 86.9, "HA": 87.3, "AUC": 0.51, "tol_acc": 2.0, "tol_auc": 0.03, "tol_util": 2.0,
            "kept": 86.9, "kept_before": 87.3, "utility_drop": False}
    status, text = verdict_text({**base, "status": "target met"})
    assert status == "forgotten" and "forget accuracy 86.9% vs held-out 87.3%" in text and "AUC" in text
    assert verdict_text({**base, "status": "not met"})[0] == "NOT forgotten"
    assert verdict_text({**base, "status": "target met", "utility_drop": True})[1].startswith("utility lost")
    assert verdict_text({**base, "status": "overshot"})[0] == "forgotten"
    status, text = verdict_text({**base, "status": "overshot", "utility_drop": True})  # not "forgotten"
    assert status == "utility lost" and "over-forgotten" in text


def test_engine_stop_hook_ends_the_run_and_may_scale_the_forget_lr():
    from dualoptim.engine import Schedule, run_unlearning
    from dualoptim.optim import build_optimizer
    from dualoptim.vision.methods import get_method

    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    batches = [(torch.randn(8, 4), torch.randint(0, 3, (8,))) for _ in range(2)]
    seen = []

    def stop(event):
        seen.append((event.step, event.phase))
        if event.step == 2:
            event.lr_scale["forget"] = 10.0  # from the next step on
        return "enough" if event.step == 5 else None

    opt = build_optimizer(model.parameters(), "sgd", 0.1, 0.01)
    res = run_unlearning(model, get_method("rl"), opt, batches, batches, Schedule(epochs=5), progress=False, stop=stop)
    assert res.steps == 5 and res.stop_reason == "enough" and seen[0] == (0, "start")
    forget_lrs = [h["lr"] for h in res.history if h["phase"] == "forget"]
    assert forget_lrs == [pytest.approx(0.1), pytest.approx(0.1), pytest.approx(1.0)]
    assert opt.phase_groups("forget")[0]["lr"] == pytest.approx(0.1)  # restored afterwards
    res = run_unlearning(model, get_method("rl"), opt, batches, batches, Schedule(epochs=1), progress=False,
                         stop=lambda e: "at once")
    assert res.steps == 0 and res.stop_reason == "at once"


def test_utility_drop_backs_off_twice_then_stops_restored():
    """Rule v3: a utility drop restores the last good state and divides the forget lr by sqrt(10) (no escalation
    above it afterwards); the third drop ends the run, restored (v2)."""
    from types import SimpleNamespace

    from dualoptim.vision.calibrate import MAX_BACKOFFS, PROBE_RATIO, Monitor

    net = nn.Linear(2, 2)
    mon = Monitor(net, (torch.zeros(1, 2), torch.zeros(1, dtype=torch.long)), None, "sample", [], max_scale=10.0)
    drops = [False, False, True, False, False, True, True]  # per check; the forget set never moves (FA 90)
    script = iter([{"kind": "sample", "FA": 90.0, "AUC": 0.8, "status": "not met", "utility_drop": d} for d in drops])
    mon.measure = lambda k=1.0: next(script)
    scale = {"forget": 1.0, "retain": 1.0}

    def check(step):
        return mon(SimpleNamespace(phase="start" if step == 0 else "retain", step=step, lr_scale=scale))

    assert check(0) is None and check(1) is None  # kept states: steps 0 and 1; no progress: escalated
    assert scale["forget"] == pytest.approx(PROBE_RATIO)
    good = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        net.weight.add_(1.0)
    assert check(2) is None  # utility drop 1: restored, backed off
    assert all(torch.equal(v, good[k]) for k, v in net.state_dict().items())
    assert scale["forget"] == pytest.approx(1.0) and mon.max_scale == pytest.approx(1.0)
    assert mon.checks[-1]["restored"] == 1 and mon.backoffs == 1
    assert check(3) is None and check(4) is None  # no progress, but no escalation above the backed-off lr
    assert scale["forget"] == pytest.approx(1.0)
    assert check(5) is None and scale["forget"] == pytest.approx(1 / PROBE_RATIO) and mon.backoffs == MAX_BACKOFFS == 2
    assert check(6) == "utility drop: restored step 4"


def test_member_guard_tolerance():
    """Rule v6: 3 binomial standard errors of the original's held-out member rate, at least 2 points."""
    from dualoptim.vision.calibrate import member_guard_tolerance

    assert member_guard_tolerance(85.0, 256)["tol_member"] == pytest.approx(300 * (0.85 * 0.15 / 256) ** 0.5)
    assert member_guard_tolerance(60.0, 256)["tol_member"] == pytest.approx(9.185, abs=1e-3)
    assert member_guard_tolerance(99.9, 10_000)["tol_member"] == 2.0


@pytest.mark.parametrize("guard", [True, False])
def test_member_rate_drop_restores_backs_off_and_the_third_event_ends_the_run(monkeypatch, guard):
    """Rule v6: a check whose held-out member rate fell more than tol_member below the first check's is treated
    like a utility drop (restore the last state that passed, forget lr / sqrt(10), no escalation above it; the
    third such event ends the run); rule v5 (no guard) lets the same rates through."""
    from types import SimpleNamespace

    import dualoptim.vision.calibrate as cal

    net = nn.Linear(2, 2)
    n = 256
    xs, ys = torch.zeros(n, 2), torch.zeros(n, dtype=torch.long)
    mon = cal.Monitor(net, (xs, ys), (xs, ys), "sample", [], (xs, ys), mia=True, max_scale=10.0,
                      member_guard={} if guard else None)
    rates = [85.0, 84.0, 70.0, 83.0, 60.0, 79.0, 60.0]  # held-out member rate per check; tol_member = 6.7
    script = iter([{"kind": "sample", "FA": 90.0, "AUC": 0.8, "MIA_forget": 90.0, "MIA_heldout": m, "tol_mia": 5.0,
                    "kept": 95.0, "status": "not met", "utility_drop": False} for m in rates])
    monkeypatch.setattr(cal, "assess", lambda *a, **k: next(script))
    scale = {"forget": 1.0, "retain": 1.0}

    def check(step):
        return mon(SimpleNamespace(phase="start" if step == 0 else "retain", step=step, lr_scale=scale))

    assert check(0) is None and check(1) is None  # kept: steps 0 and 1; no progress: escalated
    assert scale["forget"] == pytest.approx(cal.PROBE_RATIO)
    good = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        net.weight.add_(1.0)
    result = check(2)  # 70 < 85 - 6.7
    if not guard:
        assert result is None and "member_drop" not in mon.checks[-1] and mon.backoffs == 0
        assert not torch.equal(net.weight, good["weight"]) and [check(s) for s in range(3, 7)] == [None] * 4
        return
    assert result is None and mon.checks[-1]["member_drop"] and mon.checks[-1]["restored"] == 1
    assert all(torch.equal(v, good[k]) for k, v in net.state_dict().items())  # restored
    assert scale["forget"] == pytest.approx(1.0) and mon.max_scale == pytest.approx(1.0) and mon.backoffs == 1
    assert mon.member_guard["heldout_before"] == 85.0 and mon.member_guard["n_heldout"] == n
    assert check(3) is None and scale["forget"] == pytest.approx(1.0)  # 83: passes; no escalation above the cut
    assert check(4) is None and mon.checks[-1]["restored"] == 3
    assert scale["forget"] == pytest.approx(1 / cal.PROBE_RATIO)
    assert check(5) is None  # 79: within 85 - 6.7
    assert check(6) == "member-rate drop: restored step 5"  # the third event ends the run, restored


def test_use_rule_sets_the_switches_of_each_rule(monkeypatch):
    """``calibrate.use_rule`` (benchmarks/defaults_check.py --rule): each rule's switch, read back by rule_name;
    the removed rules v7 and v8 are refused, while their audits still judge with the membership attack."""
    import dualoptim.vision.calibrate as cal

    monkeypatch.setattr(cal, "MEMBER_GUARD", cal.MEMBER_GUARD)  # put back after the test
    for rule in cal.RULES:
        cal.use_rule(rule)
        assert cal.rule_name() == rule and cal.MEMBER_GUARD == (rule == "v6")
    for rule in ("v7", "v8", "v9"):
        with pytest.raises(ValueError, match="unknown rule"):
            cal.use_rule(rule)
    assert [cal.attack_target({"rule": r}) for r in ("v3", "v5", "v6", "v7", "v8")] == [False] + [True] * 4
