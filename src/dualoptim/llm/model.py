"""Small Llama-config causal LMs: build, train (plain NLL on answers), save and load with the template.

Any Hugging Face causal LM path or hub name also loads (``load_model("microsoft/phi-1_5")``);
its prompt template comes from ``dualoptim_llm.json`` in the folder, or ``--template``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from ..errors import ConfigError, DataNotFoundError
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
            batch = _trim({k: v[idx] for k, v in data.items()})
            loss = model(**batch).loss
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{desc}: loss became {loss.item()} at step {bar.n}")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            tokens += int(batch["attention_mask"].sum())
            loss_v = loss.item()
            bar.update()
            bar.set_postfix(loss=f"{loss_v:.3f}", refresh=False)
    bar.close()
    model.eval()
    secs = time.perf_counter() - t0
    return {"seconds": secs, "tokens": tokens, "tokens_per_s": tokens / secs, "final_loss": loss_v}


def _trim(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop all-padding columns on the right (batches are right-padded)."""
    width = int(batch["attention_mask"].sum(1).max())
    return {k: v[:, :width] for k, v in batch.items()}


def save_model(model: torch.nn.Module, tokenizer: Any, directory: str | os.PathLike[str],
               template: dict[str, str], meta: dict[str, Any] | None = None) -> Path:
    """Save weights (safetensors), tokenizer and ``dualoptim_llm.json`` (template + meta); swapped in atomically."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / META_FILE).write_text(json.dumps({"template": template, **(meta or {})}, indent=2, default=str))
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def load_model(name_or_path: str | os.PathLike[str], template: str | dict[str, str] | None = None,
               dtype: torch.dtype = torch.float32) -> tuple[torch.nn.Module, Any, dict[str, str]]:
    """Load ``(model, tokenizer, template)`` from a folder written by :func:`save_model` or any HF causal LM."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(name_or_path)
    meta = {}
    if path.exists():
        if not (path / "config.json").is_file():
            raise DataNotFoundError(f"{path} is not a model folder (no config.json); run 'dualoptim llm prepare'")
        if (path / META_FILE).is_file():
            meta = json.loads((path / META_FILE).read_text())
    try:
        model = AutoModelForCausalLM.from_pretrained(str(name_or_path), dtype=dtype, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
    except OSError as e:
        raise DataNotFoundError(f"cannot load model {name_or_path!r}: {e}") from None
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        # pad = eos would mask the real EOS in the labels: add a distinct pad token.
        tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
        model.resize_token_embeddings(len(tokenizer))
    if isinstance(template, str):
        if template not in TEMPLATES:
            raise ConfigError(f"unknown template {template!r}; valid: {', '.join(TEMPLATES)}")
        template = TEMPLATES[template]
    template = template or meta.get("template") or DEFAULT_TEMPLATE
    model.eval()
    return model, tokenizer, template


def apply_lora(model: torch.nn.Module, r: int = 8, alpha: int = 32, dropout: float = 0.0,
               target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")) -> torch.nn.Module:
    """Wrap ``model`` with LoRA adapters (peft; the paper's r=8, alpha=32); only adapters train."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules),
                     task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)


def model_meta(cfg: ModelConfig) -> dict[str, Any]:
    """What to store about the architecture."""
    return {"model_config": asdict(cfg)}
