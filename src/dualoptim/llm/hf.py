"""Hugging Face ``Trainer`` integration: ``DualOptimTrainer`` runs the same plan as :func:`trainer.run_llm_unlearning`.

Batch size and accumulation come from the ``TrainingArguments``: one optimizer step consumes
``per_device_train_batch_size x gradient_accumulation_steps x world_size`` forget (or retain)
examples, and the ``UnlearnConfig`` must say the same (``batch_size``, ``grad_accum``) or the
trainer refuses with one clear error -- :func:`unlearn_config_for` builds a matching one. The
train dataset is the plan flattened into single examples in the order the HF/accelerate
dataloader hands them out (micro-batch ``((step * grad_accum) + a) * world + rank``, each padded
to ``per_device_train_batch_size`` with empty slots), so every micro-batch of one optimizer step
has that step's phase on every rank, under accumulation and DDP (``accelerate launch`` /
``torchrun``). ``compute_loss`` switches the phased optimizer to the micro-batch's phase before
the backward pass; the optimizer step that follows uses it. The run length is the plan's
(``max_steps`` is set to it); the learning rates are the ``UnlearnConfig``'s, the schedule
``TrainingArguments``' (``lr_scheduler_type``, ``warmup_*``).

Usage::

    args = TrainingArguments(..., per_device_train_batch_size=4, gradient_accumulation_steps=2)
    trainer = DualOptimTrainer(model=model, args=args,
                               unlearn_config=unlearn_config_for(args, method="me+gd", scheme="dual"),
                               forget=QAData(...), retain=QAData(...))
    trainer.train()
"""

from __future__ import annotations

from typing import Any

import torch

from ..engine import check_finite
from ..errors import ConfigError
from ..optim import build_optimizer
from .trainer import QAData, UnlearnConfig, make_plan, resolve_losses, shard, step_parts


def _global_batch(args: Any) -> tuple[int, int, int]:
    world = max(1, args.world_size)
    return args.per_device_train_batch_size * args.gradient_accumulation_steps * world, \
        args.gradient_accumulation_steps, world


def unlearn_config_for(args: Any, **kwargs: Any) -> UnlearnConfig:
    """An ``UnlearnConfig`` whose batch size and accumulation are those of the ``TrainingArguments``."""
    batch, accum, _ = _global_batch(args)
    return UnlearnConfig(batch_size=batch, grad_accum=accum, **kwargs)


class PlanDataset(torch.utils.data.Dataset):
    """The unlearning plan as single examples in dataloader order.

    Item: ``{"phase", "forget": index | None, "retain": index | None, "weights": {kind: coef/denominator}}``;
    ``None`` in both is an empty slot padding a short micro-batch (the last batch of an epoch).
    """

    def __init__(self, forget: QAData, retain: QAData, cfg: UnlearnConfig, world: int, per_device: int) -> None:
        losses = cfg.losses
        self.items: list[dict[str, Any]] = []
        for step in make_plan(len(forget), len(retain), cfg):
            parts = step_parts(step, forget, retain, losses, cfg.coefs)
            weights = {kind: coef / denom for kind, _, _, _, coef, denom in parts}
            per_rank = [{kind: shard(idx, rank, world, cfg.grad_accum) for kind, _, idx, *_ in parts}
                        for rank in range(world)]
            for a in range(cfg.grad_accum):
                for rank in range(world):
                    mbs = {k: (v[a] if a < len(v) else ()) for k, v in per_rank[rank].items()}
                    for i in range(per_device):
                        item: dict[str, Any] = {"phase": step.phase, "weights": weights}
                        for kind in ("forget", "retain"):
                            mb = mbs.get(kind, ())
                            item[kind] = mb[i] if i < len(mb) else None
                        self.items.append(item)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


class PlanCollator:
    """Joins one micro-batch's examples into ``{"phase", "weights", "forget": batch | None, "retain": ...}``."""

    def __init__(self, forget: QAData, retain: QAData) -> None:
        self.data = {"forget": forget, "retain": retain}

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        phases = {it["phase"] for it in items}
        if len(phases) != 1:  # cannot happen with the plan's order; guards against a reordering sampler
            raise RuntimeError(f"a micro-batch mixes phases {sorted(phases)}: the sampler reordered the plan")
        out: dict[str, Any] = {"phase": phases.pop(), "weights": items[0]["weights"]}
        for kind, data in self.data.items():
            idx = tuple(it[kind] for it in items if it[kind] is not None)
            out[kind] = data.batch(idx, torch.device("cpu")) if idx else None
        return out


def _to(x: Any, device: torch.device) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, dict):
        return {k: _to(v, device) for k, v in x.items()}
    return x


def _make_trainer_class() -> type:
    from transformers import Trainer

    class DualOptimTrainer(Trainer):
        """A ``transformers.Trainer`` running forget/retain steps with a phased (Dual/Shared) optimizer."""

        def __init__(self, *args: Any, unlearn_config: UnlearnConfig, forget: QAData, retain: QAData,
                     ref_model: Any = None, **kwargs: Any) -> None:
            model = kwargs.get("model") or args[0]
            training_args = kwargs.get("args")
            if training_args is None:
                raise ConfigError("DualOptimTrainer needs TrainingArguments (args=...): its batch size and "
                                  "accumulation define the unlearning batches")
            if training_args.n_gpu > 1:
                raise ConfigError(f"{training_args.n_gpu} GPUs in one process (DataParallel) would split "
                                  "micro-batches: launch one process per GPU (torchrun / accelerate launch)")
            batch, accum, world = _global_batch(training_args)
            cfg = unlearn_config
            if (cfg.batch_size, cfg.grad_accum) != (batch, accum):
                raise ConfigError(
                    f"UnlearnConfig(batch_size={cfg.batch_size}, grad_accum={cfg.grad_accum}) does not match the "
                    f"TrainingArguments: per_device_train_batch_size={training_args.per_device_train_batch_size} x "
                    f"gradient_accumulation_steps={accum} x world_size={world} = {batch} examples per step with "
                    f"{accum} micro-batches; make them agree (dualoptim.llm.hf.unlearn_config_for(args, ...))")
            n_steps = len(make_plan(len(forget), len(retain), cfg))
            if training_args.max_steps > 0 and training_args.max_steps != n_steps:
                raise ConfigError(f"max_steps={training_args.max_steps} but the unlearning plan has {n_steps} "
                                  f"optimizer steps ({cfg.epochs} epochs); leave max_steps unset")
            training_args.max_steps = n_steps  # the plan's length (num_train_epochs would repeat the plan)
            training_args.remove_unused_columns = False  # items are our plan entries
            self.unlearn_config = cfg
            self.losses, self.ref_model = resolve_losses(cfg, forget, retain, model, ref_model)
            kwargs.setdefault("train_dataset", PlanDataset(forget, retain, cfg, world,
                                                           training_args.per_device_train_batch_size))
            kwargs.setdefault("data_collator", PlanCollator(forget, retain))
            super().__init__(*args, **kwargs)
            self.loss_is_scaled_for_ga = True  # compute_loss already divides by the global batch

        def _get_train_sampler(self, train_dataset: Any = None) -> torch.utils.data.Sampler:
            return torch.utils.data.SequentialSampler(train_dataset or self.train_dataset)

        def create_optimizer(self, model: Any = None) -> Any:
            if self.optimizer is None:
                cfg = self.unlearn_config
                params = [p for p in self.model.parameters() if p.requires_grad]
                self.optimizer = build_optimizer(params, cfg.spec, cfg.forget_lr, cfg.retain_lr)
            return self.optimizer

        def _phased(self) -> Any:
            opt = self.optimizer
            return getattr(opt, "optimizer", opt)  # accelerate wraps it in AcceleratedOptimizer

        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            cfg = self.unlearn_config
            phase = inputs["phase"]
            self._phased().set_phase("forget" if phase == "joint" else phase)
            device = next(model.parameters()).device
            if isinstance(self.ref_model, torch.nn.Module):
                self.ref_model.to(device)
            total = torch.zeros((), device=device)
            for kind in ("forget", "retain"):
                if inputs.get(kind) is not None:
                    per_sample = self.losses[kind].fn(model, _to(inputs[kind], device), self.ref_model, cfg.beta)
                    total = total + inputs["weights"][kind] * per_sample.sum()
            # as the own loop: a clear error, not NaN weights
            check_finite(float(total.detach()), f"{phase} loss at step {self.state.global_step} (method {cfg.method}, "
                         f"scheme {cfg.scheme})", "lower the learning rate")
            if not total.requires_grad:  # this rank got no sample in this micro-batch: a zero gradient
                total = total + 0.0 * sum(p.sum() for p in model.parameters() if p.requires_grad)
            total = total * self.args.world_size  # DDP averages gradients over ranks; we want their sum
            return (total, None) if return_outputs else total

    return DualOptimTrainer


def __getattr__(name: str) -> Any:  # lazy: importing this module does not import transformers
    if name == "DualOptimTrainer":
        cls = _make_trainer_class()
        globals()[name] = cls
        return cls
    raise AttributeError(name)
