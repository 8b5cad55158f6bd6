"""Algorithm 1 of the DualOptim paper: alternate forget and retain steps.

The engine is modality-agnostic. A :class:`Method` says what to minimise on a forget
batch and on a retain batch (and may prepare masks, a teacher, Fisher estimates); a
:class:`Schedule` says how steps alternate; the optimizer (shared or dual, from
:func:`dualoptim.optim.build_optimizer`) is told the phase of every batch. Switching
between the paper's baseline and DualOptim is therefore only a different optimizer.

Modes:

* ``epoch`` -- per epoch one pass over the forget batches then one over the retain
  batches (RL, SalUn, SCRUB; ``forget_epochs`` limits forget passes to the first k
  epochs, as SCRUB's ``msteps``).
* ``iteration`` -- ``iterations`` outer iterations of ``forget_steps`` forget steps then
  ``retain_steps`` retain steps; forget steps only every ``forget_every``-th iteration
  (SFRon's T_in). Batches are drawn cyclically.
* ``joint`` -- one step on ``forget_weight * L_f + retain_weight * L_r`` per forget batch,
  paired with the next retain batch (the usual non-alternating baselines).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .errors import ConfigError, DivergenceError
from .optim import DualOptimizer, PhasedOptimizer, cosine_factor

MODES = ("epoch", "iteration", "joint")
LR_SCHEDULES = ("constant", "cosine")


@dataclass
class Schedule:
    """How forget and retain steps alternate (see the module docstring for the modes)."""

    mode: str = "epoch"
    epochs: int = 10
    forget_epochs: int | None = None
    iterations: int = 100
    forget_steps: int = 1
    retain_steps: int = 1
    forget_every: int = 1
    forget_lr_schedule: str = "constant"
    retain_lr_schedule: str = "constant"
    forget_weight: float = 1.0
    retain_weight: float = 1.0
    retain_batches_per_epoch: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"unknown schedule mode {self.mode!r}; valid: {', '.join(MODES)}")
        for name in ("epochs", "iterations", "forget_steps", "retain_steps", "forget_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name.endswith("_steps") else 1):
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("forget_epochs", "retain_batches_per_epoch"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ConfigError(f"{name} must be None or an integer >= 0, got {value!r}")
        for name in ("forget_lr_schedule", "retain_lr_schedule"):
            if getattr(self, name) not in LR_SCHEDULES:
                raise ConfigError(f"{name} must be one of {LR_SCHEDULES}, got {getattr(self, name)!r}")


@dataclass
class StepInfo:
    """Where the engine is: given to the method's losses (e.g. SFRon's cosine-decayed alpha)."""

    step: int  # global step index (both phases)
    phase_step: int  # index among the steps of this phase
    phase_total: int  # number of steps this phase will take (0 if unknown)
    epoch: int  # epoch (epoch/joint mode) or outer iteration (iteration mode)
    phase: str

    @property
    def progress(self) -> float:
        """Fraction of this phase's steps done before this one (0 when the total is unknown)."""
        return self.phase_step / self.phase_total if self.phase_total else 0.0


@dataclass
class UnlearnContext:
    """What a method may look at in :meth:`Method.prepare`."""

    model: nn.Module
    optimizer: PhasedOptimizer
    forget_batches: Iterable[Any]
    retain_batches: Iterable[Any]
    schedule: Schedule


class Method:
    """An unlearning method: a forget loss, a retain loss, optional preparation and its default schedule.

    Subclasses (one short file each) override :meth:`forget_loss` and/or
    :meth:`retain_loss`; a method without one of them sets ``uses_forget`` or
    ``uses_retain`` to False (FT has no forget phase, GA no retain phase).
    """

    name: str = "method"
    uses_forget: bool = True
    uses_retain: bool = True

    def default_schedule(self) -> Schedule:
        """How this method's steps alternate when the caller gives no schedule (its paper's setting).

        The base class returns ``Schedule()``: 10 epochs, one forget pass then one retain pass each.
        """
        return Schedule()

    def prepare(self, ctx: UnlearnContext) -> None:
        """Called once before the first step (build teachers, masks, Fisher estimates ...); the engine times it
        (:attr:`UnlearnResult.prepare_seconds`)."""

    def forget_loss(self, model: nn.Module, batch: Any, info: StepInfo) -> torch.Tensor:
        """The loss minimised on a forget batch."""
        raise NotImplementedError(f"{type(self).__name__} has no forget loss")

    def retain_loss(self, model: nn.Module, batch: Any, info: StepInfo) -> torch.Tensor:
        """The loss minimised on a retain batch."""
        raise NotImplementedError(f"{type(self).__name__} has no retain loss")

    def before_step(self, model: nn.Module, optimizer: PhasedOptimizer, info: StepInfo) -> None:
        """Called after backward, before the optimizer step (e.g. gradient clipping)."""


@dataclass
class Event:
    """Given to callbacks every ``eval_every`` steps and at the end."""

    step: int
    epoch: int
    phase: str
    model: nn.Module
    final: bool = False
    lr_scale: dict[str, float] = field(default_factory=lambda: {"forget": 1.0, "retain": 1.0})
    """Per-phase learning-rate multipliers; a ``stop`` hook may change them (from the next step on)."""


Callback = Callable[[Event], "dict[str, float] | None"]


@dataclass
class UnlearnResult:
    """What :func:`run_unlearning` returns.

    ``history`` has one row per step (step, phase, epoch, loss, lr, and with
    ``track_grads`` the gradient norm and the cosine between this gradient and the
    latest gradient of the other phase); ``evals`` the rows returned by callbacks.
    """

    history: list[dict[str, float]] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0  # the step loop (evaluation callbacks included), not the preparation
    prepare_seconds: float = 0.0  # Method.prepare (teacher copy, saliency/Fisher mask ...)
    stop_reason: str = ""  # why a ``stop`` hook ended the run early ("" = the schedule ran to its end)


class _Stop(Exception):
    """Raised inside the step loop when the ``stop`` hook asks to end the run."""


def _cycle(batches: Iterable[Any]) -> Iterator[Any]:
    while True:
        empty = True
        for b in batches:
            empty = False
            yield b
        if empty:
            raise ConfigError("a batch source is empty: the forget and retain sets must each hold data")


def _len(batches: Iterable[Any]) -> int:
    try:
        return len(batches)  # type: ignore[arg-type]
    except TypeError:
        return 0


def _plan(method: Method, s: Schedule, n_forget: int, n_retain: int) -> tuple[int, int]:
    """Number of forget and retain steps the schedule will take (0 = unknown)."""
    f = method.uses_forget
    r = method.uses_retain
    if s.mode == "iteration":
        n_f = len(range(0, s.iterations, s.forget_every)) * s.forget_steps if f else 0
        return n_f, s.iterations * s.retain_steps if r else 0
    if s.mode == "joint":
        return s.epochs * n_forget, s.epochs * n_forget
    forget_epochs = s.epochs if s.forget_epochs is None else min(s.forget_epochs, s.epochs)
    n_r = min(n_retain, s.retain_batches_per_epoch) if s.retain_batches_per_epoch is not None else n_retain
    return (forget_epochs * n_forget if f else 0), (s.epochs * n_r if r else 0)


def _flat_grad(model: nn.Module) -> torch.Tensor:
    grads = [p.grad.detach().flatten() for p in model.parameters() if p.grad is not None]
    return torch.cat(grads).float() if grads else torch.zeros(1)


def check_finite(value: float, what: str, hint: str = "") -> float:
    """``value`` if it is finite, else :class:`DivergenceError` ``"<what> became <value>; <hint>"``."""
    if not math.isfinite(value):
        raise DivergenceError(f"{what} became {value}" + (f"; {hint}" if hint else ""))
    return value


def check_parameters(model: nn.Module, steps: int) -> None:
    """Raise :class:`DivergenceError` when a parameter of ``model`` holds NaN/inf after ``steps`` steps (finite
    losses can still leave inf/NaN weights after the last step)."""
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p.detach()).all()]
    if bad:
        raise DivergenceError(f"parameters {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''} became NaN/inf "
                              f"by step {steps}; lower the learning rates")


def accumulate_grads(model: nn.Module, batches: Iterable[Any], loss_fn: Callable[[Any], torch.Tensor],
                     limit: int | None, square: bool, *, eval_mode: bool = False,
                     add: Callable[[torch.Tensor, torch.Tensor], Any] | None = None,
                     mean: bool = True) -> dict[nn.Parameter, torch.Tensor]:
    """Mean over up to ``limit`` batches of each trainable parameter's gradient magnitude (``|g|``) or square
    (``g^2``, a diagonal Fisher estimate): the saliency/importance statistic of SalUn/SFRon-style masks.

    ``eval_mode``: take the gradients with the model in eval mode (no dropout, BatchNorm running statistics;
    its mode is restored). ``add(total, g)``: fold one batch's gradient into the running total in place instead
    of ``|g|``/``g^2`` (e.g. ``torch.Tensor.add_``: the signed sum; ``g`` from ``torch.autograd.grad``, ``.grad``
    left as it is). ``mean=False``: the sum over batches instead of the mean.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    acc = {p: torch.zeros_like(p) for p in params}
    n = 0
    was_training = model.training
    if eval_mode:
        model.eval()
    try:
        for batch in islice(batches, limit):  # no batch is drawn past the limit (augmentation draws randomness)
            if add is None:
                model.zero_grad(set_to_none=True)
                loss_fn(batch).backward()
                for p in params:
                    if p.grad is not None:
                        acc[p] += p.grad.pow(2) if square else p.grad.abs()
            else:  # the gradients as autograd returns them (their layout too); .grad is left as it is
                for total, g in zip(acc.values(), torch.autograd.grad(loss_fn(batch), params, allow_unused=True)):
                    if g is not None:
                        add(total, g)
            n += 1
    finally:
        if eval_mode:
            model.train(was_training)
    if add is None:
        model.zero_grad(set_to_none=True)
    if n == 0:
        raise ConfigError("no batches to estimate the saliency mask from")
    return {p: a / n for p, a in acc.items()} if mean else acc


def run_unlearning(model: nn.Module, method: Method, optimizer: PhasedOptimizer, forget_batches: Iterable[Any],
                   retain_batches: Iterable[Any], schedule: Schedule | None = None, *,
                   callbacks: Sequence[Callback] = (), eval_every: int | None = None, track_grads: bool = False,
                   autocast_dtype: torch.dtype | None = None, progress: bool = True,
                   desc: str = "unlearning", stop: Callable[[Event], str | None] | None = None) -> UnlearnResult:
    """Run ``method`` on ``model`` following ``schedule`` (Algorithm 1).

    Args:
        model: the model to unlearn (trained in place).
        method: forget/retain losses and preparation.
        optimizer: a :class:`SharedOptimizer` (baseline) or :class:`DualOptimizer`.
        forget_batches, retain_batches: re-iterable batch sources (each ``iter()`` is one pass).
        schedule: how steps alternate (default: ``method.default_schedule()``).
        callbacks: called every ``eval_every`` steps and at the end with the model in eval
            mode under ``no_grad``; the dicts they return are collected in ``result.evals``.
        track_grads: record gradient norms and forget/retain cosine similarity per step.
        autocast_dtype: e.g. ``torch.bfloat16`` to compute losses under autocast.
        progress: show a progress bar.
        stop: early stopping: called once before the first step (``phase="start"``) and after every step
            (model in train mode; the hook decides its own cadence and switches to eval itself); a non-empty
            string it returns ends the run there and is recorded as ``result.stop_reason``; it may also scale
            a phase's learning rate through ``event.lr_scale`` (e.g. escalate the forget lr).

    Raises:
        DivergenceError: a loss became NaN/inf (the message names the step and phase), or the parameters did.
    """
    s = schedule or method.default_schedule()
    if not isinstance(optimizer, PhasedOptimizer):
        raise ConfigError("run_unlearning needs a phased optimizer: use dualoptim.build_optimizer(...)")
    if s.mode == "joint" and isinstance(optimizer, DualOptimizer):
        raise ConfigError("joint mode takes one optimizer (one step on L_f + L_r): use a single-name spec like 'sgd'")
    if not (method.uses_forget or method.uses_retain):
        raise ConfigError(f"method {method.name!r} has neither a forget nor a retain loss")
    if eval_every is not None and eval_every <= 0:
        raise ConfigError(f"eval_every must be > 0, got {eval_every}")
    prepare_start = time.perf_counter()
    method.prepare(UnlearnContext(model, optimizer, forget_batches, retain_batches, s))
    prepare_seconds = time.perf_counter() - prepare_start
    model.zero_grad(set_to_none=True)  # a model fresh from training carries its last gradient: never step on it
    model.train()

    n_f, n_r = _plan(method, s, _len(forget_batches), _len(retain_batches))
    base_lr = {ph: [g["lr"] for g in optimizer.phase_groups(ph)] for ph in ("forget", "retain")}
    lr_factor = {
        "forget": cosine_factor(n_f) if s.forget_lr_schedule == "cosine" and n_f else (lambda _: 1.0),
        "retain": cosine_factor(n_r) if s.retain_lr_schedule == "cosine" and n_r else (lambda _: 1.0),
    }
    totals = {"forget": n_f, "retain": n_r}
    lr_scale = {"forget": 1.0, "retain": 1.0}  # a stop hook may change these (Event.lr_scale)
    counts = {"forget": 0, "retain": 0}
    last_grad: dict[str, torch.Tensor] = {}
    result = UnlearnResult(prepare_seconds=prepare_seconds)
    device_type = next(model.parameters()).device.type
    bar = tqdm(total=(n_f + n_r) or None, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    start = time.perf_counter()

    def evaluate(epoch: int, phase: str, final: bool = False) -> None:
        was_training = model.training
        model.eval()
        row: dict[str, float] = {"step": result.steps, "epoch": epoch}
        with torch.no_grad():
            for cb in callbacks:
                row.update(cb(Event(result.steps, epoch, phase, model, final)) or {})
        model.train(was_training)
        if len(row) > 2:
            result.evals.append(row)

    def step(phase: str, batch: Any, epoch: int, loss_fn: Callable[[StepInfo], torch.Tensor]) -> None:
        info = StepInfo(result.steps, counts[phase], totals[phase], epoch, phase)
        factor = lr_factor[phase](counts[phase]) * lr_scale[phase]
        for g, lr in zip(optimizer.phase_groups(phase), base_lr[phase]):
            g["lr"] = lr * factor
        with optimizer.set_phase(phase):
            with torch.autocast(device_type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                loss = loss_fn(info)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise DivergenceError(
                    f"{phase} loss became {value} at step {result.steps} ({phase} step {counts[phase]}, "
                    f"epoch/iteration {epoch}); lower the {phase} learning rate")
            loss.backward()
            row = {"step": result.steps, "phase": phase, "epoch": epoch, "loss": value,
                   "lr": optimizer.phase_groups(phase)[0]["lr"]}
            if track_grads:
                g = _flat_grad(model)
                row["grad_norm"] = float(g.norm())
                other = last_grad.get("retain" if phase == "forget" else "forget")
                if other is not None:
                    row["cos"] = float(torch.nn.functional.cosine_similarity(g, other, dim=0))
                last_grad[phase] = g
            method.before_step(model, optimizer, info)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        result.history.append(row)
        counts[phase] += 1
        result.steps += 1
        bar.update(1)
        if eval_every and callbacks and result.steps % eval_every == 0:
            evaluate(epoch, phase)
        if stop is not None:
            reason = stop(Event(result.steps, epoch, phase, model, lr_scale=lr_scale))
            if reason:
                result.stop_reason = reason
                raise _Stop

    def forget_step(b: Any, e: int) -> None:
        step("forget", b, e, lambda info: method.forget_loss(model, b, info))

    def retain_step(b: Any, e: int) -> None:
        step("retain", b, e, lambda info: method.retain_loss(model, b, info))

    try:
        if callbacks and eval_every:
            evaluate(0, "start")
        if stop is not None:
            result.stop_reason = stop(Event(0, 0, "start", model, lr_scale=lr_scale)) or ""
            if result.stop_reason:
                raise _Stop
        if s.mode == "epoch":
            for epoch in range(s.epochs):
                if method.uses_forget and (s.forget_epochs is None or epoch < s.forget_epochs):
                    for b in forget_batches:
                        forget_step(b, epoch)
                if method.uses_retain:
                    for i, b in enumerate(retain_batches):
                        if s.retain_batches_per_epoch is not None and i >= s.retain_batches_per_epoch:
                            break
                        retain_step(b, epoch)
        elif s.mode == "iteration":
            f_iter, r_iter = _cycle(forget_batches), _cycle(retain_batches)
            for it in range(s.iterations):
                if method.uses_forget and it % s.forget_every == 0:
                    for _ in range(s.forget_steps):
                        forget_step(next(f_iter), it)
                if method.uses_retain:
                    for _ in range(s.retain_steps):
                        retain_step(next(r_iter), it)
        else:  # joint: one optimizer step on the weighted sum, phase "retain" hyper-parameters
            r_iter = _cycle(retain_batches)
            for epoch in range(s.epochs):
                for fb in forget_batches:
                    rb = next(r_iter)
                    step("retain", (fb, rb), epoch, lambda info, fb=fb, rb=rb: (
                        (s.forget_weight * method.forget_loss(model, fb, info) if method.uses_forget else 0.0)
                        + (s.retain_weight * method.retain_loss(model, rb, info) if method.uses_retain else 0.0)))
    except _Stop:
        pass
    finally:
        bar.close()
        for ph, lrs in base_lr.items():  # leave the optimizer's lrs as they were given
            for g, lr in zip(optimizer.phase_groups(ph), lrs):
                g["lr"] = lr
    result.seconds = time.perf_counter() - start
    check_parameters(model, result.steps)
    if callbacks:
        evaluate(result.history[-1]["epoch"] if result.history else 0, "end", final=True)
    model.eval()
    return result
