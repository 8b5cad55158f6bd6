"""LLM unlearning loop: three update schemes, gradient accumulation and several processes.

The run is a *plan* of optimizer steps built from the seed before training starts; each
step has a phase (``forget``/``retain``/``joint``) and a global batch of example indices.
A step's global batch is sharded over ranks, each shard split into ``grad_accum``
micro-batches, so every micro-batch of one optimizer step has that step's phase on every
rank: the phase follows the batch (the reference code switched by a global step counter,
which drifts out of phase under accumulation/sharding).

Schemes (``UnlearnConfig.scheme``):

* ``joint``     -- one optimizer, one step per pair of batches on ``c_f L_f + c_r L_r``;
* ``alternate`` -- separate forget and retain steps, one shared optimizer state;
* ``dual``      -- separate steps, DualOptim (two optimizer states).

Per-sample losses are summed and divided by the global batch's normaliser (its number of
sequences, or of tokens for per-token losses: ``methods.base``), counted before the step, and
gradients are summed over ranks (all-reduce, or FSDP2's reduce-scatter for a sharded model), so
N processes x k accumulation steps give the gradient of one process with the same global batch.
``retain_every`` sets Algorithm 1's T_r (retain steps per forget step), ``warmup_epochs`` and
``schedule`` the paper's warm-up + linear decay.
"""

from __future__ import annotations

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

from ..engine import check_finite, check_parameters
from ..errors import ConfigError
from ..optim import build_optimizer, phase_lambda_lr, state_bytes
from ..optim.base import is_dtensor
from .methods import DEFAULT_COEFS, LossInfo, get_loss
from .methods.base import token_counts
from .model import reference_model, trim_padding
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
        retain_every: retain steps after each forget step (Algorithm 1's T_r with T_f = 1; the paper's
            code uses 5; ``alternate``/``dual`` only).
        warmup_epochs: linear lr warm-up length in forget epochs (the paper: 1), then ``schedule``.
        schedule: ``constant`` or ``linear`` (decay to 0 at the end of the run; the paper's).
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
    retain_every: int = 1
    warmup_epochs: float = 0.0
    schedule: str = "constant"

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ConfigError(f"unknown scheme {self.scheme!r}; valid: {', '.join(SCHEMES)}")
        if "+" not in self.method:
            raise ConfigError(f"method must be '<forget>+<retain>' (e.g. me+gd), got {self.method!r}")
        _ = self.losses  # an unknown loss name: one error listing the valid ones
        if self.epochs <= 0 or self.batch_size <= 0 or self.grad_accum <= 0:
            raise ConfigError("epochs, batch_size and grad_accum must be > 0")
        if not (self.forget_lr > 0 and (self.retain_lr is None or self.retain_lr > 0)):
            raise ConfigError("learning rates must be > 0")
        if self.retain_every < 1 or (self.retain_every > 1 and self.scheme == "joint"):
            raise ConfigError(f"retain_every must be >= 1 and is for the alternate/dual schemes (got "
                              f"{self.retain_every} with scheme {self.scheme!r})")
        if self.schedule not in ("constant", "linear") or self.warmup_epochs < 0:
            raise ConfigError(f"schedule must be constant|linear and warmup_epochs >= 0 (got {self.schedule!r}, "
                              f"{self.warmup_epochs})")

    @property
    def spec(self) -> str:
        """The optimizer spec actually used."""
        return self.optimizer or ("adamw+adamw" if self.scheme == "dual" else "adamw")

    @property
    def losses(self) -> dict[str, LossInfo]:
        """The registered ``forget`` and ``retain`` losses named by ``method``."""
        forget, _, retain = self.method.lower().partition("+")
        return {"forget": get_loss("forget", forget), "retain": get_loss("retain", retain)}

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
    with the next retain batch(es) of a shuffled walk through the retain set. ``joint`` makes one
    step per pair, ``alternate``/``dual`` a forget step followed by ``retain_every`` retain steps.
    """
    rng = random.Random(cfg.seed)
    size = cfg.batch_size
    retain_order: list[int] = []
    steps: list[Step] = []
    for _ in range(cfg.epochs):
        order = list(range(n_forget))
        rng.shuffle(order)
        for i in range(0, n_forget, size):
            forget_batch = tuple(order[i:i + size])
            retain_batches = []
            for _ in range(cfg.retain_every):
                while len(retain_order) < len(forget_batch):
                    more = list(range(n_retain))
                    rng.shuffle(more)
                    retain_order += more
                retain_batches.append(tuple(retain_order[:len(forget_batch)]))
                retain_order = retain_order[len(forget_batch):]
            if cfg.scheme == "joint":
                steps.append(Step("joint", forget_batch, retain_batches[0]))
            else:
                steps += [Step("forget", forget=forget_batch)] + [Step("retain", retain=b) for b in retain_batches]
    return steps


def lr_factor(cfg: UnlearnConfig, n_steps: int, steps_per_epoch: int) -> Callable[[int], float]:
    """The lr multiplier of optimizer step ``s``: linear warm-up over ``warmup_epochs``, then constant or
    linear decay to 0 at the last step (the paper's recipe: 1 epoch warm-up, linear decay)."""
    warm = round(cfg.warmup_epochs * steps_per_epoch)

    def factor(s: int) -> float:
        if s < warm:
            return (s + 1) / (warm + 1)
        if cfg.schedule == "constant":
            return 1.0
        return max(0.0, (n_steps - s) / max(1, n_steps - warm))

    return factor


def shard(indices: tuple[int, ...], rank: int, world: int, grad_accum: int) -> list[tuple[int, ...]]:
    """This rank's micro-batches of a global batch (contiguous rank shards, then ``grad_accum`` chunks)."""
    per = math.ceil(len(indices) / world)
    mine = indices[rank * per:(rank + 1) * per]
    size = math.ceil(len(mine) / grad_accum) if mine else 0
    return [mine[i:i + size] for i in range(0, len(mine), size)] if size else []


class QAData:
    """A split encoded once as tensors: ``qa`` and (with a refusal pool) ``idk``, a refusal fixed per item
    by the seed. ``counts`` holds each item's answer-token and sequence-position counts (loss normalisers)."""

    def __init__(self, tokenizer: Any, records: list[dict[str, Any]], idk_pool: list[str] | None,
                 template: dict[str, str], seed: int = 0, max_len: int = 500) -> None:
        rng = random.Random(seed)
        qs = [r["question"] for r in records]
        self.encodings = {"qa": encode_qa(tokenizer, qs, [r["answer"] for r in records], template, max_len)}
        if idk_pool:
            self.encodings["idk"] = encode_qa(tokenizer, qs, [rng.choice(idk_pool) for _ in records], template,
                                              max_len)
        self.counts = {k: token_counts(v) for k, v in self.encodings.items()}

    @property
    def qa(self) -> dict[str, torch.Tensor]:  # noqa: D102
        return self.encodings["qa"]

    def __len__(self) -> int:
        return self.qa["input_ids"].shape[0]

    def batch(self, idx: tuple[int, ...], device: torch.device) -> dict[str, dict[str, torch.Tensor]]:
        """The micro-batch ``idx`` (right padding trimmed) on ``device``."""
        t = torch.tensor(idx, dtype=torch.long)
        return {name: {k: v.to(device) for k, v in trim_padding({k: v[t] for k, v in enc.items()}).items()}
                for name, enc in self.encodings.items()}


def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def init_distributed(device: torch.device | None = None) -> tuple[int, int]:
    """Join the process group when launched by ``torchrun``/``accelerate launch`` (env:// variables set):
    NCCL for CUDA devices, gloo for the CPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        cuda = device.type == "cuda" if device is not None else torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        torch.distributed.init_process_group("nccl" if cuda else "gloo")
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


def resolve_losses(cfg: UnlearnConfig, forget: QAData, retain: QAData, model: torch.nn.Module, ref_model: Any = None,
                   sharded: bool = False) -> tuple[dict[str, LossInfo], Any]:
    """``(losses, ref_model)`` of a run: each loss must find the encodings it reads (IDK/DPO/AP need a refusal
    pool); a loss that needs the frozen original gets ``ref_model``, built when not given (a frozen copy; LoRA:
    the adapter-disabled base, no copy)."""
    losses = cfg.losses
    for loss, data in ((losses["forget"], forget), (losses["retain"], retain)):
        if any(u not in data.encodings for u in loss.uses):
            raise ConfigError(f"the {loss.kind} loss {loss.name!r} needs a refusal pool ('idk'): put TOFU's "
                              f"idontknow.jsonl (one refusal per line) next to the data or pass --idk FILE")
    if ref_model is None and any(v.needs_ref for v in losses.values()):
        if sharded:
            raise ConfigError("an FSDP-sharded model needs its reference model passed in (shard_model(copy))")
        ref_model = reference_model(model)
    if isinstance(ref_model, torch.nn.Module):
        ref_model.eval().requires_grad_(False)
    return losses, ref_model


def step_parts(step: Step, forget: QAData, retain: QAData, losses: dict[str, LossInfo],
               coefs: tuple[float, float]) -> list[tuple[str, QAData, tuple[int, ...], LossInfo, float, float]]:
    """``(kind, data, global indices, loss, coefficient, denominator)`` of each loss term of ``step``.

    The denominator counts the whole global batch (all ranks, all micro-batches), so every
    micro-batch's ``coef * loss.sum() / denominator`` adds up to the global-batch loss.
    """
    parts = []
    for kind, data, idx, coef in (("forget", forget, step.forget, coefs[0]), ("retain", retain, step.retain,
                                                                              coefs[1])):
        if idx:
            denom = losses[kind].denominator(data.counts, torch.tensor(idx, dtype=torch.long))
            parts.append((kind, data, idx, losses[kind], coef, denom))
    return parts


def is_sharded(model: torch.nn.Module) -> bool:
    """True when ``model``'s parameters are DTensors (FSDP2 ``fully_shard``)."""
    return any(is_dtensor(p) for p in model.parameters())


def run_llm_unlearning(model: torch.nn.Module, forget: QAData, retain: QAData, cfg: UnlearnConfig,
                       ref_model: Any = None,
                       on_micro_batch: Callable[[int, str, tuple[int, ...]], None] | None = None,
                       on_step: Callable[[int, str, Any], None] | None = None,
                       progress: bool = True) -> dict[str, Any]:
    """Unlearn ``forget`` from ``model`` in place; returns timings, memory and the loss curve.

    The model stays where it is (``load_model(device=...)`` put it there); batches and the reference
    model run on its device. Several processes: a plain model's gradients are all-reduced once per
    step; an FSDP2-sharded model (:func:`dualoptim.llm.parallel.shard_model`) reduce-scatters them
    itself and keeps both optimizer states sharded. ``on_micro_batch(step, phase, indices)`` and
    ``on_step(step, phase, optimizer)`` are hooks (the tests check that the phase follows the batch).
    """
    rank, world = _dist()
    sharded = is_sharded(model)
    device = next(model.parameters()).device
    losses, ref_model = resolve_losses(cfg, forget, retain, model, ref_model, sharded)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = build_optimizer(params, cfg.spec, cfg.forget_lr, cfg.retain_lr)
    plan = make_plan(len(forget), len(retain), cfg)
    sched = None
    if cfg.schedule != "constant" or cfg.warmup_epochs > 0:
        f = lr_factor(cfg, len(plan), len(plan) // cfg.epochs)
        sched = phase_lambda_lr(opt, forget=f, retain=f)
    model.train()
    curve: list[dict[str, Any]] = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    bar = tqdm(plan, desc=f"{cfg.method}/{cfg.scheme}", leave=False, disable=not progress or rank > 0,
               mininterval=2)
    for s, step in enumerate(bar):
        opt.set_phase("forget" if step.phase == "joint" else step.phase)
        total = torch.zeros((), device=device)
        passes = []
        for kind, data, idx, loss, coef, denom in step_parts(step, forget, retain, losses, cfg.coefs):
            mbs = shard(idx, rank, world, cfg.grad_accum)
            if sharded:  # FSDP: every rank runs the same number of forward/backward passes (collectives)
                mbs += [()] * (cfg.grad_accum - len(mbs))
            passes += [(kind, data, idx, loss, coef, denom, mb) for mb in mbs]
        for i, (kind, data, idx, loss, coef, denom, mb) in enumerate(passes):
            if sharded:  # reduce-scatter the gradients once, on the step's last backward pass
                model.set_requires_gradient_sync(i == len(passes) - 1)
            if on_micro_batch is not None and mb:
                on_micro_batch(s, step.phase, mb)
            weight = coef / denom * (world if sharded else 1)  # FSDP averages over ranks; we want the sum
            if not mb:  # a zero-weight pass on one real item keeps the collectives in step
                mb, weight = idx[:1], 0.0
            per_sample = loss.fn(model, data.batch(mb, device), ref_model, cfg.beta)
            value = weight * per_sample.sum()
            check_finite(float(value.detach()), f"{kind} loss at step {s} (phase {step.phase}, method {cfg.method}, "
                         f"scheme {cfg.scheme})", "lower the learning rate")
            value.backward()
            total += value.detach() / (world if sharded else 1)
        if world > 1:
            if not sharded:
                _allreduce_grads(params)
            torch.distributed.all_reduce(total)
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        if on_step is not None:
            on_step(s, step.phase, opt)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if sched is not None:
            sched.step()
        curve.append({"step": s, "phase": step.phase, "loss": float(total)})
    bar.close()
    model.eval()
    secs = time.perf_counter() - t0
    if not sharded:  # a sharded model's DTensors would need a collective; its losses were checked
        check_parameters(model, len(plan))
    out = {"seconds": secs, "steps": len(plan), "optimizer": cfg.spec, "optimizer_state_mib": state_bytes(opt) / 2**20,
           "param_mib": sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20,
           "trainable_params": sum(p.numel() for p in params), "curve": curve,
           "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "config": asdict(cfg)}
    if device.type == "cuda":
        out["peak_cuda_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out
