"""LLM unlearning loop: three update schemes, gradient accumulation and several processes.

The run is a *plan* of optimizer steps built from the seed before training starts; each
step has a phase (``forget``/``retain``/``joint``) and a global batch of example indices.
A step's global batch is sharded over ranks, each shard split into ``grad_accum``
micro-batches, so every micro-batch of one optimizer step has that step's phase on every
rank: the phase follows the batch (the reference code switched by a global step counter,
which drifts out of phase under accumulation/sharding: bug 4).

Schemes (``UnlearnConfig.scheme``):

* ``joint``     -- one optimizer, one step per pair of batches on ``c_f L_f + c_r L_r``;
* ``alternate`` -- separate forget and retain steps, one shared optimizer state;
* ``dual``      -- separate steps, DualOptim (two optimizer states).

Per-sample losses are summed and divided by the global batch size, and gradients are
summed over ranks (all-reduce), so N processes x k accumulation steps give the gradient of
one process with the same global batch.
"""

from __future__ import annotations

import copy
import math
import os
import random
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from tqdm import tqdm

from ..errors import ConfigError, DivergenceError
from ..optim import build_optimizer
from .methods import DEFAULT_COEFS, get_loss
from .tokenizer import encode_qa

SCHEMES = ("joint", "alternate", "dual")


@dataclass(frozen=True)
class UnlearnConfig:
    """One unlearning run.

    Attributes:
        method: ``"<forget>+<retain>"`` loss names, e.g. ``"me+gd"``, ``"idk+ap"``.
        scheme: ``joint`` | ``alternate`` | ``dual``.
        optimizer: optimizer spec (default: ``adamw`` for joint/alternate, ``adamw+adamw`` for dual,
            i.e. Adam for forget and the pre-training optimizer (AdamW) for retain).
        epochs: passes over the forget set.
        batch_size: global batch size (per optimizer step, all ranks and micro-batches together).
        grad_accum: micro-batches per optimizer step and rank.
        forget_lr / retain_lr: step sizes (joint uses ``forget_lr``).
        c_f / c_r: loss coefficients (default: the paper's per method, else 1.0).
        beta: NPO/DPO/AP temperature.
        max_grad_norm: gradient clipping (0 = off).
        seed: plan seed (batches, retain sampling, refusal choice).
    """

    method: str = "me+gd"
    scheme: str = "dual"
    optimizer: str | None = None
    epochs: int = 5
    batch_size: int = 16
    grad_accum: int = 1
    forget_lr: float = 1e-4
    retain_lr: float | None = None
    c_f: float | None = None
    c_r: float | None = None
    beta: float = 0.1
    max_grad_norm: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ConfigError(f"unknown scheme {self.scheme!r}; valid: {', '.join(SCHEMES)}")
        forget, sep, retain = self.method.lower().partition("+")
        if not sep:
            raise ConfigError(f"method must be '<forget>+<retain>' (e.g. me+gd), got {self.method!r}")
        get_loss("forget", forget)
        get_loss("retain", retain)
        if self.epochs <= 0 or self.batch_size <= 0 or self.grad_accum <= 0:
            raise ConfigError("epochs, batch_size and grad_accum must be > 0")
        if not (self.forget_lr > 0 and (self.retain_lr is None or self.retain_lr > 0)):
            raise ConfigError("learning rates must be > 0")

    @property
    def spec(self) -> str:
        """The optimizer spec actually used."""
        return self.optimizer or ("adamw+adamw" if self.scheme == "dual" else "adamw")

    @property
    def coefs(self) -> tuple[float, float]:
        """``(c_f, c_r)``."""
        cf, cr = DEFAULT_COEFS.get(self.method.lower(), (1.0, 1.0))
        return (self.c_f if self.c_f is not None else cf, self.c_r if self.c_r is not None else cr)


@dataclass(frozen=True)
class Step:
    """One optimizer step of the plan: its phase and global batch indices."""

    phase: str  # "forget" | "retain" | "joint"
    forget: tuple[int, ...] = ()
    retain: tuple[int, ...] = ()


def make_plan(n_forget: int, n_retain: int, cfg: UnlearnConfig) -> list[Step]:
    """The whole run's steps, a pure function of sizes and config (identical on every rank).

    Each epoch walks the forget set in shuffled global batches; each forget batch is paired
    with the next retain batch of a shuffled walk through the retain set. ``joint`` makes one
    step per pair, ``alternate``/``dual`` a forget step followed by a retain step.
    """
    rng = random.Random(cfg.seed)
    b = cfg.batch_size
    retain_order: list[int] = []
    steps: list[Step] = []
    for _ in range(cfg.epochs):
        order = list(range(n_forget))
        rng.shuffle(order)
        for i in range(0, n_forget, b):
            fb = tuple(order[i:i + b])
            while len(retain_order) < len(fb):
                more = list(range(n_retain))
                rng.shuffle(more)
                retain_order += more
            rb, retain_order = tuple(retain_order[:len(fb)]), retain_order[len(fb):]
            if cfg.scheme == "joint":
                steps.append(Step("joint", fb, rb))
            else:
                steps += [Step("forget", forget=fb), Step("retain", retain=rb)]
    return steps


def shard(indices: tuple[int, ...], rank: int, world: int, grad_accum: int) -> list[tuple[int, ...]]:
    """This rank's micro-batches of a global batch (contiguous rank shards, then ``grad_accum`` chunks)."""
    per = math.ceil(len(indices) / world)
    mine = indices[rank * per:(rank + 1) * per]
    size = math.ceil(len(mine) / grad_accum) if mine else 0
    return [mine[i:i + size] for i in range(0, len(mine), size)] if size else []


class QAData:
    """A split encoded once as tensors: ``qa`` and ``idk`` (a refusal fixed per item by the seed)."""

    def __init__(self, tokenizer: Any, records: list[dict[str, Any]], idk_pool: list[str],
                 template: dict[str, str], seed: int = 0, max_len: int = 128) -> None:
        rng = random.Random(seed)
        qs = [r["question"] for r in records]
        self.qa = encode_qa(tokenizer, qs, [r["answer"] for r in records], template, max_len)
        self.idk = encode_qa(tokenizer, qs, [rng.choice(idk_pool) for _ in records], template, max_len)

    def __len__(self) -> int:
        return self.qa["input_ids"].shape[0]

    def batch(self, idx: tuple[int, ...], device: torch.device) -> dict[str, dict[str, torch.Tensor]]:
        """The micro-batch ``idx`` (right padding trimmed) on ``device``."""
        t = torch.tensor(idx, dtype=torch.long)
        out = {}
        for name, enc in (("qa", self.qa), ("idk", self.idk)):
            sub = {k: v[t] for k, v in enc.items()}
            width = int(sub["attention_mask"].sum(1).max())
            out[name] = {k: v[:, :width].to(device) for k, v in sub.items()}
        return out


def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def init_distributed() -> tuple[int, int]:
    """Join the process group when launched by ``torchrun``/``accelerate launch`` (env:// variables set)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    return _dist()


def _allreduce_grads(params: list[torch.Tensor]) -> None:
    """Sum gradients over ranks in one flat buffer (DDP's effect, done once per optimizer step)."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    torch.distributed.all_reduce(flat)
    off = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[off:off + n].view_as(p).clone()
        off += n


def _state_bytes(opt: Any) -> int:
    seen, total = set(), 0
    inner = [opt.forget, opt.retain] if hasattr(opt, "forget") else [opt.optimizer]
    for o in inner:
        for st in o.state.values():
            for v in st.values():
                if isinstance(v, torch.Tensor) and id(v) not in seen:
                    seen.add(id(v))
                    total += v.numel() * v.element_size()
    return total


def unlearn(model: torch.nn.Module, forget: QAData, retain: QAData, cfg: UnlearnConfig,
            ref_model: torch.nn.Module | None = None,
            on_micro_batch: Callable[[int, str, tuple[int, ...]], None] | None = None,
            on_step: Callable[[int, str, Any], None] | None = None, progress: bool = True) -> dict[str, Any]:
    """Unlearn ``forget`` from ``model`` in place; returns timings, memory and the loss curve.

    ``on_micro_batch(step, phase, indices)`` and ``on_step(step, phase, optimizer)`` are hooks
    (used by the tests to check that the phase follows the batch).
    """
    rank, world = _dist()
    device = next(model.parameters()).device
    f_name, r_name = cfg.method.lower().split("+")
    f_loss, r_loss = get_loss("forget", f_name), get_loss("retain", r_name)
    if (f_loss.needs_ref or r_loss.needs_ref) and ref_model is None:
        ref_model = copy.deepcopy(model)  # the frozen original
    if ref_model is not None:
        ref_model.eval().requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = build_optimizer(params, cfg.spec, cfg.forget_lr, cfg.retain_lr)
    c_f, c_r = cfg.coefs
    plan = make_plan(len(forget), len(retain), cfg)
    model.train()
    curve: list[dict[str, Any]] = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    bar = tqdm(plan, desc=f"{cfg.method}/{cfg.scheme}", leave=False, disable=not progress or rank > 0,
               mininterval=2)
    for s, step in enumerate(bar):
        opt.set_phase("forget" if step.phase == "joint" else step.phase)
        n_global = len(step.forget) or len(step.retain)
        total = torch.zeros((), device=device)
        parts = []
        if step.phase in ("forget", "joint"):
            parts.append(("forget", forget, step.forget, f_loss, c_f))
        if step.phase in ("retain", "joint"):
            parts.append(("retain", retain, step.retain, r_loss, c_r))
        for kind, data, idx, loss, coef in parts:
            for mb in shard(idx, rank, world, cfg.grad_accum):
                if on_micro_batch is not None:
                    on_micro_batch(s, step.phase, mb)
                per_sample = loss.fn(model, data.batch(mb, device), ref_model, cfg.beta)
                value = coef * per_sample.sum() / n_global
                if not torch.isfinite(value):
                    raise DivergenceError(f"{kind} loss is {value.item()} at step {s} (phase {step.phase}, "
                                          f"method {cfg.method}, scheme {cfg.scheme}); lower the learning rate")
                value.backward()
                total += value.detach()
        if world > 1:
            _allreduce_grads(params)
            torch.distributed.all_reduce(total)
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        if on_step is not None:
            on_step(s, step.phase, opt)
        opt.step()
        opt.zero_grad(set_to_none=True)
        curve.append({"step": s, "phase": step.phase, "loss": float(total)})
    bar.close()
    model.eval()
    secs = time.perf_counter() - t0
    out = {"seconds": secs, "steps": len(plan), "optimizer": cfg.spec, "optimizer_state_mib": _state_bytes(opt) / 2**20,
           "param_mib": sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20,
           "trainable_params": sum(p.numel() for p in params), "curve": curve,
           "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "config": asdict(cfg)}
    if device.type == "cuda":
        out["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out
