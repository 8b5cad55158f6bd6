"""``llm prepare``: tokenizer, base model, fine-tuned model and retain ("oracle") models, cached by content.

Everything lands in ``<cache>/<key>/`` where ``key`` hashes the benchmark files and every
setting, so a second call returns at once and a changed setting trains new models:

* ``base``   -- trained from scratch on the base corpus (control facts + background authors),
* ``full``   -- ``base`` fine-tuned on ``full`` (the model to unlearn from) plus a replay of the control facts,
* ``retain90`` ... -- ``base`` fine-tuned the same way on each retain split (forget-quality reference).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..cache import get_or_build
from ..errors import ConfigError, DataNotFoundError
from ..io import atomic_write_json
from .data import FORGET_SPLITS, RETAIN_OF, load_benchmark
from .model import ModelConfig, TrainConfig, build_model, load_model, save_model, train_lm
from .tokenizer import DEFAULT_TEMPLATE, encode_qa, train_tokenizer

VERSION = 1  # bump when training code changes what a cached model means


@dataclass(frozen=True)
class PrepareConfig:
    """What ``llm prepare`` trains."""

    data: str = "runs/llm/data/synthetic"
    cache: str = "runs/llm/models"
    vocab_size: int = 2048
    model: ModelConfig = field(default_factory=ModelConfig)
    base: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=10, lr=1e-3, batch_size=32))
    finetune: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=6, lr=1e-3, batch_size=32))
    forget_splits: tuple[str, ...] = FORGET_SPLITS
    replay_control: bool = True  # mix the control facts into every fine-tune (as pre-training data would be)

    def __post_init__(self) -> None:
        bad = [s for s in self.forget_splits if s not in RETAIN_OF]
        if bad:
            raise ConfigError(f"unknown forget split(s) {bad}; valid: {', '.join(RETAIN_OF)}")


def _data_hash(directory: Path) -> str:
    h = hashlib.sha256()
    for name in ("full", "base_corpus", "idk", *RETAIN_OF.values()):
        f = directory / f"{name}.json"
        if f.is_file():
            h.update(name.encode() + f.read_bytes())
    return h.hexdigest()[:16]


def cache_dir(cfg: PrepareConfig, stage: str = "finetune") -> Path:
    """The content-keyed folder of this configuration's models (``stage="base"``: the base model's folder,
    keyed without the fine-tune settings so changing those does not retrain the base)."""
    data = Path(cfg.data)
    if not (data / "full.json").is_file():
        raise DataNotFoundError(f"no benchmark at {data}; run 'dualoptim llm make-data --out {data}' first")
    if not (data / "base_corpus.json").is_file():
        raise DataNotFoundError(f"{data} has no base_corpus.json: 'llm prepare' trains from scratch on the "
                                f"synthetic benchmark only; for TOFU pass a pretrained --model to 'llm unlearn'")
    parts = {"v": VERSION, "data": _data_hash(data), "vocab": cfg.vocab_size, "model": asdict(cfg.model),
             "base": asdict(cfg.base)}
    if stage != "base":
        parts.update(finetune=asdict(cfg.finetune), replay=cfg.replay_control)
    key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]
    return Path(cfg.cache) / (f"base-{key}" if stage == "base" else key)


def prepare(cfg: PrepareConfig, log: Any = print) -> dict[str, Any]:
    """Train (or find cached) tokenizer, base, full and retain models; returns paths and timings."""
    root, base_dir = cache_dir(cfg), cache_dir(cfg, "base") / "base"
    data = load_benchmark(cfg.data)
    template = DEFAULT_TEMPLATE
    report: dict[str, Any] = {"root": str(root), "timings": {}}
    mcfg = cfg.model

    def enc(tok: Any, records: list[dict[str, Any]]) -> dict:
        return encode_qa(tok, [r["question"] for r in records], [r["answer"] for r in records], template,
                         mcfg.max_len)

    def build_base(folder: Path) -> None:
        t0 = time.perf_counter()
        texts = [template["prompt"].format(question=r["question"]) + template["answer"].format(answer=r["answer"])
                 for split in ("full", "base_corpus", "holdout10", "real_authors", "world_facts")
                 for r in data.get(split, [])]
        texts += data.get("idk", [])
        texts += [a for split in ("retain_perturbed", "forget10_perturbed", "real_authors_perturbed",
                                  "world_facts_perturbed") for r in data.get(split, [])
                  for a in [r.get("paraphrased_answer", "")] + list(r.get("perturbed_answer", []))]
        tok = train_tokenizer(texts, cfg.vocab_size)
        report["timings"]["tokenizer_s"] = time.perf_counter() - t0
        model = build_model(mcfg, tok, seed=cfg.base.seed)
        log(f"[prepare] base model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params, "
            f"{len(data['base_corpus'])} base-corpus items x {cfg.base.epochs} epochs")
        stats = train_lm(model, enc(tok, data["base_corpus"]), cfg.base, desc="base")
        report["timings"]["base"] = stats
        save_model(model, tok, folder, template, {"stage": "base", "train": asdict(cfg.base),
                                                  "model_config": asdict(mcfg), "stats": stats})

    get_or_build(base_dir, lambda folder: None, build_base)
    targets = ["full", *(RETAIN_OF[f] for f in cfg.forget_splits)]  # each model is named after its training split
    for split in targets:
        def build(folder: Path, split: str = split) -> None:
            model, tok, _ = load_model(base_dir)
            # A from-scratch model forgets the control facts when fine-tuned on authors only (measured: world-fact
            # probability 6e-5 after 6 epochs); a pretrained LM keeps them. Replaying them keeps MC meaningful.
            records = data[split] + (data["real_authors"] + data["world_facts"] if cfg.replay_control else [])
            log(f"[prepare] fine-tune base on {split} ({len(data[split])} items"
                f"{' + control replay' if cfg.replay_control else ''} x {cfg.finetune.epochs} epochs)")
            stats = train_lm(model, enc(tok, records), cfg.finetune, desc=split)
            report["timings"][split] = stats
            save_model(model, tok, folder, template, {"stage": split, "train_split": split,
                                                      "train": asdict(cfg.finetune), "stats": stats})
            log(f"[prepare] {split}: {stats['seconds']:.0f} s, {stats['tokens_per_s']:.0f} tokens/s, "
                f"final loss {stats['final_loss']:.3f}")

        if get_or_build(root / split, lambda folder: None, build).hit:
            log(f"[prepare] {split}: cached at {root / split}")
    if report["timings"]:
        old = json.loads((root / "prepare.json").read_text()) if (root / "prepare.json").is_file() else {}
        atomic_write_json(root / "prepare.json", {**old, **report["timings"], "config": json.loads(
            json.dumps(asdict(cfg), default=str))})
    report["models"] = {"base": str(base_dir), **{n: str(root / n) for n in targets}}
    return report


def model_paths(cfg: PrepareConfig) -> dict[str, Path]:
    """Paths of the prepared models (raises a clear error when ``prepare`` has not run)."""
    root = cache_dir(cfg)
    out = {"base": cache_dir(cfg, "base") / "base", **{n: root / n for n in ("full", *(RETAIN_OF[f] for f in
                                                                                     cfg.forget_splits))}}
    missing = [n for n, p in out.items() if not (p / "config.json").is_file()]
    if missing:
        raise DataNotFoundError(f"models {missing} not prepared under {root}; run 'dualoptim llm prepare "
                                f"--data {cfg.data}'")
    return out


__all__ = ["PrepareConfig", "cache_dir", "model_paths", "prepare"]
