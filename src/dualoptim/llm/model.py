"""Small Llama-config causal LMs: build, train (plain NLL on answers), save and load with the template.

Any Hugging Face causal LM path or hub name also loads (``load_model("microsoft/phi-1_5")``);
its prompt template comes from ``dualoptim_llm.json`` in the folder, or ``--template``.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ..engine import check_finite
from ..errors import ConfigError, DataNotFoundError
from ..io import atomic_dir
from ..runtime import resolve_device  # noqa: F401 -- part of this module's API (llm.cli, tests)
from .tokenizer import DEFAULT_TEMPLATE

META_FILE = "dualoptim_llm.json"
TEMPLATES = {"qa": DEFAULT_TEMPLATE, "llama2": {"prompt": "[INST] {question} [/INST]", "answer": "{answer}"}}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of the from-scratch Llama-config model (defaults: 4 layers, 256 wide)."""

    hidden: int = 256
    layers: int = 4
    heads: int = 4
    intermediate: int = 688
    max_len: int = 128

    def __post_init__(self) -> None:
        if self.hidden % self.heads:
            raise ConfigError(f"hidden={self.hidden} must be divisible by heads={self.heads}")
        if min(self.hidden, self.layers, self.heads, self.intermediate, self.max_len) <= 0:
            raise ConfigError("model sizes must be > 0")


@dataclass(frozen=True)
class TrainConfig:
    """Plain fine-tuning (base pre-training, fine-tune on ``full``, retain models)."""

    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 32
    weight_decay: float = 0.01
    warmup_frac: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs <= 0 or self.batch_size <= 0 or not self.lr > 0:
            raise ConfigError("epochs, batch_size and lr must be > 0")


def build_model(cfg: ModelConfig, tokenizer: Any, seed: int = 0) -> torch.nn.Module:
    """A randomly initialised ``LlamaForCausalLM`` for ``tokenizer``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=cfg.hidden, num_hidden_layers=cfg.layers,
                         num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads,
                         intermediate_size=cfg.intermediate, max_position_embeddings=cfg.max_len,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True)
    return LlamaForCausalLM(config)


def train_lm(model: torch.nn.Module, data: dict[str, torch.Tensor], cfg: TrainConfig, desc: str = "train") -> dict:
    """Fine-tune on pre-encoded QA (``encode_qa`` output) with AdamW, warmup + cosine; returns timings."""
    g = torch.Generator().manual_seed(cfg.seed)
    n = data["input_ids"].shape[0]
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    warm = max(1, int(cfg.warmup_frac * total))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / (total - warm))))
    model.train()
    tokens, t0, loss_v = 0, time.perf_counter(), float("nan")
    bar = tqdm(total=total, desc=desc, leave=False, mininterval=2)
    for _ in range(cfg.epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(steps_per_epoch):
            idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            batch = trim_padding({k: v[idx] for k, v in data.items()})
            loss = model(**batch).loss
            loss_v = check_finite(loss.item(), f"{desc}: loss at step {bar.n}", "lower the learning rate (--lr)")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            tokens += int(batch["attention_mask"].sum())
            bar.update()
            bar.set_postfix(loss=f"{loss_v:.3f}", refresh=False)
    bar.close()
    model.eval()
    secs = time.perf_counter() - t0
    return {"seconds": secs, "tokens": tokens, "tokens_per_s": tokens / secs, "final_loss": loss_v}


def trim_padding(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop all-padding columns on the right (batches are right-padded)."""
    width = int(batch["attention_mask"].sum(1).max())
    return {k: v[:, :width] for k, v in batch.items()}


def save_model(model: torch.nn.Module, tokenizer: Any, directory: str | os.PathLike[str],
               template: dict[str, str], meta: dict[str, Any] | None = None,
               state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Save weights (safetensors), tokenizer and ``dualoptim_llm.json`` (template + meta); swapped in atomically.

    ``state_dict``: the full weights when ``model`` is sharded (:func:`parallel.full_state_dict`).
    """
    with atomic_dir(directory) as tmp:
        model.save_pretrained(tmp, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)
        (tmp / META_FILE).write_text(json.dumps({"template": template, **(meta or {})}, indent=2, default=str))
    return Path(directory)


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_dtype(spec: str | torch.dtype) -> torch.dtype:
    """``bf16`` | ``fp32`` | ``fp16`` (or a ``torch.dtype``)."""
    if isinstance(spec, torch.dtype):
        return spec
    if spec not in DTYPES:
        raise ConfigError(f"unknown dtype {spec!r}; valid: {', '.join(DTYPES)}")
    return DTYPES[spec]


def load_model(name_or_path: str | os.PathLike[str], template: str | dict[str, str] | None = None,
               dtype: str | torch.dtype = torch.float32, device: str | torch.device = "cpu",
               trust_remote_code: bool = False) -> tuple[torch.nn.Module, Any, dict[str, str]]:
    """Load ``(model, tokenizer, template)`` from a folder written by :func:`save_model` or any HF causal LM.

    Weights may be safetensors, PyTorch ``.bin`` or sharded (``*.index.json``); the model is cast to
    ``dtype`` and moved to ``device`` (checked). Custom model code runs only with ``trust_remote_code``.
    A tokenizer without a pad token pads with its EOS (no new token, no vocabulary resize): padding is
    masked by length, so the real EOS keeps its label.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(name_or_path)
    meta = {}
    if path.exists():
        if not (path / "config.json").is_file():
            raise DataNotFoundError(f"{path} is not a model folder (no config.json); run 'dualoptim llm prepare'")
        if (path / META_FILE).is_file():
            meta = json.loads((path / META_FILE).read_text())
    dtype = resolve_dtype(dtype)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(name_or_path), dtype=dtype,
                                                     trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path), trust_remote_code=trust_remote_code)
    except OSError as e:
        raise DataNotFoundError(f"cannot load model {name_or_path!r}: {e}") from None
    except ValueError as e:  # e.g. custom code without trust_remote_code
        raise ConfigError(f"cannot load model {name_or_path!r}: {e}") from None
    if tokenizer.eos_token_id is None:
        raise ConfigError(f"the tokenizer of {name_or_path!r} has no EOS token; answers must end with one")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if isinstance(template, str):
        if template not in TEMPLATES:
            raise ConfigError(f"unknown template {template!r}; valid: {', '.join(TEMPLATES)}")
        template = TEMPLATES[template]
    template = template or meta.get("template") or DEFAULT_TEMPLATE
    model = place(model, device, dtype)
    model.eval()
    return model, tokenizer, template


def place(model: torch.nn.Module, device: str | torch.device, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """Move ``model`` to ``device`` (and ``dtype``) and check that every parameter and buffer got there."""
    device = torch.device(device)
    model = model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)
    check_placement(model, device, dtype)
    return model


def check_placement(model: torch.nn.Module, device: str | torch.device, dtype: torch.dtype | None = None) -> None:
    """Raise if a parameter is not on ``device`` (type and index) or not of ``dtype`` (floating tensors)."""
    device = torch.device(device)
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if t.device.type != device.type or (device.index is not None and t.device.index != device.index):
            raise RuntimeError(f"{name} is on {t.device}, not on the requested {device}")
    for name, p in model.named_parameters():
        if dtype is not None and p.is_floating_point() and p.dtype != dtype:
            raise RuntimeError(f"{name} is {p.dtype}, not the requested {dtype}")


def apply_lora(model: torch.nn.Module, r: int = 8, alpha: int = 32, dropout: float = 0.0,
               target_modules: str | tuple[str, ...] = "all-linear") -> torch.nn.Module:
    """Wrap ``model`` with LoRA adapters (peft; the paper's r=8, alpha=32); only adapters train.

    ``target_modules="all-linear"`` (default, as the reference code) adapts every linear layer but the
    output head -- ``c_attn``/``c_proj``/``c_fc`` in GPT-2, ``dense``/``fc1``/``fc2`` in Phi -- or pass module
    names. A name matching no module is an error (peft's), never a silently skipped layer.
    """
    from peft import LoraConfig, get_peft_model

    targets = target_modules if isinstance(target_modules, str) else list(target_modules)
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, cfg)
    except ValueError as e:
        raise ConfigError(f"LoRA targets {target_modules!r}: {e}") from None


class AdapterDisabled:
    """The frozen original model of a LoRA run: the same peft model called with its adapters disabled.

    Costs no memory (no copy of the base weights). Not an ``nn.Module`` on purpose: it must not
    register the trained model as a sub-module (``requires_grad_(False)`` or ``.to()`` on the
    reference would then act on the adapters).
    """

    def __init__(self, peft_model: torch.nn.Module) -> None:
        self.peft_model = peft_model

    def __call__(self, **inputs: Any) -> Any:
        was_training = self.peft_model.training
        self.peft_model.eval()
        try:
            with torch.no_grad(), self.peft_model.disable_adapter():
                return self.peft_model(**inputs)
        finally:
            self.peft_model.train(was_training)


def reference_model(model: torch.nn.Module) -> Any:
    """The frozen original for NPO/DPO/KL: the adapter-disabled base of a peft model, else a frozen copy."""
    if hasattr(model, "disable_adapter") and hasattr(model, "peft_config"):
        return AdapterDisabled(model)
    import copy

    return copy.deepcopy(model).eval().requires_grad_(False)
