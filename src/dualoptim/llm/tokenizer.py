"""A byte-level BPE tokenizer trained locally, and the prompt encoding used everywhere.

Special tokens follow the tokenizer's own convention: whatever it puts before a text
(Llama-2: BOS; GPT-2 / Phi: nothing) starts every prompt, as in fine-tuning. Labels and
attention masks are built from sequence lengths, never by comparing ids with the pad id, so
a tokenizer whose pad token is its EOS (no vocabulary resize) cannot mask the real EOS that
ends every answer (a pitfall of public frameworks that set pad = eos).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

PAD, EOS = "<|pad|>", "<|eos|>"
DEFAULT_TEMPLATE = {"prompt": "Question: {question}\nAnswer:", "answer": " {answer}"}


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048) -> Any:
    """Train a byte-level BPE tokenizer; returns a ``transformers.PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS)


def special_prefix(tokenizer: Any) -> list[int]:
    """The ids the tokenizer itself puts before a text (``[bos]`` for Llama-2, ``[]`` for GPT-2/Phi)."""
    with_special = tokenizer("x", add_special_tokens=True)["input_ids"]
    plain = tokenizer("x", add_special_tokens=False)["input_ids"]
    for i in range(len(with_special) - len(plain) + 1):
        if with_special[i:i + len(plain)] == plain:
            return list(with_special[:i])
    return []


def pad_id(tokenizer: Any) -> int:
    """The id written into padding positions (they are masked out by length, so EOS is fine)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def encode_qa(tokenizer: Any, questions: list[str], answers: list[str], template: dict[str, str],
              max_len: int = 500) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``/``attention_mask``/``labels`` for prompt+answer+EOS.

    Labels are -100 on the prompt and on padding: losses and probabilities use answer tokens (and the EOS).
    Prompt and answer are tokenized separately so the answer boundary is exact.
    """
    prompts = tokenizer([template["prompt"].format(question=q) for q in questions], add_special_tokens=False)
    ans = tokenizer([template["answer"].format(answer=a) for a in answers], add_special_tokens=False)
    eos, prefix = tokenizer.eos_token_id, special_prefix(tokenizer)
    rows, labels = [], []
    for p, a in zip(prompts["input_ids"], ans["input_ids"]):
        p = prefix + p
        ids = (p + a + [eos])[:max_len]
        lab = ([-100] * len(p) + a + [eos])[:max_len]
        rows.append(ids)
        labels.append(lab)
    width = max(len(r) for r in rows)
    n = len(rows)
    input_ids = torch.full((n, width), pad_id(tokenizer), dtype=torch.long)
    label_t = torch.full((n, width), -100, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for i, (r, lab) in enumerate(zip(rows, labels)):
        input_ids[i, :len(r)] = torch.tensor(r)
        label_t[i, :len(lab)] = torch.tensor(lab)
        mask[i, :len(r)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": label_t}


def encode_prompts(tokenizer: Any, questions: list[str], template: dict[str, str]) -> dict[str, torch.Tensor]:
    """Left-padded prompts for batched greedy generation."""
    prompts = tokenizer([template["prompt"].format(question=q) for q in questions], add_special_tokens=False)
    prefix = special_prefix(tokenizer)
    rows = [prefix + p for p in prompts["input_ids"]]
    width = max(len(p) for p in rows)
    n = len(questions)
    ids = torch.full((n, width), pad_id(tokenizer), dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for i, p in enumerate(rows):
        ids[i, width - len(p):] = torch.tensor(p)
        mask[i, width - len(p):] = 1
    return {"input_ids": ids, "attention_mask": mask}
