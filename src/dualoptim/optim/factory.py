"""Optimizers by name: ``build_optimizer(params, "adam+sgd", ...)``.

A spec is either one name (``"sgd"``: a :class:`SharedOptimizer`, the baseline) or
``"<forget>+<retain>"`` (``"adam+sgd"``: a :class:`DualOptimizer`). The Table-17
ablation is ``"adam+adam:decouple=m"`` (or ``v``, ``mv``, ``none``). Registering one
:class:`OptimizerInfo` makes a new optimizer available in every spec.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from ..registry import Registry
from .base import check_lr, is_dtensor
from .lean import SGDBF16, AdamBF16, AdamWBF16
from .lion import Lion
from .muon import Muon
from .partially_shared_adam import PartiallySharedAdam
from .phased import PHASES, DualOptimizer, PhasedOptimizer, SharedOptimizer, own_value
from .sgd import FastSGD
from .spec import OptimSpec


@dataclass(frozen=True)
class OptimizerInfo:
    """A registered optimizer.

    Attributes:
        name: lower-case name used in specs.
        cls: the optimizer class, called as ``cls(params, lr=..., **options)``.
        defaults: the paper's defaults for this optimizer (overridable options).
        options: option names it accepts besides ``lr``.
        fused: whether ``fused=True`` (and ``foreach``) kernels exist for it in torch.
        description: one line for ``list_optimizers``/help output.
    """

    name: str
    cls: Callable[..., Optimizer]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    options: frozenset[str] = frozenset()
    fused: bool = False
    description: str = ""

    def kwargs(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Its defaults updated with the ``options`` it accepts (the others are for another optimizer)."""
        return {**self.defaults, **{k: v for k, v in options.items() if k in self.options}}


OPTIMIZERS: Registry[OptimizerInfo] = Registry("optimizer")
list_optimizers = OPTIMIZERS.names  # names usable in a spec (each alone, or two joined by "+")
get_optimizer_info = OPTIMIZERS.get  # the entry of a name; ConfigError (a ValueError) listing valid names if unknown


def register_optimizer(info: OptimizerInfo) -> OptimizerInfo:
    """Add ``info`` to the registry (names are lower case and unique)."""
    return OPTIMIZERS.add(info.name, info)


register_optimizer(OptimizerInfo(
    "sgd", FastSGD, {"momentum": 0.9, "weight_decay": 5e-4},
    frozenset({"momentum", "weight_decay", "nesterov", "dampening"}), fused=True,
    description="SGD with momentum 0.9, weight decay 5e-4 (the paper's pre-training optimizer)"))
register_optimizer(OptimizerInfo(
    "adam", torch.optim.Adam, {}, frozenset({"betas", "eps", "weight_decay", "amsgrad"}), fused=True,
    description="Adam (L2 weight decay, default 0)"))
register_optimizer(OptimizerInfo(
    "adamw", torch.optim.AdamW, {"weight_decay": 0.01}, frozenset({"betas", "eps", "weight_decay", "amsgrad"}),
    fused=True, description="AdamW, decoupled weight decay 0.01"))
register_optimizer(OptimizerInfo(
    "lion", Lion, {}, frozenset({"betas", "weight_decay"}), description="Lion (sign momentum)"))
register_optimizer(OptimizerInfo(
    "muon", Muon, {}, frozenset({"momentum", "weight_decay", "ns_steps", "betas", "eps"}),
    description="Muon (orthogonalized momentum; AdamW for vectors)"))
register_optimizer(OptimizerInfo(
    "adam-bf16", AdamBF16, {}, frozenset({"betas", "eps", "weight_decay", "seed"}),
    description="Adam, moments in bf16 with stochastic rounding (4 bytes/param of state)"))
register_optimizer(OptimizerInfo(
    "adamw-bf16", AdamWBF16, {"weight_decay": 0.01}, frozenset({"betas", "eps", "weight_decay", "seed"}),
    description="AdamW, moments in bf16 with stochastic rounding (4 bytes/param of state)"))
register_optimizer(OptimizerInfo(
    "sgd-bf16", SGDBF16, {"momentum": 0.9, "weight_decay": 5e-4},
    frozenset({"momentum", "weight_decay", "nesterov", "dampening", "seed"}),
    description="SGD momentum 0.9, wd 5e-4, momentum buffer in bf16 with stochastic rounding (2 bytes/param)"))

def phase_options(options: Mapping[str, Any], infos: Iterable[OptimizerInfo], spec: str
                  ) -> dict[str, dict[str, Any]]:
    """``options`` per phase: a plain key goes to both phases, ``forget_<key>``/``retain_<key>`` to one.

    Raises:
        ValueError: an option that none of ``infos`` (the optimizers of ``spec``) accepts.
    """
    accepted = set().union(*(i.options for i in infos))
    unknown = {k.removeprefix("forget_").removeprefix("retain_") for k in options} - accepted
    if unknown:
        raise ValueError(f"option(s) {sorted(unknown)} not accepted by {spec!r}; accepted: {sorted(accepted)}")
    plain = {k: v for k, v in options.items() if not k.startswith(("forget_", "retain_"))}
    return {ph: {**plain, **{k.removeprefix(ph + "_"): v for k, v in options.items() if k.startswith(ph + "_")}}
            for ph in PHASES}


def _fast_kwargs(info: OptimizerInfo, params: list[Any], fused: bool | None) -> dict[str, bool]:
    """``fused=True`` where torch has the kernel for these tensors, else ``foreach=True``."""
    if not info.fused or fused is False:
        return {"foreach": True} if info.fused else {}
    items = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]
    tensors = [p[1] if isinstance(p, tuple) else p for p in items]  # torch accepts named_parameters() too
    # FSDP2 parameters are DTensors; torch has no DTensor sharding rule for fused SGD (2.13), foreach works.
    ok = all(t.is_floating_point() and t.device.type in ("cpu", "cuda") and not is_dtensor(t) for t in tensors)
    if fused is True and not ok:
        raise ValueError("fused=True needs floating-point, non-DTensor parameters on CPU or CUDA")
    return {"fused": True} if ok else {"foreach": True}


def _params_copy(params: list[Any]) -> list[Any]:
    # Param-group dicts are copied so the two optimizers own separate hyper-parameters (tensor lrs too).
    return [{k: v if k == "params" else own_value(v) for k, v in g.items()} if isinstance(g, dict) else g
            for g in params]


def _shared(inner: Optimizer, params: list[Any], forget_lr: float, retain_lr: float) -> SharedOptimizer:
    # A group's own "lr" is used by both phases, as in the DualOptim specs (the optimizers' lr= is only the default).
    opt = SharedOptimizer(inner)
    groups = params if isinstance(params[0], dict) else [{}]  # tensors (or named tensors) make one group
    for phase, lr in (("forget", forget_lr), ("retain", retain_lr)):
        for group, view in zip(groups, opt.phase_groups(phase), strict=True):
            if "lr" not in group:
                view["lr"] = lr
    return opt


def _make(name: str, params: list[Any], lr: float, options: Mapping[str, Any], fused: bool | None) -> Optimizer:
    info = get_optimizer_info(name)
    return info.cls(_params_copy(params), lr=lr, **info.kwargs(options), **_fast_kwargs(info, params, fused))


def build_optimizer(params: Iterable[Any], spec: str | OptimSpec, forget_lr: float, retain_lr: float | None = None, *,
                    fused: bool | None = None, **options: Any) -> PhasedOptimizer:
    """Build the phased optimizer named by ``spec``.

    Args:
        params: parameters or parameter-group dicts (as for any torch optimizer). A group's own
            settings win in every spec: its ``lr`` is used by both phases, other keys reach each
            optimizer that reads them; tensor values are copied per optimizer/phase.
        spec: ``"sgd"`` (shared state) or ``"adam+sgd"``-style ``forget+retain`` (DualOptim);
            ``"adam+adam:decouple=m|v|mv|none"`` for the Table-17 moment ablation.
        forget_lr: learning rate of forget steps.
        retain_lr: learning rate of retain steps (default: ``forget_lr``).
        fused: ``None`` uses fused kernels where torch has them for these tensors
            (else foreach); ``False`` forces foreach; ``True`` requires fused.
        **options: hyper-parameters (``momentum``, ``weight_decay``, ``betas`` ...), each
            given to every optimizer of the spec that accepts it; prefix with
            ``forget_``/``retain_`` to target one phase (``forget_weight_decay=0``).

    Returns:
        A :class:`DualOptimizer` or :class:`SharedOptimizer`.
    """
    params = list(params)
    if not params:
        raise ValueError("build_optimizer got an empty parameter list")
    retain_lr = forget_lr if retain_lr is None else retain_lr
    check_lr("forget_lr", forget_lr)
    check_lr("retain_lr", retain_lr)
    parsed = OptimSpec.parse(spec)
    names = [parsed.forget] if parsed.shared_state else [parsed.forget, parsed.retain]
    phase_opts = phase_options(options, [get_optimizer_info(n) for n in names], str(parsed))

    if parsed.decouple is not None:
        kwargs = {k: v for k, v in phase_opts["retain"].items() if k in {"betas", "eps", "weight_decay"}}
        inner = PartiallySharedAdam(_params_copy(params), lr=retain_lr, decouple=parsed.decouple, **kwargs)
        return _shared(inner, params, forget_lr, retain_lr)
    if len(names) == 1:
        inner = _make(names[0], params, retain_lr, phase_opts["retain"], fused)
        return _shared(inner, params, forget_lr, retain_lr)
    return DualOptimizer(forget=_make(names[0], params, forget_lr, phase_opts["forget"], fused),
                         retain=_make(names[1], params, retain_lr, phase_opts["retain"], fused))


def phase_lambda_lr(optimizer: PhasedOptimizer, forget: Callable[[int], float] | None = None,
                    retain: Callable[[int], float] | None = None) -> LambdaLR:
    """A ``LambdaLR`` whose factor depends on each group's phase (constant where ``None``).

    Works for both :class:`DualOptimizer` and :class:`SharedOptimizer`, e.g. a cosine on
    the forget lr only: ``phase_lambda_lr(opt, forget=cosine_factor(total_steps))``.
    """
    if not isinstance(optimizer, PhasedOptimizer):
        raise ValueError("phase_lambda_lr needs a DualOptimizer or SharedOptimizer")
    fns = {"forget": forget or (lambda _: 1.0), "retain": retain or (lambda _: 1.0)}
    return LambdaLR(optimizer, [fns[g["phase"]] for g in optimizer.param_groups])


def cosine_factor(total_steps: int, final: float = 0.0) -> Callable[[int], float]:
    """lr factor 1 -> ``final`` along a half cosine over ``total_steps`` scheduler steps."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0, got {total_steps}")

    def factor(step: int) -> float:
        t = min(step, total_steps) / total_steps
        return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * t))

    return factor
