"""The DualOptimizer / SharedOptimizer contract (issue: foundation)."""

from __future__ import annotations

import copy

import pytest
import torch

from dualoptim.optim import (
    BankedOptimizer,
    DualOptimizer,
    Lion,
    Muon,
    SharedOptimizer,
    build_optimizer,
    cosine_factor,
    list_optimizers,
    phase_lambda_lr,
)

SCHEDULE = ["forget", "forget", "retain", "retain", "retain", "forget", "retain", "forget", "retain", "retain"]


def make_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()


def batch(step: int, phase: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * step + (phase == "forget"))
    return torch.randn(16, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (16,), generator=g)


def loss_fn(model: torch.nn.Module, step: int, phase: str) -> torch.Tensor:
    x, y = batch(step, phase)
    ce = torch.nn.functional.cross_entropy(model(x), y)
    return -ce if phase == "forget" else ce


def run_phased(model: torch.nn.Module, opt, schedule=SCHEDULE, start: int = 0) -> None:
    for i, phase in enumerate(schedule, start):
        with opt.set_phase(phase):
            loss_fn(model, i, phase).backward()
            opt.step()
            opt.zero_grad()


def flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


OPTS = {
    "adam": lambda p, lr: torch.optim.Adam(p, lr=lr, weight_decay=1e-2),
    "adamw": lambda p, lr: torch.optim.AdamW(p, lr=lr, weight_decay=1e-2),
    "sgd": lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=0.9, weight_decay=5e-4),
}


@pytest.mark.parametrize("pair", [("adam", "sgd"), ("adam", "adam"), ("adamw", "sgd")])
def test_dual_equals_two_independent_optimizers(pair):
    fname, rname = pair
    m1, m2, m3 = make_model(), make_model(), make_model()
    dual = DualOptimizer(forget=OPTS[fname](m1.parameters(), 1e-2), retain=OPTS[rname](m1.parameters(), 3e-2))
    run_phased(m1, dual)
    # Reference: two optimizers on two models that exchange parameters by copy.
    of, orr = OPTS[fname](m2.parameters(), 1e-2), OPTS[rname](m3.parameters(), 3e-2)
    for i, phase in enumerate(SCHEDULE):
        src, dst, opt = (m2, m3, of) if phase == "forget" else (m3, m2, orr)
        loss_fn(src, i, phase).backward()
        opt.step()
        opt.zero_grad()
        with torch.no_grad():
            for a, b in zip(src.parameters(), dst.parameters()):
                b.copy_(a)
    torch.testing.assert_close(flat(m1), flat(m2), rtol=0, atol=1e-12)


def test_phase_states_are_decoupled():
    m = make_model()
    dual = build_optimizer(m.parameters(), "adam+sgd", 1e-2, 1e-2)
    with dual.set_phase("forget"):
        loss_fn(m, 0, "forget").backward()
        dual.step()
        dual.zero_grad()
    assert all(dual.forget.state[p] for p in m.parameters())
    assert not any(dual.retain.state.get(p) for p in m.parameters())
    forget_state = copy.deepcopy(dual.forget.state_dict()["state"])
    with dual.set_phase("retain"):
        loss_fn(m, 1, "retain").backward()
        dual.step()
    after = dual.forget.state_dict()["state"]
    for k in forget_state:
        for name, t in forget_state[k].items():
            torch.testing.assert_close(after[k][name], t, rtol=0, atol=0)
    assert all("momentum_buffer" in dual.retain.state[p] for p in m.parameters())


def test_shared_equals_one_optimizer_with_lr_switched():
    m1, m2 = make_model(), make_model()
    shared = SharedOptimizer(torch.optim.SGD(m1.parameters(), lr=0.1, momentum=0.9), forget_lr=1e-2, retain_lr=3e-2)
    run_phased(m1, shared)
    ref = torch.optim.SGD(m2.parameters(), lr=0.1, momentum=0.9)
    for i, phase in enumerate(SCHEDULE):
        for g in ref.param_groups:
            g["lr"] = 1e-2 if phase == "forget" else 3e-2
        loss_fn(m2, i, phase).backward()
        ref.step()
        ref.zero_grad()
    torch.testing.assert_close(flat(m1), flat(m2), rtol=0, atol=1e-12)
    assert len(shared.state) == len(list(m1.parameters()))  # one state, shared


@pytest.mark.parametrize("spec", ["adam+sgd", "adam+adam", "sgd", "adam+adam:decouple=m"])
def test_save_resume_reproduces_trajectory(spec, tmp_path):
    m1 = make_model()
    opt1 = build_optimizer(m1.parameters(), spec, 1e-2, 3e-2)
    run_phased(m1, opt1)

    m2 = make_model()
    opt2 = build_optimizer(m2.parameters(), spec, 1e-2, 3e-2)
    run_phased(m2, opt2, SCHEDULE[:5])
    with opt2.set_phase("forget"):  # the phase itself is part of the state
        path = tmp_path / "ckpt.pt"
        torch.save({"model": m2.state_dict(), "opt": opt2.state_dict()}, path)
    m3 = make_model(seed=7)
    opt3 = build_optimizer(m3.parameters(), spec, 1e-2, 3e-2)
    ck = torch.load(path, weights_only=True)
    m3.load_state_dict(ck["model"])
    opt3.load_state_dict(ck["opt"])
    assert opt3.phase == "forget"
    run_phased(m3, opt3, SCHEDULE[5:], start=5)
    torch.testing.assert_close(flat(m1), flat(m3), rtol=0, atol=1e-12)


@pytest.mark.parametrize("spec", ["sgd+sgd", "adamw+adamw", "sgd", "adamw", "adamw+sgd"])
def test_mask_is_a_hard_constraint(spec):
    m = make_model()
    opt = build_optimizer(m.parameters(), spec, 5e-2, 5e-2, weight_decay=0.1)
    # Build up momentum / moments on every entry first, then freeze half of them.
    run_phased(m, opt, SCHEDULE[:4])
    g = torch.Generator().manual_seed(3)
    mask = {p: torch.rand(p.shape, generator=g) < 0.5 for p in m.parameters()}
    opt.set_mask(mask)
    before = [p.detach().clone() for p in m.parameters()]
    run_phased(m, opt, SCHEDULE, start=4)
    for p, b in zip(m.parameters(), before):
        assert torch.equal(p[~mask[p]], b[~mask[p]])
        assert not torch.equal(p[mask[p]], b[mask[p]])
    # Changing the mask: the new frozen entries hold, in the forget phase only.
    new_mask = {p: ~m_ for p, m_ in mask.items()}
    opt.set_mask(new_mask, phase="forget")
    opt.set_mask(None, phase="retain")
    before = [p.detach().clone() for p in m.parameters()]
    run_phased(m, opt, ["forget"] * 3, start=20)
    for p, b in zip(m.parameters(), before):
        assert torch.equal(p[mask[p]], b[mask[p]])
    run_phased(m, opt, ["retain"] * 2, start=30)
    assert not torch.equal(flat(m), torch.cat([b.flatten() for b in before]))


def test_per_phase_lr_schedulers():
    m = make_model()
    for spec in ("adam+sgd", "sgd"):
        opt = build_optimizer(m.parameters(), spec, 1e-2, 1e-1)
        sched = phase_lambda_lr(opt, forget=cosine_factor(4))
        run_phased(m, opt, ["forget", "retain"])
        lrs = []
        for _ in range(4):
            sched.step()
            lrs.append([g["lr"] for g in opt.param_groups])
        assert [g["phase"] for g in opt.param_groups] == ["forget", "retain"]
        assert lrs[-1][0] == pytest.approx(0.0) and lrs[1][0] == pytest.approx(5e-3)
        assert all(lr[1] == pytest.approx(1e-1) for lr in lrs)
    # A plain torch scheduler drives both phases of a DualOptimizer.
    opt = build_optimizer(m.parameters(), "adam+sgd", 1e-2, 1e-1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    run_phased(m, opt, ["forget"])
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([5e-3, 5e-2])
    assert opt.forget.param_groups[0]["lr"] == pytest.approx(5e-3)


def test_shared_lr_schedule_reaches_the_step():
    m1, m2 = make_model(), make_model()
    opt = build_optimizer(m1.parameters(), "sgd", 1e-2, 1e-1)
    sched = phase_lambda_lr(opt, retain=lambda t: 0.5**t)
    ref = torch.optim.SGD(m2.parameters(), lr=1, momentum=0.9, weight_decay=5e-4)
    for i, phase in enumerate(SCHEDULE):
        run_phased(m1, opt, [phase], start=i)
        for g in ref.param_groups:
            g["lr"] = 1e-2 if phase == "forget" else 1e-1 * 0.5**i
        loss_fn(m2, i, phase).backward()
        ref.step()
        ref.zero_grad()
        sched.step()
    torch.testing.assert_close(flat(m1), flat(m2), rtol=0, atol=1e-12)


def test_table17_ablation_really_decouples():
    # decouple=mv must equal DualOptimizer(Adam, Adam); decouple=none must equal one shared Adam.
    pairs = {"mv": "adam+adam", "none": "adam"}
    for dec, ref_spec in pairs.items():
        m1, m2 = make_model(), make_model()
        run_phased(m1, build_optimizer(m1.parameters(), f"adam+adam:decouple={dec}", 1e-2, 3e-2))
        run_phased(m2, build_optimizer(m2.parameters(), ref_spec, 1e-2, 3e-2, fused=False))
        torch.testing.assert_close(flat(m1), flat(m2), rtol=0, atol=1e-10)
    # decouple=m: the retain step must not read or write the forget first moment.
    m = make_model()
    opt = build_optimizer(m.parameters(), "adam+adam:decouple=m", 1e-2)
    run_phased(m, opt, ["forget"])
    p0 = next(m.parameters())
    m_f = opt.state[p0]["m_forget"].clone()
    run_phased(m, opt, ["retain"], start=1)
    assert torch.equal(opt.state[p0]["m_forget"], m_f)
    assert "m_retain" in opt.state[p0] and "v" in opt.state[p0] and opt.state[p0]["step_v"] == 2
    results = {}
    for dec in ("m", "v", "mv", "none"):
        mm = make_model()
        run_phased(mm, build_optimizer(mm.parameters(), f"adam+adam:decouple={dec}", 1e-2, 3e-2))
        results[dec] = flat(mm)
    assert len({tuple(v.tolist()) for v in results.values()}) == 4  # four different trajectories


@pytest.mark.parametrize("spec", [f"{a}+sgd" for a in ("adam", "adamw", "lion", "muon", "sgd")] + ["adam", "lion"])
def test_every_registered_optimizer_runs_in_a_spec(spec):
    m = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 3))
    opt = build_optimizer(m.parameters(), spec, 1e-3, 1e-2)
    before = flat(m).clone()
    x = torch.randn(8, 1, 6, 6)
    for phase in ("forget", "retain"):
        with opt.set_phase(phase):
            m(x).square().mean().backward()
            opt.step()
            opt.zero_grad()
    assert torch.isfinite(flat(m)).all() and not torch.equal(before, flat(m))
    assert isinstance(opt, DualOptimizer) == ("+" in spec)


def test_lion_and_muon_basic_math():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = Lion([p], lr=0.1)
    p.grad = torch.tensor([0.5, -3.0])
    opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor([0.9, -1.9]))
    w = torch.nn.Parameter(torch.zeros(4, 3))
    Muon([w], lr=1.0, momentum=0.0).step() if w.grad is not None else None
    w.grad = torch.randn(4, 3)
    Muon([w], lr=1.0, momentum=0.0).step()
    s = torch.linalg.svdvals(w.detach() / (0.2 * 2))  # orthogonalized update: singular values near 1
    assert torch.all((s > 0.5) & (s < 1.5))


def test_third_party_style_optimizer_is_accepted():
    m = make_model()
    dual = DualOptimizer(forget=Lion(m.parameters(), lr=1e-3), retain=torch.optim.SGD(m.parameters(), lr=1e-2))
    run_phased(m, dual)
    assert torch.isfinite(flat(m)).all()


def test_errors_are_clear():
    m, other = make_model(), make_model(1)
    with pytest.raises(ValueError, match="same parameters"):
        DualOptimizer(forget=torch.optim.Adam(m.parameters()), retain=torch.optim.SGD(other.parameters(), lr=1))
    with pytest.raises(ValueError, match="same parameters"):
        DualOptimizer(forget=torch.optim.Adam(m.parameters()), retain=torch.optim.SGD(list(m.parameters())[:1], lr=1))
    a = torch.optim.Adam(m.parameters())
    with pytest.raises(ValueError, match="different optimizer"):
        DualOptimizer(forget=a, retain=a)
    with pytest.raises(ValueError, match="two torch.optim.Optimizer"):
        DualOptimizer(forget="adam", retain=a)
    opt = build_optimizer(m.parameters(), "adam+sgd", 1e-3)
    loss_fn(m, 0, "retain").backward()
    with pytest.raises(RuntimeError, match="no phase set"):
        opt.step()
    with pytest.raises(ValueError, match="unknown phase"):
        opt.set_phase("both")
    with pytest.raises(ValueError, match="valid: adam, adam-bf16, adamw, adamw-bf16, lion, muon, sgd, sgd-bf16"):
        build_optimizer(m.parameters(), "adan+sgd", 1e-3)
    with pytest.raises(ValueError, match="bad optimizer spec"):
        build_optimizer(m.parameters(), "adam+sgd+sgd", 1e-3)
    with pytest.raises(ValueError, match="forget_lr must be"):
        build_optimizer(m.parameters(), "adam+sgd", -1.0)
    with pytest.raises(ValueError, match="retain_lr must be"):
        build_optimizer(m.parameters(), "adam+sgd", 1e-3, float("nan"))
    with pytest.raises(ValueError, match="not accepted"):
        build_optimizer(m.parameters(), "adam+sgd", 1e-3, momentum_typo=0.9)
    with pytest.raises(ValueError, match=r"\['momentum_typo'\] not accepted by 'adam\+sgd'"):
        BankedOptimizer(m.parameters(), "adam", "sgd", 1e-3, retain_momentum_typo=0.9)
    with pytest.raises(ValueError, match="empty parameter list"):
        build_optimizer([], "adam", 1e-3)
    with pytest.raises(ValueError, match="ablation"):
        build_optimizer(m.parameters(), "adam+sgd:decouple=m", 1e-3)
    with pytest.raises(ValueError, match="mask shape"):
        opt.set_mask({next(m.parameters()): torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(ValueError, match="bool"):
        opt.set_mask({next(m.parameters()): torch.ones_like(next(m.parameters()))})
    with pytest.raises(ValueError, match="not a parameter"):
        opt.set_mask({torch.zeros(3): torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="not a DualOptimizer state"):
        opt.load_state_dict({"state": {}})
    with pytest.raises(ValueError, match="> 0"):
        SharedOptimizer(torch.optim.SGD(m.parameters(), lr=1), forget_lr=0)
    with pytest.raises(NotImplementedError):
        opt.add_param_group({"params": [torch.zeros(1, requires_grad=True)]})


def test_phase_context_restores_previous_phase():
    m = make_model()
    opt = build_optimizer(m.parameters(), "adam+sgd", 1e-3)
    opt.set_phase("retain")
    with opt.set_phase("forget"):
        assert opt.phase == "forget"
    assert opt.phase == "retain"


def test_options_target_each_phase():
    m = make_model()
    opt = build_optimizer(m.parameters(), "adamw+sgd", 1e-3, 1e-2, weight_decay=0.0, forget_weight_decay=0.1,
                          momentum=0.5)
    assert opt.forget.param_groups[0]["weight_decay"] == 0.1
    assert opt.retain.param_groups[0]["weight_decay"] == 0.0
    assert opt.retain.param_groups[0]["momentum"] == 0.5
    assert opt.forget.param_groups[0]["fused"] is True  # fast kernels by default
    assert list_optimizers() == sorted(list_optimizers())
