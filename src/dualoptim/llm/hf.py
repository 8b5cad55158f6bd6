"""Hugging Face ``Trainer`` integration: ``DualOptimTrainer`` runs the same plan as :func:`trainer.unlearn`.

The train dataset is the plan flattened into micro-batches in the order the HF/accelerate
dataloader hands them out: item ``((step * grad_accum) + a) * world + rank``. With a
sequential sampler, ``per_device_train_batch_size=1`` (one pre-collated micro-batch per item)
and ``gradient_accumulation_steps=grad_accum``, every rank's micro-batches of one optimizer
step belong to that step, so the phase follows the batch under accumulation and DDP
(``accelerate launch``/``torchrun``). ``compute_loss`` switches the phased optimizer to the
micro-batch's phase before the backward pass; the optimizer step that follows uses it.

Usage::

    trainer = DualOptimTrainer(model=model, args=TrainingArguments(..., gradient_accumulation_steps=2),
                               unlearn_config=UnlearnConfig(method="me+gd", scheme="dual"),
                               forget=QAData(...), retain=QAData(...))
    trainer.train()
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from ..optim import build_optimizer
from .methods import get_loss
from .trainer import QAData, UnlearnConfig, make_plan, shard


class PlanDataset(torch.utils.data.Dataset):
    """The unlearning plan as a flat list of pre-collated micro-batches in dataloader order."""

    def __init__(self, forget: QAData, retain: QAData, cfg: UnlearnConfig, world: int) -> None:
        self.items: list[dict[str, Any]] = []
        for step in make_plan(len(forget), len(retain), cfg):
            n_global = len(step.forget) or len(step.retain)
            per_rank = []
            for rank in range(world):
                parts = {}
                if step.forget:
                    parts["forget"] = shard(step.forget, rank, world, cfg.grad_accum)
                if step.retain:
                    parts["retain"] = shard(step.retain, rank, world, cfg.grad_accum)
                per_rank.append(parts)
            for a in range(cfg.grad_accum):
                for rank in range(world):
                    item: dict[str, Any] = {"phase": step.phase, "n_global": n_global}
                    for kind, data in (("forget", forget), ("retain", retain)):
                        mbs = per_rank[rank].get(kind, [])
                        item[kind] = data.batch(mbs[a], torch.device("cpu")) if a < len(mbs) else None
                    self.items.append(item)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


def _unwrap(batch: list[dict[str, Any]]) -> dict[str, Any]:
    return batch[0]


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
                     ref_model: torch.nn.Module | None = None, **kwargs: Any) -> None:
            model = kwargs.get("model") or args[0]
            training_args = kwargs.get("args")
            world = training_args.world_size if training_args is not None else 1
            if training_args is not None:
                training_args.remove_unused_columns = False  # items are our micro-batch dicts
            self.unlearn_config = unlearn_config
            f_name, r_name = unlearn_config.method.lower().split("+")
            self.losses = {"forget": get_loss("forget", f_name), "retain": get_loss("retain", r_name)}
            if ref_model is None and any(v.needs_ref for v in self.losses.values()):
                ref_model = copy.deepcopy(model)
            self.ref_model = ref_model.eval().requires_grad_(False) if ref_model is not None else None
            kwargs.setdefault("train_dataset", PlanDataset(forget, retain, unlearn_config, world))
            kwargs.setdefault("data_collator", _unwrap)
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
            c = dict(zip(("forget", "retain"), cfg.coefs))
            device = next(model.parameters()).device
            if self.ref_model is not None:
                self.ref_model.to(device)
            total = torch.zeros((), device=device)
            for kind in ("forget", "retain"):
                if inputs.get(kind) is not None:
                    per_sample = self.losses[kind].fn(model, _to(inputs[kind], device), self.ref_model, cfg.beta)
                    total = total + c[kind] * per_sample.sum() / inputs["n_global"]
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
