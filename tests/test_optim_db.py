"""The torch.optim contract, checked with PyTorch's own optimizer test inputs (issue 18).

``torch.testing._internal.common_optimizers.optim_db`` lists every torch optimizer with the CPU
argument sets torch's generic optimizer tests run (plus foreach/fused variants where torch has them).
Each input drives our optimizers and is compared, in float64, with plain torch optimizers that are
each stepped only in their phase:

* ``DualOptimizer(X, X)``, ``DualOptimizer(Adam, X)`` == two plain optimizers; ``SharedOptimizer(X)``
  == one plain X whose lr is switched per phase; the trajectory has a step where a gradient is None,
  closures on every other step (always for LBFGS) and complex parameters where X supports them;
* state-dict round trips (through ``torch.save``/``torch.load(weights_only=True)``), ``copy.deepcopy`` and
  ``pickle`` in mid-trajectory continue exactly as the original;
* ``build_optimizer`` specs and ``BankedOptimizer`` for the registry's torch classes (Adam, AdamW, SGD),
  with each input given as parameter-group settings.

Then hooks, every scheduler in ``torch.optim.lr_scheduler``, sparse gradients, tensor lrs, per-group
settings, older state-dict formats and the lean (bf16-state) optimizers. The reference optimizers use
torch's for-loop implementation, so foreach/fused inputs are also checked against it.
"""

from __future__ import annotations

import copy
import io
import pickle
import re
import sys
import types
import unittest
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.optim import lr_scheduler as sched
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from dualoptim.optim import (
    BankedOptimizer,
    DualOptimizer,
    FastSGD,
    SharedOptimizer,
    build_optimizer,
    get_optimizer_info,
    phase_lambda_lr,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _load_optim_db() -> tuple[list[Any], Callable[..., list[Any]]]:
    # torch's test utilities import expecttest only to subclass its TestCase, which optim_db does not use;
    # without the (dev) package installed, unittest's TestCase stands in for it.
    try:
        import expecttest  # noqa: F401
    except ImportError:
        shim = types.ModuleType("expecttest")
        shim.TestCase = unittest.TestCase  # type: ignore[attr-defined]
        sys.modules["expecttest"] = shim
    from torch.testing._internal import common_optimizers as co

    return co.optim_db, co._get_optim_inputs_including_global_cliquey_kwargs


OPTIM_DB, _ALL_INPUTS = _load_optim_db()
DENSE = [info for info in OPTIM_DB if not info.only_supports_sparse_grads]
SEQ = ["forget", "forget", "retain", "forget", "retain", "retain"]  # the phase of each step
NONE_STEPS = (0, 4)  # the last parameter's gradient is None in these steps (before and after it has state)
MID = 3  # copies and round trips happen after this many steps


def _inputs(info: Any) -> list[Any]:
    """Every CPU input of ``info``, with foreach/fused variants (``differentiable`` is not supported: README)."""
    return _ALL_INPUTS("cpu", torch.float64, info, skip=("differentiable",))


def _case_id(info: Any, i: int, desc: str) -> str:
    return f"{info.name}-{i}-" + re.sub(r"[^A-Za-z0-9]+", "_", desc).strip("_")


CASES = [pytest.param(info, inp, id=_case_id(info, i, inp.desc))
         for info in DENSE for i, inp in enumerate(_inputs(info))]
REGISTRY_TORCH = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}  # registry names
REGISTRY_CASES = [pytest.param(name, inp, id=_case_id(info, i, inp.desc)) for info in OPTIM_DB
                  for name, cls in REGISTRY_TORCH.items() if info.optim_cls is cls
                  for i, inp in enumerate(_inputs(info))]


# -- the problem: two phase losses over a weight and a bias -------------------------------------------------
def _params(info: Any = None, dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 4, generator=g, dtype=dtype)
    b = torch.randn(3, generator=g, dtype=dtype)
    ps = [w] if info is not None and info.name == "Muon" else [w, b]  # torch's Muon takes matrices only
    return [p.requires_grad_() for p in ps]


def _clone(params: list[torch.Tensor]) -> list[torch.Tensor]:
    return [p.detach().clone().requires_grad_() for p in params]


def _loss(params: list[torch.Tensor], phase: str, step: int) -> torch.Tensor:
    total = torch.zeros((), dtype=torch.float64)
    for i, p in enumerate(params):
        target = torch.linspace(-1, 1, p.numel(), dtype=torch.float64).reshape(p.shape)
        target = target * (1.0 if phase == "forget" else -2.0) + 0.1 * step
        total = total + (i + 1) * ((p - target).abs() ** 2).sum() + 0.05 * (p.abs() ** 4).sum()
    return total


def _drive(params: list[torch.Tensor], step: Callable[[str, Any], Any], start: int = 0, stop: int = len(SEQ),
           always_closure: bool = False, metric: Callable[[], None] | None = None) -> None:
    """Steps ``start..stop`` of SEQ: ``step(phase, closure_or_None)``; gradients computed the same way either way."""
    for k in range(start, stop):
        phase = SEQ[k]

        def closure(k: int = k, phase: str = phase) -> torch.Tensor:
            for p in params:
                p.grad = None
            loss = _loss(params, phase, k)
            loss.backward()
            if k in NONE_STEPS and len(params) > 1:
                params[-1].grad = None
            return loss

        if always_closure or k % 2:
            step(phase, closure)
        else:
            closure()
            step(phase, None)
        if metric is not None:
            metric()


def _phased_step(opt: Any) -> Callable[[str, Any], Any]:
    def step(phase: str, closure: Any) -> Any:
        opt.set_phase(phase)
        loss = opt.step(closure)
        opt.zero_grad()  # BankedOptimizer checks that one step's gradients come from one phase
        return loss
    return step


def _assert_same(actual: list[torch.Tensor], expected: list[torch.Tensor], exact: bool = False) -> None:
    for a, e in zip(actual, expected, strict=True):
        if exact:
            assert torch.equal(a, e), (a - e).abs().max()
        else:
            torch.testing.assert_close(a, e, rtol=1e-7, atol=1e-9)


# -- building the optimizers under test and their references ------------------------------------------------
def _kw(inp: Any) -> dict[str, Any]:
    return copy.deepcopy(inp.kwargs)


def _tested_cls(info: Any) -> type:
    # SGD goes through the registry's SGD (torch's SGD, fused only where the fused kernel works).
    return FastSGD if info.optim_cls is torch.optim.SGD else info.optim_cls


def _reference_kw(kw: dict[str, Any]) -> dict[str, Any]:
    return {k: (False if k in ("foreach", "fused") else v) for k, v in kw.items()}


def _half_lr(opt: torch.optim.Optimizer) -> None:
    for g in opt.param_groups:
        g["lr"] = g["lr"] * 0.5


def _forget_adam(params: list[torch.Tensor]) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=0.05, weight_decay=0.01)


def _build(info: Any, kw: dict[str, Any], kind: str, params: list[torch.Tensor]) -> Any:
    cls = _tested_cls(info)
    if kind == "shared":
        opt = SharedOptimizer(cls(params, **kw))
        _half_lr(types.SimpleNamespace(param_groups=opt.phase_groups("retain")))  # type: ignore[arg-type]
        return opt
    retain = cls(params, **kw)
    _half_lr(retain)
    forget = _forget_adam(params) if kind == "adam+x" else cls(params, **copy.deepcopy(kw))
    return DualOptimizer(forget=forget, retain=retain)


def _reference(info: Any, kw: dict[str, Any], kind: str, params: list[torch.Tensor]) -> Callable[[str, Any], Any]:
    kw = _reference_kw(kw)
    cls = info.optim_cls
    if kind == "shared":
        one = cls(params, **kw)
        lrs = {"forget": [g["lr"] for g in one.param_groups], "retain": [g["lr"] * 0.5 for g in one.param_groups]}

        def shared_step(phase: str, closure: Any) -> Any:
            for g, lr in zip(one.param_groups, lrs[phase]):
                g["lr"] = lr
            return one.step(closure)
        return shared_step
    retain = cls(params, **kw)
    _half_lr(retain)
    refs = {"forget": _forget_adam(params) if kind == "adam+x" else cls(params, **copy.deepcopy(kw)), "retain": retain}
    return lambda phase, closure: refs[phase].step(closure)


def _dtypes(info: Any, inp: Any) -> list[torch.dtype]:
    complex_ok = info.supports_complex and not inp.kwargs.get("fused")
    if info.optim_cls is torch.optim.LBFGS:  # 20 closure calls a step: complex for its default input only (time)
        complex_ok = complex_ok and inp.desc == "default"
    return [torch.float64, torch.complex128] if complex_ok else [torch.float64]


KINDS = ["dual", "adam+x", "shared"]


# -- 1. trajectories ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("info", "inp"), CASES)
def test_trajectory_equals_plain_optimizers_each_stepped_in_its_phase(info, inp):
    for dtype in _dtypes(info, inp):
        for kind in KINDS:
            if kind == "shared" and dtype.is_complex and info.optim_cls is torch.optim.LBFGS:
                continue  # plain LBFGS itself reaches nan on this problem when its lr switches per phase
            params, ref_params = _params(info, dtype), _params(info, dtype)
            opt = _build(info, _kw(inp), kind, params)
            ref = _reference(info, _kw(inp), kind, ref_params)
            _drive(params, _phased_step(opt), always_closure=info.step_requires_closure)
            _drive(ref_params, ref, always_closure=info.step_requires_closure)
            _assert_same(params, ref_params)
            assert not torch.equal(params[0], _params(info, dtype)[0]), "the trajectory did not move"


# -- 2. state dict round trips, deepcopy, pickle ---------------------------------------------------------------
def _tensors(opt: Any) -> list[torch.Tensor]:
    seen: dict[int, torch.Tensor] = {}
    for g in opt.param_groups:
        for p in g["params"]:
            seen.setdefault(id(p), p)
    return list(seen.values())


def _via_torch_save(state: dict[str, Any]) -> dict[str, Any]:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def _check_copies(make: Callable[[list[torch.Tensor]], Any], params: list[torch.Tensor],
                  always_closure: bool = False, copyable: bool = True) -> None:
    """Mid-trajectory, a state-dict round trip, a deepcopy and a pickled copy each continue exactly as the original."""
    opt = make(params)
    _drive(params, _phased_step(opt), stop=MID, always_closure=always_closure)
    resumed_params = _clone(params)
    resumed = make(resumed_params)
    resumed.load_state_dict(_via_torch_save(opt.state_dict()))
    copies = [resumed, copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))] if copyable else [resumed]
    public = {k for k in vars(opt) if not k.startswith("_")}
    for c in copies[1:]:
        assert type(c) is type(opt) and c.phase == opt.phase and {k for k in vars(c) if not k.startswith("_")} == public
        assert repr(c) == repr(opt)
    _drive(params, _phased_step(opt), start=MID, always_closure=always_closure)
    for i, c in enumerate(copies):
        c_params = _tensors(c)
        assert all(cp is not p for cp, p in zip(c_params, params))
        _drive(c_params, _phased_step(c), start=MID, always_closure=always_closure)
        # copies are exact; a load may cast state (torch casts NAdam's float32 mu_product to the param dtype)
        _assert_same(c_params, params, exact=i > 0)


@pytest.mark.parametrize(("info", "inp"), CASES)
def test_state_dict_deepcopy_and_pickle_continue_the_trajectory(info, inp):
    for kind in ("dual", "shared"):
        _check_copies(lambda ps, kind=kind: _build(info, _kw(inp), kind, ps), _params(info),
                      always_closure=info.step_requires_closure,
                      copyable=info.optim_cls is not torch.optim.LBFGS)  # torch's LBFGS loses _params when copied


# -- 3. build_optimizer specs and BankedOptimizer, inputs as parameter-group settings ----------------------------
SPECS = ["{x}", "{x}+{x}", "adam+{x}"]


def _registry_reference(name: str, kw: dict[str, Any], spec: str, params: list[torch.Tensor],
                        lrs: dict[str, float]) -> Callable[[str, Any], Any]:
    info = get_optimizer_info(name)
    torch_cls = REGISTRY_TORCH[name]
    adam = get_optimizer_info("adam")

    def plain(phase: str, group: dict[str, Any], cls: type, defaults: dict[str, Any]) -> torch.optim.Optimizer:
        return cls([{"params": params, **_reference_kw({**defaults, **group})}], lr=lrs[phase])

    if "+" not in spec:
        one = plain("retain", kw, torch_cls, dict(info.defaults))

        def shared_step(phase: str, closure: Any) -> Any:
            if "lr" not in kw:
                one.param_groups[0]["lr"] = lrs[phase]
            return one.step(closure)
        return shared_step
    adam_forget = spec.startswith("adam+") and name != "adam"
    forget_cls, forget_defaults = (torch.optim.Adam, dict(adam.defaults)) if adam_forget else (torch_cls, info.defaults)
    refs = {"forget": plain("forget", kw, forget_cls, forget_defaults),
            "retain": plain("retain", kw, torch_cls, dict(info.defaults))}
    return lambda phase, closure: refs[phase].step(closure)


@pytest.mark.parametrize(("name", "inp"), REGISTRY_CASES)
def test_build_optimizer_and_banked_follow_group_settings(name, inp):
    lrs = {"forget": 0.05, "retain": 0.02}
    for spec in [s.format(x=name) for s in SPECS] + ["banked"]:
        kw = _kw(inp)  # group settings: each optimizer reads the keys it knows (torch semantics)
        params, ref_params = _params(), _params()
        group = {"params": params, **kw}
        if spec == "banked":
            opt = BankedOptimizer([group], name, name, forget_lr=lrs["forget"], retain_lr=lrs["retain"])
            if "lr" in kw:  # the group's lr is its forget lr; the retain lr keeps the forget:retain ratio
                ref_lrs = {"forget": kw["lr"], "retain": kw["lr"] * (lrs["retain"] / lrs["forget"])}
                kw = {k: v for k, v in kw.items() if k != "lr"}
            else:
                ref_lrs = lrs
            ref = _registry_reference(name, kw, f"{name}+{name}", ref_params, ref_lrs)
        else:
            opt = build_optimizer([group], spec, lrs["forget"], lrs["retain"])
            ref = _registry_reference(name, kw, spec, ref_params, lrs)
        _drive(params, _phased_step(opt))
        _drive(ref_params, ref)
        _assert_same(params, ref_params)
        _check_copies(lambda ps, spec=spec, kw=kw: (
            BankedOptimizer([{"params": ps, **copy.deepcopy(kw)}], name, name, forget_lr=0.05, retain_lr=0.02)
            if spec == "banked" else build_optimizer([{"params": ps, **copy.deepcopy(kw)}], spec, 0.05, 0.02)),
            _params())


# -- 4. closures ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["dual", "shared", "banked"])
def test_closure_reaches_the_phase_optimizer_and_its_loss_is_returned(kind):
    params = _params()
    if kind == "banked":
        opt: Any = BankedOptimizer(params, "adam", "sgd", forget_lr=0.1)
    elif kind == "dual":
        opt = DualOptimizer(torch.optim.LBFGS(params, lr=0.5), torch.optim.SGD(params, lr=0.1))
    else:
        opt = SharedOptimizer(torch.optim.LBFGS(params, lr=0.5))
    calls = []

    def closure() -> torch.Tensor:
        calls.append(1)
        for p in params:
            p.grad = None
        loss = _loss(params, "forget", 0)
        loss.backward()
        return loss

    opt.set_phase("forget")
    loss = opt.step(closure)
    assert torch.is_tensor(loss)
    assert len(calls) >= 1 and (kind == "banked" or len(calls) > 1)  # LBFGS evaluates it several times


def test_closure_gradients_are_masked():
    params = _params()
    opt = build_optimizer(params, "adam+sgd", 0.1)
    mask = torch.zeros_like(params[0], dtype=torch.bool)
    mask[0] = True
    opt.set_mask({params[0]: mask}, phase="forget")
    before = params[0].detach().clone()
    opt.set_phase("forget")
    _drive(params, lambda phase, closure: opt.step(closure), stop=1, always_closure=True)
    assert torch.equal(params[0][1:], before[1:]) and not torch.equal(params[0][0], before[0])
    assert torch.count_nonzero(opt.forget.state[params[0]]["exp_avg"][1:]) == 0  # the state saw masked grads only


# -- 5. hooks ------------------------------------------------------------------------------------------------------
def _hooked(kind: str, params: list[torch.Tensor]) -> Any:
    if kind == "banked":
        return BankedOptimizer(params, "adam", "sgd", forget_lr=0.1)
    return build_optimizer(params, "adam+sgd" if kind == "dual" else "sgd", 0.1)


@pytest.mark.parametrize("kind", ["dual", "shared", "banked"])
def test_step_hooks_fire_once_per_step(kind):
    params = _params()
    opt = _hooked(kind, params)
    seen: list[tuple[str, Any]] = []
    handles = [
        register_optimizer_step_pre_hook(lambda o, a, k: seen.append(("global-pre", o))),
        register_optimizer_step_post_hook(lambda o, a, k: seen.append(("global-post", o))),
        opt.register_step_pre_hook(lambda o, a, k: seen.append(("pre", o))),
        opt.register_step_post_hook(lambda o, a, k: seen.append(("post", o))),
    ]
    try:
        _drive(params, _phased_step(opt))
    finally:
        for h in handles:
            h.remove()
    assert [n for n, _ in seen] == ["global-pre", "pre", "post", "global-post"] * len(SEQ)
    assert all(o is opt for _, o in seen)


@pytest.mark.parametrize("kind", ["dual", "shared", "banked"])
def test_state_dict_hooks_are_called(kind):
    params = _params()
    opt = _hooked(kind, params)
    _drive(params, _phased_step(opt), stop=2)
    calls: list[str] = []
    opt.register_state_dict_pre_hook(lambda o: calls.append("sd-pre"))
    opt.register_state_dict_post_hook(lambda o, sd: {**sd, "tag": calls.append("sd-post") or 7})

    def load_pre(o: Any, sd: dict[str, Any]) -> dict[str, Any]:
        calls.append("load-pre")
        assert sd["tag"] == 7
        return {k: v for k, v in sd.items() if k != "tag"}

    opt.register_load_state_dict_pre_hook(load_pre)
    opt.register_load_state_dict_post_hook(lambda o: calls.append("load-post"))
    sd = opt.state_dict()
    assert sd["tag"] == 7
    opt.load_state_dict(sd)
    assert calls == ["sd-pre", "sd-post", "load-pre", "load-post"]


# -- 6. every scheduler in torch.optim.lr_scheduler --------------------------------------------------------------
SCHEDULERS: dict[str, Callable[[Any], Any]] = {
    "LambdaLR": lambda o: sched.LambdaLR(o, lambda s: 0.9**s),
    "MultiplicativeLR": lambda o: sched.MultiplicativeLR(o, lambda s: 0.95),
    "StepLR": lambda o: sched.StepLR(o, step_size=2, gamma=0.5),
    "MultiStepLR": lambda o: sched.MultiStepLR(o, milestones=[1, 3], gamma=0.5),
    "ConstantLR": lambda o: sched.ConstantLR(o, factor=0.5, total_iters=2),
    "LinearLR": lambda o: sched.LinearLR(o, start_factor=0.3, total_iters=3),
    "ExponentialLR": lambda o: sched.ExponentialLR(o, gamma=0.8),
    "SequentialLR": lambda o: sched.SequentialLR(
        o, [sched.ConstantLR(o, factor=0.5, total_iters=2), sched.ExponentialLR(o, gamma=0.9)], milestones=[2]),
    "PolynomialLR": lambda o: sched.PolynomialLR(o, total_iters=4, power=2.0),
    "CosineAnnealingLR": lambda o: sched.CosineAnnealingLR(o, T_max=3, eta_min=1e-3),
    "ChainedScheduler": lambda o: sched.ChainedScheduler(
        [sched.ConstantLR(o, factor=0.5, total_iters=2), sched.ExponentialLR(o, gamma=0.9)]),
    "ReduceLROnPlateau": lambda o: sched.ReduceLROnPlateau(o, patience=0, factor=0.5),
    "CyclicLR": lambda o: sched.CyclicLR(o, base_lr=0.01, max_lr=0.1, step_size_up=2),
    "CosineAnnealingWarmRestarts": lambda o: sched.CosineAnnealingWarmRestarts(o, T_0=2, eta_min=1e-3),
    "OneCycleLR": lambda o: sched.OneCycleLR(o, max_lr=0.1, total_steps=10),
    "SWALR": lambda o: torch.optim.swa_utils.SWALR(o, swa_lr=0.01, anneal_epochs=3),  # torch.optim.swa_utils
}
CYCLE_MOMENTUM = {"CyclicLR", "OneCycleLR"}


def test_every_scheduler_of_torch_is_covered():
    found = {n for n, c in vars(sched).items() if isinstance(c, type) and issubclass(c, sched.LRScheduler)
             and not n.startswith("_") and c is not sched.LRScheduler}
    assert found | {"SWALR"} == set(SCHEDULERS)


def _sgd(params: list[torch.Tensor], lr: float, momentum: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=1e-3)


def _adam(params: list[torch.Tensor], lr: float, beta1: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, betas=(beta1, 0.99))


SCHED_SETUPS = {  # name: (forget factory, retain factory or None for the shared baseline)
    "shared-sgd": (lambda ps: _sgd(ps, 0.05, 0.9), None),
    "dual-sgd": (lambda ps: _sgd(ps, 0.05, 0.9), lambda ps: _sgd(ps, 0.02, 0.5)),
    "dual-adam": (lambda ps: _adam(ps, 0.05, 0.9), lambda ps: _adam(ps, 0.02, 0.8)),
    "dual-adam+sgd": (lambda ps: _adam(ps, 0.05, 0.9), lambda ps: _sgd(ps, 0.02, 0.5)),
}


def _lr_state(groups: list[dict[str, Any]]) -> list[Any]:
    return [(float(g["lr"]), g.get("momentum"), g.get("betas")) for g in groups]


@pytest.mark.parametrize("setup", list(SCHED_SETUPS))
@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_scheduler_drives_each_phase_as_on_plain_optimizers(name, setup):
    make_f, make_r = SCHED_SETUPS[setup]
    params, ref_params = _params(), _params()
    opt: Any = SharedOptimizer(make_f(params)) if make_r is None else DualOptimizer(make_f(params), make_r(params))
    refs = [make_f(ref_params)] if make_r is None else [make_f(ref_params), make_r(ref_params)]
    if setup == "dual-adam+sgd" and name in CYCLE_MOMENTUM:  # a documented deviation: one key cannot cycle both
        with pytest.raises(ValueError, match="cycle_momentum"):
            SCHEDULERS[name](opt)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # plain schedulers of an optimizer not stepped yet warn
        scheduler = SCHEDULERS[name](opt)
        ref_schedulers = [SCHEDULERS[name](r) for r in refs]
        step_of = {"forget": refs[0], "retain": refs[-1]}

        def advance(s: Any) -> None:
            s.step(1.0) if isinstance(s, sched.ReduceLROnPlateau) else s.step()

        _drive(params, _phased_step(opt), metric=lambda: advance(scheduler))
        _drive(ref_params, lambda phase, closure: step_of[phase].step(closure),
               metric=lambda: [advance(s) for s in ref_schedulers])
    expected = [g for r in refs for g in r.param_groups]
    actual = opt.param_groups if make_r is not None else opt.phase_groups("forget")
    assert _lr_state(actual) == _lr_state(expected)
    _assert_same(params, ref_params)


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_scheduler_on_banked_scales_both_phases(name):
    params, ref_params = _params(), _params()
    opt = BankedOptimizer(params, "sgd", "sgd", forget_lr=0.05, retain_lr=0.02)
    ref = torch.optim.SGD(ref_params, lr=0.05)
    make = SCHEDULERS[name]
    if name in CYCLE_MOMENTUM:  # momentum lives in the per-phase dicts: a documented deviation
        with pytest.raises(ValueError, match="cycle_momentum"):
            make(opt)
        make = {"CyclicLR": lambda o: sched.CyclicLR(o, 0.01, 0.1, step_size_up=2, cycle_momentum=False),
                "OneCycleLR": lambda o: sched.OneCycleLR(o, 0.1, total_steps=10, cycle_momentum=False)}[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s, r = make(opt), make(ref)
        for k, phase in enumerate(SEQ):
            opt.set_phase(phase)
            _loss(params, phase, k).backward()
            opt.step()
            opt.zero_grad()
            ref.step()
            for x in (s, r):
                x.step(1.0) if isinstance(x, sched.ReduceLROnPlateau) else x.step()
            assert opt.lr_of("forget") == pytest.approx(ref.param_groups[0]["lr"], rel=1e-12)
            assert opt.lr_of("retain") == pytest.approx(ref.param_groups[0]["lr"] * 0.4, rel=1e-12)


# -- 7. sparse gradients, None gradients, tensor lrs ---------------------------------------------------------------
SPARSE = [info for info in OPTIM_DB if info.supports_sparse]


@pytest.mark.parametrize("spec", ["sgd", "sgd+sgd", "banked"])
def test_sparse_gradients_with_the_default_sgd(spec):
    torch.manual_seed(0)
    emb, ref_emb = torch.nn.Embedding(10, 3, sparse=True).double(), torch.nn.Embedding(10, 3, sparse=True).double()
    ref_emb.load_state_dict(emb.state_dict())
    if spec == "banked":
        opt: Any = BankedOptimizer(emb.parameters(), "sgd", "sgd", forget_lr=0.1, weight_decay=0, retain_lr=0.05)
    else:
        opt = build_optimizer(emb.parameters(), spec, 0.1, 0.05, weight_decay=0)
    refs = {"forget": torch.optim.SGD(ref_emb.parameters(), lr=0.1, momentum=0.9),
            "retain": torch.optim.SGD(ref_emb.parameters(), lr=0.05, momentum=0.9)}
    if spec == "sgd":
        refs["retain"] = refs["forget"]
    for k, phase in enumerate(SEQ):
        idx = torch.tensor([k % 4, 5, 7 - k % 3])
        for m, step in ((emb, _phased_step(opt)), (ref_emb, lambda ph, c: refs[ph].step(c))):
            m.zero_grad()
            (m(idx) ** 2).sum().backward()
            assert m.weight.grad.is_sparse
            if spec == "sgd":  # the shared baseline switches the lr per phase
                refs["forget"].param_groups[0]["lr"] = 0.1 if phase == "forget" else 0.05
            step(phase, None)
    _assert_same([emb.weight], [ref_emb.weight])


@pytest.mark.filterwarnings("ignore:Sparse invariant checks")  # raised inside torch's Adagrad
@pytest.mark.parametrize("info", SPARSE, ids=lambda i: i.name)
def test_sparse_gradients_with_optim_db_sparse_optimizers(info):
    kw, _ = info.metadata_for_sparse
    params, ref_params = [torch.randn(6, 3, dtype=torch.float64).requires_grad_()], None
    ref_params = _clone(params)
    opt = DualOptimizer(_tested_cls(info)(params, **kw), _tested_cls(info)(params, **kw))
    refs = {ph: info.optim_cls(ref_params, **_reference_kw(kw)) for ph in ("forget", "retain")}
    for k, phase in enumerate(SEQ):
        idx = torch.tensor([k % 3, 4])
        values = torch.full((2, 3), 0.5 + k, dtype=torch.float64) * (1 if phase == "forget" else -1)
        for ps, step in ((params, _phased_step(opt)), (ref_params, lambda ph, c: refs[ph].step(c))):
            ps[0].grad = torch.sparse_coo_tensor(idx[None], values, (6, 3), check_invariants=True)
            step(phase, None)
    _assert_same(params, ref_params)


def test_registry_sgd_survives_a_none_gradient_then_a_full_step():
    params, ref_params = _params(), _params()
    opt = build_optimizer(params, "sgd+sgd", 0.1)  # fused SGD by default
    assert opt.forget.param_groups[0]["fused"]
    refs = {ph: torch.optim.SGD(ref_params, lr=0.1, momentum=0.9, weight_decay=5e-4) for ph in ("forget", "retain")}
    _drive(params, _phased_step(opt))
    _drive(ref_params, lambda ph, c: refs[ph].step(c))
    _assert_same(params, ref_params)
    assert opt.forget.param_groups[0]["fused"]  # back on the fused kernel once every buffer exists


def test_shared_tensor_lr_is_owned_by_each_phase():
    params = _params()
    opt = SharedOptimizer(torch.optim.Adam(params, lr=torch.tensor(0.01), foreach=False))
    f, r = opt.phase_groups("forget")[0]["lr"], opt.phase_groups("retain")[0]["lr"]
    assert f is not r
    scheduler = phase_lambda_lr(opt, forget=lambda s: 0.5**s)
    _drive(params, _phased_step(opt), metric=scheduler.step)
    assert float(opt.phase_groups("retain")[0]["lr"]) == pytest.approx(0.01)
    assert float(opt.phase_groups("forget")[0]["lr"]) == pytest.approx(0.01 * 0.5 ** len(SEQ))


def test_build_optimizer_tensor_lr_groups_are_owned_by_each_optimizer():
    params = _params()
    opt = build_optimizer([{"params": params, "lr": torch.tensor(0.01)}], "adam+adam", 0.1, fused=False)
    assert opt.forget.param_groups[0]["lr"] is not opt.retain.param_groups[0]["lr"]


# -- 8. per-group settings -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["sgd", "sgd+sgd", "adam+sgd", "adam+adam:decouple=m", "banked"])
def test_a_group_lr_is_used_by_both_phases_in_every_spec(spec):
    w, b = _params()
    groups = [{"params": [w], "lr": 1e-5}, {"params": [b]}]
    if spec == "banked":
        opt: Any = BankedOptimizer(groups, "sgd", "sgd", forget_lr=0.1, retain_lr=0.2)
        assert [opt.lr_of(ph, i) for ph in ("forget", "retain") for i in (0, 1)] == pytest.approx(
            [1e-5, 0.1, 2e-5, 0.2])  # banked: a group lr is its forget lr, retain keeps the ratio
        return
    opt = build_optimizer(groups, spec, 0.1, 0.2)
    assert [g["lr"] for g in opt.phase_groups("forget")] == [1e-5, 0.1]
    assert [g["lr"] for g in opt.phase_groups("retain")] == [1e-5, 0.2]


def test_banked_group_settings_reach_each_phase():
    w, b = _params()
    rw, rb = _clone([w, b])
    opt = BankedOptimizer([{"params": [w], "weight_decay": 0.5}, {"params": [b], "weight_decay": 0.0,
                                                                   "retain_momentum": 0.0}],
                          "adamw", "sgd", forget_lr=0.05, retain_lr=0.02)
    assert opt.param_groups[0]["forget"]["weight_decay"] == 0.5 and "weight_decay" not in opt.param_groups[0]
    refs = {"forget": torch.optim.AdamW([{"params": [rw], "weight_decay": 0.5},
                                         {"params": [rb], "weight_decay": 0.0}], lr=0.05),
            "retain": torch.optim.SGD([{"params": [rw], "weight_decay": 0.5},
                                       {"params": [rb], "weight_decay": 0.0, "momentum": 0.0}], lr=0.02, momentum=0.9)}
    _drive([w, b], _phased_step(opt))
    _drive([rw, rb], lambda ph, c: refs[ph].step(c))
    _assert_same([w, b], [rw, rb])


@pytest.mark.parametrize("spec", ["sgd", "adam+sgd", "adamw+adam", "banked"])
def test_registry_specs_take_complex_parameters(spec):
    params, ref_params = _params(dtype=torch.complex128), _params(dtype=torch.complex128)
    if spec == "banked":
        opt: Any = BankedOptimizer(params, "adam", "sgd", forget_lr=0.05, retain_lr=0.02)
    else:
        opt = build_optimizer(params, spec, 0.05, 0.02)
    names = ("adam", "sgd") if spec == "banked" else (spec.split("+") * 2)[:2]
    refs = {ph: REGISTRY_TORCH[n](ref_params, lr=lr, **get_optimizer_info(n).defaults)
            for ph, n, lr in zip(("forget", "retain"), names, (0.05, 0.02))}
    if "+" not in spec and spec != "banked":  # one shared state, lr switched per phase
        refs["forget"] = refs["retain"]

    def ref_step(phase: str, closure: Any) -> Any:
        refs[phase].param_groups[0]["lr"] = 0.05 if phase == "forget" else 0.02
        return refs[phase].step(closure)

    _drive(params, _phased_step(opt))
    _drive(ref_params, ref_step)
    _assert_same(params, ref_params)


@pytest.mark.parametrize("spec", ["sgd", "adam+sgd", "banked"])
def test_named_parameters_are_accepted(spec):
    def make(params: Any) -> Any:
        if spec == "banked":
            return BankedOptimizer(params, "adam", "sgd", forget_lr=0.05, retain_lr=0.02)
        return build_optimizer(params, spec, 0.05, 0.02)

    params, named_params = _params(), _params()
    named = make(list(zip(["w", "b"], named_params)))
    assert all(g["param_names"] == ["w", "b"] for g in named.param_groups)
    _drive(params, _phased_step(make(params)))
    _drive(named_params, _phased_step(named))
    _assert_same(named_params, params, exact=True)


# -- 9. older state-dict formats --------------------------------------------------------------------------------------
NEWER_FLAGS = ("differentiable", "fused", "foreach", "capturable", "maximize", "decoupled_weight_decay")


def _age(group: dict[str, Any]) -> None:
    for k in NEWER_FLAGS:
        group.pop(k, None)


def _age_state(state: dict[str, Any]) -> None:
    for k, v in list(state.items()):
        if k == "step" and isinstance(v, torch.Tensor):
            state[k] = float(v)
        elif isinstance(v, dict):
            _age_state(v)


@pytest.mark.parametrize("kind", ["dual", "shared", "banked"])
def test_older_state_dicts_load_and_continue(kind):
    def make(ps: list[torch.Tensor]) -> Any:
        if kind == "banked":
            return BankedOptimizer(ps, "adam", "sgd", forget_lr=0.05, retain_lr=0.02)
        return build_optimizer(ps, "adam+sgd" if kind == "dual" else "adam", 0.05, 0.02)

    params = _params()
    opt = make(params)
    _drive(params, _phased_step(opt), stop=MID)
    sd = copy.deepcopy(opt.state_dict())
    inner = [sd] if kind == "banked" else [sd["forget"], sd["retain"]] if kind == "dual" else [sd["optimizer"]]
    for d in inner:
        for g in d["param_groups"]:
            _age(g)
            for ph in ("forget", "retain"):
                if isinstance(g.get(ph), dict):
                    _age(g[ph])
        _age_state(d["state"])
    assert not any(isinstance(v, torch.Tensor) for d in inner for s in d["state"].values() for v in (
        [s.get("step")] + [b.get("step") for b in s.values() if isinstance(b, dict)]))
    old_params = _clone(params)
    old = make(old_params)
    old.load_state_dict(sd)
    _drive(params, _phased_step(opt), start=MID)
    _drive(old_params, _phased_step(old), start=MID)
    _assert_same(old_params, params)


# -- 10. the lean optimizers (bf16 state, stochastic rounding) -------------------------------------------------------
@pytest.mark.parametrize("spec", ["adam-bf16+sgd-bf16", "adamw-bf16", "banked"])
def test_lean_optimizers_copy_their_rounding_stream(spec):
    def make(ps: list[torch.Tensor]) -> Any:
        if spec == "banked":
            return BankedOptimizer(ps, "adam-bf16", "sgd-bf16", forget_lr=0.05, retain_lr=0.02)
        return build_optimizer(ps, spec, 0.05, 0.02)

    _check_copies(make, _params(dtype=torch.float32))
    lean = make(_params(dtype=torch.float32))
    kernels = [lean.forget, lean.retain] if spec.startswith("adam-") else [lean.optimizer] if spec != "banked" \
        else list(lean._kernels.values())
    for k in kernels:
        assert copy.deepcopy(k).rounder.generator.get_state().equal(k.rounder.generator.get_state())
