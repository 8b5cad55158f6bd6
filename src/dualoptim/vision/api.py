"""``dualoptim.unlearn``: unlearn any torch classifier on the user's own data, with an audit.

    import dualoptim
    out = dualoptim.unlearn(model, forget=forget_set, retain=retain_set, test=test_set,
                            method="salun", optim="adam+sgd", retrain=True)
    out.model                      # the unlearned model (the same object, changed in place, eval mode)
    out.audit.write_html("audit.html")

A thin adapter: ``vision.inputs`` checks and batches the user's inputs (and trains a Retrain); the rest is the
library's shared path: methods, ``build_optimizer``, the engine, ``metrics`` and ``vision.calibrate``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from ..engine import Callback, Schedule, UnlearnResult, run_unlearning
from ..engine import _plan as _plan_steps
from ..optim import OptimSpec, build_optimizer
from .audit import Audit, degenerate_warnings
from .calibrate import attack_target, calibrate_run, calibrated_schedule, final_verdict, forget_kind
from .data import Data
from .inputs import LogitsModel, Retrain, check_settings, extract_logits, retrain_plan, train_retrain, user_sets
from .methods import get_method, get_method_info
from .metrics import all_metrics, curve_callback, sets_probs
from .presets import default_lrs, resolve_lrs
from .train import TrainConfig

__all__ = ["LogitsModel", "UnlearnOutcome", "default_lrs", "extract_logits", "unlearn"]

@dataclass
class UnlearnOutcome:
    """What :func:`unlearn` returns.

    Attributes:
        model: the unlearned model (the one passed in, changed in place, in eval mode).
        audit: metrics of the original / unlearned / Retrain models, Gap to Retrain, timings, settings.
        result: the engine's per-step history and callback rows.
        retrain_model: the Retrain reference (trained or given), or None.
    """

    model: nn.Module
    audit: Audit
    result: UnlearnResult
    retrain_model: nn.Module | None = None


def unlearn(model: nn.Module, *, forget: Data, retain: Data, test: Data | None = None, method: str = "salun",
            optim: str | None = None, forget_lr: float | None = None, retain_lr: float | None = None,
            calibrate: str = "auto", epochs: int | None = None, iterations: int | None = None,
            train_epochs: int | None = None,
            batch_size: int = 128, method_options: Mapping[str, Any] | None = None,
            optim_options: Mapping[str, Any] | None = None, output_key: str | int | None = None,
            retrain: Retrain = False,
            retrain_recipe: TrainConfig | Mapping[str, Any] | None = None, seed: int = 0,
            callbacks: Sequence[Callback] = (), eval_every: int | None = None, curve_samples: int = 1000,
            track_grads: bool = False, progress: bool = True) -> UnlearnOutcome:
    """Remove the influence of ``forget`` from ``model`` (trained on ``forget`` + ``retain``) and audit it.

    With nothing but the data and the method, the run is calibrated without a Retrain (docs/defaults.md):
    held-out data (``test``) define what "never seen" looks like, a short probe on a slice picks the forget
    lr, and unlearning stops once the forget set scores like held-out data (sample-wise) or its classes are
    no longer predicted (class-wise), or when held-out accuracy of what must be kept drops. The audit's
    ``verdict`` says whether that happened ("forgotten: ..." / "NOT forgotten: ..." / "utility lost: ...").

    Args:
        model: a trained classifier; ``model(x)`` returns logits ``(N, num_classes)``. Changed in place (also
            when an error stops the run part-way): pass ``copy.deepcopy(model)`` to keep the original.
        forget, retain, test: a map-style Dataset of ``(x, y)``, a DataLoader of ``(x, y)`` batches, or an
            ``(x, y)`` tensor pair. ``retain`` must not contain the forget samples (checked by index for Subsets
            of one dataset, by content for tensor pairs and TensorDatasets: one hash per sample). ``test``
            (held-out data the original never trained on, e.g. a validation set) is optional but needed for
            the sample-wise target, TA and both membership-inference attacks.
        method: a registered method (``ft``, ``ga``, ``rl``, ``salun``, ``scrub``, ``sfron``).
        optim: ``"adam+sgd"``-style DualOptim spec or a single name (shared-optimizer baseline), see
            ``build_optimizer``; default: the method's DualOptim spec (``adam+sgd``; ``adam+adam`` for SCRUB).
        forget_lr, retain_lr: step sizes. A given ``forget_lr`` switches calibration off (and the capped
            budget and early stop with it); a missing ``retain_lr`` is the default (:func:`default_lrs`).
        calibrate: ``"auto"`` (calibrate unless ``forget_lr`` is given) or ``"off"`` (untuned fixed defaults).
        epochs / iterations: override the method's schedule length (epoch-style / iteration-style methods).
        train_epochs: how many epochs (passes over its training data) the original was trained for. With it a
            calibrated run follows rule v6 (docs/defaults.md): no probe, interleaved steps, work at most 20 % of
            a Retrain of that length; without it rule v3 (a probe, at most 10 epochs) and the audit says "time
            budget unknown: pass train_epochs".
        batch_size: batch size for Datasets and tensor pairs (DataLoaders keep their own).
        method_options: method options, e.g. ``{"ratio": 0.5}`` for SalUn (SFRon defaults to alpha = 1).
        optim_options: ``build_optimizer`` options, e.g. ``{"retain_weight_decay": 0}``.
        output_key: how to find logits in a non-tensor output: a dict key / attribute name or a tuple index.
        retrain: ``False``; a trained Retrain ``nn.Module`` to compare with; a function returning a fresh
            untrained model; or ``True`` to train a re-initialised copy of ``model`` on ``retain`` with
            ``retrain_recipe`` (use your original training recipe: a :class:`TrainConfig` or its fields).
            Only the audit's Gap reads it; calibration never does.
        seed: seeds shuffling, random labels, the calibration subsamples and the SVC attack's sampling.
        callbacks: engine callbacks ``f(event) -> dict | None`` every ``eval_every`` steps and at the end.
        eval_every: also record FA/RA/TA/MIA every that many steps on ``curve_samples`` samples per set
            (the audit's process plot).
        track_grads: record gradient norms and forget/retain cosine per step in ``result.history``.
        progress: show progress bars.

    Raises:
        ConfigError: unusable inputs (empty or overlapping sets, a model output that is not logits, a model
            whose parameters are all frozen, ...).
        DivergenceError: a loss became NaN/inf.
    """
    total_start = time.perf_counter()
    check_settings(calibrate=calibrate, batch_size=batch_size, train_epochs=train_epochs, eval_every=eval_every)
    info = get_method_info(method)
    options = dict(method_options or {})
    if info.name == "sfron":
        options.setdefault("alpha", 1.0)  # the paper's method-agnostic DualOptim setting
    m = get_method(info.name, **options)
    optim = optim or info.dual_optim
    net, sets = user_sets(model, forget, retain, test, batch_size, seed, output_key)
    retrain_model, recipe = retrain_plan(retrain, retrain_recipe, model)  # recipe: a Retrain to train here

    schedule: Schedule = m.default_schedule()
    plan = lambda s: _plan_steps(m, s, len(sets.forget), len(sets.retain))  # noqa: E731 -- (forget, retain) steps
    calibrating = calibrate == "auto" and forget_lr is None
    lengths = {k: v for k, v in (("epochs", epochs), ("iterations", iterations)) if v is not None}
    if calibrating and not lengths:
        schedule = calibrated_schedule(schedule, len(sets.forget), len(sets.retain))
    schedule = replace(schedule, **lengths)
    n_forget_steps = plan(schedule)[0] if m.uses_forget else 0
    forget_lr, retain_lr, lr_source = resolve_lrs(info.name, optim, forget_lr, retain_lr, n_forget_steps, calibrating)

    t0 = time.perf_counter()
    original_out = sets_probs(net, vars(sets).values())
    original_metrics = all_metrics(original_out, seed)
    kind, classes = forget_kind(original_out[0][1], original_out[1][1])
    eval_s = time.perf_counter() - t0

    unlearn_start, unlearn_cpu = time.perf_counter(), time.process_time()
    reason = ("calibrate='off'" if calibrate == "off" else "forget_lr given" if not calibrating
              else None if m.uses_forget else f"{info.name} has no forget phase")
    monitor, calibration = None, {"mode": "off", "kind": kind, "classes": classes}
    calibration.update({"reason": reason} if reason else {})
    if calibrating and m.uses_forget:
        make_opt = lambda mod, lr: build_optimizer(mod.parameters(), optim, lr, retain_lr,  # noqa: E731
                                                   **dict(optim_options or {}))
        forget_lr, schedule, monitor, fields = calibrate_run(
            net, sets, lambda: get_method(info.name, **options), plan, make_opt, OptimSpec.parse(optim).forget,
            schedule, train_epochs, bool(lengths), kind, classes, seed)
        calibration.update(fields)
        lr_source = "calibrated (probe, docs/defaults.md)"
        n_forget_steps = plan(schedule)[0]
    calibrate_s = time.perf_counter() - unlearn_start

    torch.manual_seed(seed)
    optimizer = build_optimizer(net.parameters(), optim, forget_lr, retain_lr, **dict(optim_options or {}))
    cbs = list(callbacks)
    if eval_every is not None:
        cbs.insert(0, curve_callback(net, vars(sets).values(), curve_samples, seed))
    result = run_unlearning(net, m, optimizer, sets.forget, sets.retain, schedule, callbacks=cbs,
                            eval_every=eval_every, track_grads=track_grads, progress=progress,
                            desc=f"unlearn {info.name} [{optim}]", stop=monitor)
    timings = {"unlearn_s": result.seconds, "unlearn_steps": result.steps, "calibrate_s": calibrate_s,
               "unlearn_total_s": time.perf_counter() - unlearn_start,
               "unlearn_total_cpu_s": time.process_time() - unlearn_cpu}
    if monitor is not None:
        calibration.update(stop_reason=result.stop_reason or "budget spent", checks=monitor.checks)
    t0 = time.perf_counter()
    unlearned_out = sets_probs(net, vars(sets).values())
    unlearned_metrics = all_metrics(unlearned_out, seed)
    verdict, verdict_details = final_verdict(original_out, unlearned_out, mia=attack_target(calibration))
    eval_s += time.perf_counter() - t0
    num_classes = original_out[0][0].shape[1]
    warnings = (degenerate_warnings("original", original_metrics, num_classes)
                + degenerate_warnings("unlearned", unlearned_metrics, num_classes, model))

    retrain_metrics = None
    if recipe is not None:
        retrain_model, retrain_timings = train_retrain(retrain, recipe, model, retain, output_key, seed, progress)
        timings.update(retrain_timings)
    if retrain_model is not None:
        t0 = time.perf_counter()
        retrain_metrics = all_metrics(sets_probs(LogitsModel(retrain_model, output_key), vars(sets).values()), seed)
        eval_s += time.perf_counter() - t0
        warnings += degenerate_warnings("Retrain", retrain_metrics, num_classes, retrain_model)
    timings.update(eval_s=eval_s, total_s=time.perf_counter() - total_start)

    hyper = {"forget_lr": forget_lr, "retain_lr": retain_lr, "lr_source": lr_source, "forget_steps": n_forget_steps,
             "batch_size": batch_size, "seed": seed,
             "method_options": {k: v for k, v in m.__dict__.items() if k in {o.name for o in info.options}},
             "optim_options": dict(optim_options or {}), "schedule": dict(schedule.__dict__),
             "retrain_recipe": recipe.to_dict() if recipe is not None else None,
             "retrain": "trained" if recipe is not None else ("given" if retrain_model is not None else None)}
    audit = Audit.build(method=info.name, optim=optim, hyperparameters=hyper, original=original_metrics,
                        unlearned=unlearned_metrics, retrain=retrain_metrics,
                        sizes={k: 0 if b is None else b.num_samples for k, b in vars(sets).items()},
                        timings=timings, process=[dict(r) for r in result.evals] if eval_every else [],
                        verdict=verdict, verdict_details=verdict_details,
                        calibration=calibration, warnings=warnings)
    model.eval()
    return UnlearnOutcome(model=model, audit=audit, result=result, retrain_model=retrain_model)
