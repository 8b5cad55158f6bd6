"""Memory-lean optimizers: Adam / AdamW / SGD whose state is stored in bfloat16.

DualOptim keeps two optimizer states. With Adam(F) + SGD(R) in fp32 that is 12 bytes
per parameter (Adam m, v: 8; SGD momentum: 4) against 8 for one Adam -- the paper's
1.44x memory. Storing the states in bf16 halves them: ``adam-bf16+sgd-bf16`` needs
6 bytes per parameter, less than a single fp32 Adam.

Why stochastic rounding: bf16 keeps 8 significant bits, so one ulp is 2^-7 of the value.
Adam's second moment decays by ``beta2 = 0.999`` per step, a relative change of 1e-3,
far below half an ulp: with round-to-nearest ``v`` never decays (and small updates
to ``m`` vanish). Stochastic rounding (SR) rounds up with probability equal to the
fractional position between the two neighbouring bf16 values, so the stored value is
unbiased, ``E[SR(x)] = x``, and small updates accumulate correctly in expectation.

Each step the state is widened to fp32, updated exactly as torch's Adam/SGD do, and
written back with SR. The update itself uses the fp32 values (before rounding).

SR noise: adding a uniform integer in ``[0, 2^16)`` to the fp32 bit pattern and
truncating the low 16 bits is exact SR to bf16 (sign-magnitude format: the add moves
the magnitude up, truncation moves it towards zero). Drawing 2^16-range random
numbers per element per step costs more than the Adam update itself on CPU, so the
noise comes from a random *permutation* of ``0 .. 2^16-1`` read at a fresh uniform
random offset per tensor and step. For one element the noise at a step is then exactly
uniform on ``[0, 2^16)`` and independent across steps (independent offsets), which is
all unbiasedness needs; elements 2^16 apart in one tensor share the noise of that step.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import torch
from torch.optim import Optimizer

from .base import FullStateOptimizer, check_value, is_dtensor, run_closure

_BITS = 1 << 16


class StochasticRounder:
    """Rounds fp32 tensors to bf16 stochastically (unbiased), reproducibly from ``seed``."""

    def __init__(self, seed: int = 0) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        self._pools: dict[torch.device, torch.Tensor] = {}
        self._perm = torch.randperm(_BITS, generator=self.generator, dtype=torch.int32)

    def _pool(self, device: torch.device) -> torch.Tensor:
        if device not in self._pools:  # the permutation twice, so any offset < 2^16 gives a 2^16-long slice
            self._pools[device] = torch.cat([self._perm, self._perm]).to(device)
        return self._pools[device]

    def round_(self, dst: torch.Tensor, src: torch.Tensor) -> None:
        """``dst`` (bf16) <- SR(``src``); ``src`` (contiguous fp32) is used as scratch and overwritten."""
        if src.dtype != torch.float32 or not src.is_contiguous():
            raise ValueError("stochastic rounding needs a contiguous float32 source")
        bits = src.view(-1).view(torch.int32)
        n, pool = bits.numel(), self._pool(src.device)
        off = int(torch.randint(0, _BITS, (1,), generator=self.generator))
        full = n // _BITS * _BITS
        if full:
            bits[:full].view(-1, _BITS).add_(pool[off:off + _BITS])
        if n > full:
            bits[full:].add_(pool[off:off + n - full])
        if sys.byteorder == "little" and dst.is_contiguous():
            # the bf16 is the high half of each fp32: copy those int16s, no rounding pass needed
            dst.view(-1).view(torch.int16).copy_(bits.view(torch.int16).view(-1, 2)[:, 1])
        else:
            bits.bitwise_and_(-_BITS)  # clear the low 16 bits: the value is now exactly a bf16
            dst.copy_(src)

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "perm": self._perm.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self._perm = state["perm"].to(torch.int32)
        self._pools.clear()


class _LeanOptimizer(FullStateOptimizer):
    """Shared plumbing: the rounder (saved in ``state_dict``) and fp32 views of bf16 state."""

    def __init__(self, params: Any, defaults: dict[str, Any], seed: int) -> None:
        super().__init__(params, defaults)
        self.rounder = StochasticRounder(seed)

    def state_dict(self) -> dict[str, Any]:  # noqa: D102
        sd = super().state_dict()
        sd["rounder"] = self.rounder.state_dict()
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # noqa: D102
        state_dict = dict(state_dict)
        rounder = state_dict.pop("rounder", None)
        super().load_state_dict(state_dict)
        for st in self.state.values():  # torch casts floating state to the param dtype: keep it bf16
            for k, v in st.items():
                if isinstance(v, torch.Tensor) and v.is_floating_point() and k != "step":
                    st[k] = v.to(torch.bfloat16)
        if rounder is not None:
            self.rounder.load_state_dict(rounder)

    def _store(self, dst: torch.Tensor, value: torch.Tensor) -> None:
        self.rounder.round_(dst, value)


class AdamBF16(_LeanOptimizer):
    """Adam (``decoupled=False``, L2 weight decay) or AdamW with both moments stored in bf16.

    4 bytes of state per parameter instead of 8. Arguments as :class:`torch.optim.Adam`;
    ``seed`` seeds the stochastic rounding.
    """

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, decoupled: bool = False, seed: int = 0) -> None:
        check_value("lr", lr, 1e-30)
        check_value("beta1", betas[0], 0.0, 1.0)
        check_value("beta2", betas[1], 0.0, 1.0)
        check_value("eps", eps)
        check_value("weight_decay", weight_decay)
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
                                  "decoupled": decoupled}, seed)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # noqa: D102
        loss = run_closure(closure)
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                p, grad = _local(param), _local(param.grad)  # FSDP2: update this rank's shard in place
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, dtype=torch.bfloat16, memory_format=torch.contiguous_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.bfloat16,
                                                           memory_format=torch.contiguous_format)
                state["step"] += 1
                if _fusable(p, grad):
                    self._fused_update(p, grad, state, group)
                    continue
                t = state["step"]
                g = grad.float()
                if wd and group["decoupled"]:
                    p.mul_(1 - lr * wd)
                elif wd:
                    g = g.add(p.float(), alpha=wd)
                m = state["exp_avg"].float().lerp_(g, 1 - b1)
                v = state["exp_avg_sq"].float().mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = v.sqrt().div_(math.sqrt(1 - b2**t)).add_(eps)
                p.add_(m.div(denom).mul_(-lr / (1 - b1**t)).to(p.dtype))
                self._store(state["exp_avg"], m)
                self._store(state["exp_avg_sq"], v)
        return loss

    def _fused_update(self, p: torch.Tensor, grad: torch.Tensor, state: dict[str, Any], group: dict[str, Any]
                      ) -> None:
        """torch's own fused Adam(W) kernel on fp32 copies of the moments (one tensor at a time, so the
        fp32 copies cost 8 bytes x the largest tensor, not x the model), then SR back to bf16."""
        m = torch.empty_like(p, dtype=torch.float32).copy_(state["exp_avg"])  # p's layout: the kernel needs it
        v = torch.empty_like(p, dtype=torch.float32).copy_(state["exp_avg_sq"])
        step = torch.tensor(float(state["step"]), device=p.device)
        kernel = torch._fused_adamw_ if group["decoupled"] else torch._fused_adam_
        (b1, b2) = group["betas"]
        kernel([p], [grad], [m], [v], [], [step], lr=group["lr"], beta1=b1, beta2=b2,
               weight_decay=group["weight_decay"], eps=group["eps"], amsgrad=False, maximize=False)
        self._store(state["exp_avg"], m.contiguous())
        self._store(state["exp_avg_sq"], v.contiguous())


def _local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor (an FSDP2 parameter or gradient; in-place updates reach the DTensor), else
    ``t``. The bf16 state is kept per shard, so every rank holds only its part of it."""
    return t.to_local() if is_dtensor(t) else t


def _fusable(p: torch.Tensor, grad: torch.Tensor) -> bool:
    """Whether torch's fused Adam kernel applies: fp32 dense (local) param and grad on CPU/CUDA."""
    return (p.dtype == torch.float32 and grad.dtype == torch.float32 and p.device.type in ("cpu", "cuda")
            and not grad.is_sparse)


class AdamWBF16(AdamBF16):
    """AdamW (decoupled weight decay, default 0.01) with both moments stored in bf16."""

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.01, seed: int = 0) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, decoupled=True, seed=seed)


class SGDBF16(_LeanOptimizer):
    """SGD with its momentum buffer stored in bf16 (2 bytes per parameter instead of 4).

    Same update as :class:`torch.optim.SGD` (``dampening``, ``nesterov``, L2 weight decay);
    ``seed`` seeds the stochastic rounding.
    """

    def __init__(self, params: Any, lr: float = 1e-2, momentum: float = 0.9, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, seed: int = 0) -> None:
        check_value("lr", lr, 1e-30)
        check_value("momentum", momentum, 0.0, 1.0)
        check_value("weight_decay", weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov needs momentum > 0 and dampening = 0")
        super().__init__(params, {"lr": lr, "momentum": momentum, "dampening": dampening,
                                  "weight_decay": weight_decay, "nesterov": nesterov}, seed)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # noqa: D102
        loss = run_closure(closure)
        for group in self.param_groups:
            lr, mu, damp, wd = group["lr"], group["momentum"], group["dampening"], group["weight_decay"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                p = _local(param)
                g = _local(param.grad).float()
                if wd:
                    g = g.add(p.float(), alpha=wd)
                if not mu:
                    p.add_(g.to(p.dtype), alpha=-lr)
                    continue
                state = self.state[param]
                if "momentum_buffer" not in state:  # as torch's SGD: the first buffer is the gradient
                    buf = g.clone(memory_format=torch.contiguous_format)
                    state["momentum_buffer"] = torch.empty_like(buf, dtype=torch.bfloat16)
                else:
                    buf = state["momentum_buffer"].float().mul_(mu).add_(g, alpha=1 - damp)
                p.add_((g.add(buf, alpha=mu) if group["nesterov"] else buf).to(p.dtype), alpha=-lr)
                self._store(state["momentum_buffer"], buf)  # after the update: rounding overwrites buf
        return loss


def state_bytes(optimizer: Optimizer) -> int:
    """Bytes held in tensors of an optimizer's state (both banks of phased/banked optimizers)."""
    seen: set[int] = set()
    total = 0

    def visit(obj: Any) -> None:
        nonlocal total
        if isinstance(obj, torch.Tensor):
            if id(obj) not in seen and obj.dim() > 0:
                seen.add(id(obj))
                total += obj.numel() * obj.element_size()
        elif isinstance(obj, dict):
            for v in obj.values():
                visit(v)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                visit(v)

    inner = [getattr(optimizer, n) for n in ("forget", "retain", "optimizer") if isinstance(
        getattr(optimizer, n, None), Optimizer)]
    for opt in inner or [optimizer]:
        visit(dict(opt.state))
    return total
