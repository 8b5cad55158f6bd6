"""The single-object form of DualOptim (BankedOptimizer) equals DualOptimizer (issue 8)."""

from __future__ import annotations

import copy

import pytest
import torch

from dualoptim.optim import BankedOptimizer, build_optimizer

SCHEDULE = ["forget", "forget", "retain", "retain", "retain", "forget", "retain", "forget", "retain", "retain",
            "forget", "retain"]


def make_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()


def loss_fn(model: torch.nn.Module, step: int, phase: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 * step + (phase == "forget"))
    x, y = torch.randn(16, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (16,), generator=g)
    ce = torch.nn.functional.cross_entropy(model(x), y)
    return -ce if phase == "forget" else ce


def run(model, opt, schedule, start=0):
    for i, phase in enumerate(schedule, start):
        opt.set_phase(phase)
        loss_fn(model, i, phase).backward()
        opt.step()
        opt.zero_grad()


def flat(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("spec", ["adam+sgd", "adam+adam", "adamw+sgd", "sgd+sgd", "adam-bf16+sgd-bf16"])
def test_banked_trajectory_equals_dual_optimizer(spec):
    forget, retain = spec.split("+")
    m1, m2 = make_model(), make_model()
    dual = build_optimizer(m1.parameters(), spec, 1e-2, 3e-2, weight_decay=1e-3)
    banked = BankedOptimizer(m2.parameters(), forget, retain, 1e-2, 3e-2, weight_decay=1e-3)
    assert len(banked.param_groups) == 1 and len(banked.param_groups[0]["params"]) == 4  # each param once
    run(m1, dual, SCHEDULE)
    run(m2, banked, SCHEDULE)
    assert not torch.equal(flat(m1), flat(make_model()))
    # Only the retain lr differs by an ulp (stored as forget lr x ratio): float64 agreement to 1e-12.
    torch.testing.assert_close(flat(m2), flat(m1), rtol=0, atol=1e-12)
    p = next(m2.parameters())
    assert set(banked.state[p]) == {"forget", "retain"}
    assert banked.state[p]["forget"] is not banked.state[p]["retain"]


def test_banked_state_dict_round_trip_continues_the_same_trajectory():
    m1, m2 = make_model(), make_model()
    dual = build_optimizer(m1.parameters(), "adam+sgd", 1e-2, 3e-2)
    banked = BankedOptimizer(m2.parameters(), "adam", "sgd", 1e-2, 3e-2)
    run(m1, dual, SCHEDULE[:6])
    run(m2, banked, SCHEDULE[:6])
    saved_params, saved = copy.deepcopy(m2.state_dict()), copy.deepcopy(banked.state_dict())
    m3 = make_model(5)
    m3.load_state_dict(saved_params)
    restored = BankedOptimizer(m3.parameters(), "adam", "sgd", 1.0, 1.0)  # lrs come from the state dict
    restored.load_state_dict(saved)
    assert restored.phase == banked.phase
    run(m1, dual, SCHEDULE[6:], start=6)
    run(m3, restored, SCHEDULE[6:], start=6)
    torch.testing.assert_close(flat(m3), flat(m1), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="state dict is for"):
        BankedOptimizer(make_model().parameters(), "adam", "adam").load_state_dict(saved)


def test_one_scheduler_drives_both_phases():
    m = make_model()
    banked = BankedOptimizer(m.parameters(), "adam", "sgd", 1e-2, 3e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(banked, lambda t: 0.5**t)
    for phase in ("forget", "retain"):
        with banked.set_phase(phase):
            loss_fn(m, 0, phase).backward()
            banked.step()
            banked.zero_grad()
            sched.step()
    assert banked.lr_of("forget") == pytest.approx(0.25e-2)
    assert banked.lr_of("retain") == pytest.approx(0.75e-2)


def test_mixed_phase_accumulation_and_missing_phase_are_errors():
    m = make_model()
    banked = BankedOptimizer(m.parameters(), "adam", "sgd", 1e-2)
    loss_fn(m, 0, "retain").backward()
    with pytest.raises(RuntimeError, match="no phase set"):
        banked.step()
    banked.zero_grad()
    # gradient accumulation over two micro-batches of different phases: refuse to step
    for i, phase in enumerate(["forget", "retain"]):
        banked.set_phase(phase)
        loss_fn(m, i, phase).backward()
    with pytest.raises(RuntimeError, match="both forget and retain"):
        banked.step()
    banked.zero_grad()
    for i in range(2):  # two micro-batches of one phase are fine
        banked.set_phase("retain")
        loss_fn(m, i, "retain").backward()
    banked.step()
    with pytest.raises(ValueError, match="unknown optimizer"):
        BankedOptimizer(m.parameters(), "adan", "sgd", 1e-2)
    with pytest.raises(ValueError, match="not accepted"):
        BankedOptimizer(m.parameters(), "adam", "sgd", 1e-2, momentun=0.9)


def test_parameters_replaced_by_an_engine_are_the_ones_stepped():
    # DeepSpeed ZeRO swaps each group's params for a flat partition after construction.
    banked = BankedOptimizer(make_model().parameters(), "adam", "sgd", 1e-2)
    flat = torch.nn.Parameter(torch.zeros(10, dtype=torch.float64))
    banked.param_groups[0]["params"] = [flat]
    flat.grad = torch.ones_like(flat)
    with banked.set_phase("forget"):
        banked.step()
    torch.testing.assert_close(flat.detach(), torch.full_like(flat, -1e-2))  # Adam's first step: -lr * sign(g)
    assert set(banked.state[flat]) == {"forget"}
