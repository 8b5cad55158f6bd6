"""Optimizers torch does not ship in the form we need: Lion, Muon for any tensor shape,
and the paper's Table-17 ablation Adam whose moments are shared or decoupled per phase."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.optim import Optimizer


def run_closure(closure: Any) -> Any:
    """Evaluate an optimizer ``step(closure)``'s closure with gradients enabled (None without one)."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


#: torch's hook registries; ``Optimizer.__getstate__`` leaves them out of pickles and copies (so do we).
_HOOK_ATTRS = frozenset({
    "_optimizer_step_pre_hooks", "_optimizer_step_post_hooks", "_optimizer_state_dict_pre_hooks",
    "_optimizer_state_dict_post_hooks", "_optimizer_load_state_dict_pre_hooks", "_optimizer_load_state_dict_post_hooks",
})


class FullStateOptimizer(Optimizer):
    """An ``Optimizer`` whose pickles and ``copy.deepcopy`` keep every attribute.

    torch's ``Optimizer.__getstate__`` keeps only ``defaults``, ``state`` and ``param_groups``; an
    optimizer with more (the phase, the two inner optimizers, a rounding stream) would come back broken.
    Hooks are left out, as torch does; ``Optimizer.__setstate__`` re-creates them empty.
    """

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in _HOOK_ATTRS}


def step_without_global_hooks(opt: Optimizer, closure: Any = None) -> Any:
    """``opt.step(closure)`` without torch's *global* step hooks (its own hooks still run).

    The phased optimizers delegate to inner optimizers; the outer ``step`` already fired the hooks
    registered with ``torch.optim.optimizer.register_optimizer_step_pre_hook``/``post_hook``, so they
    fire once per step. An inner optimizer whose ``step`` was replaced on the instance (e.g. by an LR
    scheduler built on it directly) is called as is.
    """
    raw = getattr(type(opt).step, "__wrapped__", None)
    if raw is None or not getattr(type(opt).step, "hooked", False) or "step" in vars(opt):
        return opt.step(closure)
    args: tuple[Any, ...] = (opt, closure)
    kwargs: dict[str, Any] = {}
    for hook in list(opt._optimizer_step_pre_hooks.values()):
        result = hook(opt, args, kwargs)
        if result is not None:
            args, kwargs = result
    out = raw(*args, **kwargs)
    opt._optimizer_step_code()
    for hook in list(opt._optimizer_step_post_hooks.values()):
        hook(opt, args, kwargs)
    return out


class FastSGD(torch.optim.SGD):
    """``torch.optim.SGD`` that uses its fused kernel only on the steps that kernel can do.

    With ``fused=True`` each step falls back to the foreach kernel when the fused one would fail:
    sparse gradients (``Embedding(sparse=True)``), and -- a torch 2.13 fused-SGD bug -- a step where only
    some parameters have a momentum buffer (after a step in which some gradients were None). The
    arithmetic is torch's SGD either way.
    """

    def _init_group(self, group: dict[str, Any], params: list[Any], grads: list[Any],
                    momentum_buffer_list: list[Any]) -> bool:
        has_sparse_grad = super()._init_group(group, params, grads, momentum_buffer_list)
        if group.setdefault("fused_when_possible", bool(group["fused"])):
            present = [b is not None for b in momentum_buffer_list]
            partial = group["momentum"] != 0 and any(present) and not all(present)
            group["fused"] = not (has_sparse_grad or partial)
            group["foreach"] = not group["fused"]
        return has_sparse_grad


def _check(name: str, value: float, low: float = 0.0, high: float | None = None) -> None:
    if not value >= low or (high is not None and not value < high):
        raise ValueError(f"invalid {name}: {value}")


class Lion(Optimizer):
    """Lion (Chen et al. 2023): sign of an interpolated momentum, decoupled weight decay."""

    def __init__(self, params: Any, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0) -> None:
        _check("lr", lr, 1e-30)
        _check("beta1", betas[0], 0.0, 1.0)
        _check("beta2", betas[1], 0.0, 1.0)
        _check("weight_decay", weight_decay)
        super().__init__(params, {"lr": lr, "betas": betas, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # noqa: D102
        loss = run_closure(closure)
        for group in self.param_groups:
            lr, (b1, b2), wd = group["lr"], group["betas"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "exp_avg" not in state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                p.mul_(1 - lr * wd)
                p.add_(torch.sign(m.mul(b1).add_(p.grad, alpha=1 - b1)), alpha=-lr)
                m.mul_(b2).add_(p.grad, alpha=1 - b2)
        return loss


def _orthogonalize(g: torch.Tensor, steps: int) -> torch.Tensor:
    """Quintic Newton-Schulz iteration towards the nearest semi-orthogonal matrix (Muon)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g / (g.norm() + 1e-7)
    transposed = x.shape[0] > x.shape[1]
    if transposed:
        x = x.T
    for _ in range(steps):
        s = x @ x.T
        x = a * x + (b * s + c * s @ s) @ x
    return x.T if transposed else x


class Muon(Optimizer):
    """Muon for every parameter shape.

    Tensors with >= 2 dims are flattened to (out, rest), their Nesterov momentum is
    orthogonalized (Newton-Schulz) and scaled to AdamW-like RMS (0.2 * sqrt(max(out, rest)));
    vectors (biases, norms) get an AdamW update, as Muon's authors recommend.
    """

    def __init__(self, params: Any, lr: float = 2e-2, momentum: float = 0.95, weight_decay: float = 0.0,
                 ns_steps: int = 5, betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8) -> None:
        _check("lr", lr, 1e-30)
        _check("momentum", momentum, 0.0, 1.0)
        _check("weight_decay", weight_decay)
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                                  "ns_steps": ns_steps, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # noqa: D102
        loss = run_closure(closure)
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g, state = p.grad, self.state[p]
                p.mul_(1 - lr * wd)
                if p.ndim >= 2:
                    buf = state.setdefault("momentum_buffer", torch.zeros_like(p))
                    buf.mul_(group["momentum"]).add_(g)
                    update = g.add(buf, alpha=group["momentum"]).reshape(p.shape[0], -1)
                    o = _orthogonalize(update.float(), group["ns_steps"]).to(p.dtype)
                    scale = 0.2 * math.sqrt(max(o.shape))
                    p.add_(o.reshape(p.shape), alpha=-lr * scale)
                else:
                    b1, b2 = group["betas"]
                    state["step"] = state.get("step", 0) + 1
                    m = state.setdefault("exp_avg", torch.zeros_like(p))
                    v = state.setdefault("exp_avg_sq", torch.zeros_like(p))
                    m.lerp_(g, 1 - b1)
                    v.mul_(b2).addcmul_(g, g, value=1 - b2)
                    t = state["step"]
                    denom = (v / (1 - b2**t)).sqrt_().add_(group["eps"])
                    p.addcdiv_(m, denom, value=-lr / (1 - b1**t))
        return loss


class PartiallySharedAdam(FullStateOptimizer):
    """Adam whose first (``m``) and/or second (``v``) moments are kept per phase.

    The paper's Table-17 ablation. ``decouple`` names the moments kept separately for
    the forget and retain phases: ``"mv"`` (= DualOptim with two Adams), ``"m"``, ``"v"``
    or ``""`` (= one shared Adam). Bias correction counts the updates each moment
    buffer has received. The active phase is set by the wrapping
    :class:`~dualoptim.optim.SharedOptimizer` through ``current_phase`` -- the
    reference code read the forget buffers in retain steps; here each decoupled moment
    is only ever read and written by its own phase (tested).
    """

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, decouple: str = "mv") -> None:
        if set(decouple) - {"m", "v"}:
            raise ValueError(f"decouple must be a subset of 'mv', got {decouple!r}")
        _check("lr", lr, 1e-30)
        _check("weight_decay", weight_decay)
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay})
        self.decouple = decouple
        self.current_phase: str | None = None

    def _key(self, moment: str) -> str:
        if moment not in self.decouple:
            return moment
        if self.current_phase is None:
            raise RuntimeError("PartiallySharedAdam needs a phase: wrap it in SharedOptimizer")
        return f"{moment}_{self.current_phase}"

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # noqa: D102
        loss = run_closure(closure)
        km, kv = self._key("m"), self._key("v")
        for group in self.param_groups:
            (b1, b2), lr = group["betas"], group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g, state = p.grad, self.state[p]
                if group["weight_decay"]:
                    g = g.add(p, alpha=group["weight_decay"])
                m = state.setdefault(km, torch.zeros_like(p))
                v = state.setdefault(kv, torch.zeros_like(p))
                tm = state[f"step_{km}"] = state.get(f"step_{km}", 0) + 1
                tv = state[f"step_{kv}"] = state.get(f"step_{kv}", 0) + 1
                m.lerp_(g, 1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = (v.sqrt() / math.sqrt(1 - b2**tv)).add_(group["eps"])
                p.addcdiv_(m, denom, value=-lr / (1 - b1**tm))
        return loss
