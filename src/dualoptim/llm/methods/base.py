"""Loss registry and the shared log-probability helpers.

A loss maps ``(model, batch, ref_model, beta)`` to one value *per sample* (shape ``[B]``).
How the trainer averages them is the loss's declared ``reduction`` (the references' conventions):

* ``"token"``    -- the values are per-sample *sums over tokens*; the step's loss is their total
  divided by the number of those tokens in the whole global batch (HF ``outputs.loss`` = per-token
  mean NLL, as TOFU / open-unlearning compute GA, GD, IDK, ME and KL);
* ``"sequence"`` -- one value per sequence (NPO, DPO, AP), averaged over the global batch.

Both denominators are counted from the data before the step, so gradient accumulation and
several processes give exactly the gradient of one big batch.

``batch`` holds ``"qa"`` (question + true answer) and ``"idk"`` (question + a refusal),
each with ``input_ids``, ``attention_mask`` and ``labels`` (-100 outside the answer).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...errors import ConfigError
from ...registry import Registry

LossFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class LossInfo:
    """A registered forget or retain loss."""

    name: str
    kind: str  # "forget" | "retain"
    fn: LossFn
    needs_ref: bool = False
    description: str = ""
    reduction: str = "sequence"  # "token" | "sequence"
    tokens: tuple[str, str] = ("qa", "answer")  # for "token": (encoding, "answer" | "sequence") counted
    uses: tuple[str, ...] = ("qa",)  # encodings of the batch it reads ("qa", "idk")

    def denominator(self, counts: dict[str, dict[str, torch.Tensor]], idx: torch.Tensor) -> float:
        """The step's normaliser for the global batch ``idx`` (see the module docstring)."""
        if self.reduction == "sequence":
            return float(len(idx))
        enc, what = self.tokens
        return float(counts[enc][what][idx].sum().clamp_min(1))


LOSSES: dict[str, Registry[LossInfo]] = {kind: Registry(f"{kind} loss") for kind in ("forget", "retain")}


def register_loss(kind: str, name: str, needs_ref: bool = False, description: str = "", reduction: str = "sequence",
                  tokens: tuple[str, str] = ("qa", "answer"),
                  uses: tuple[str, ...] = ("qa",)) -> Callable[[LossFn], LossFn]:
    """Decorator: register ``fn`` as the ``kind`` ("forget"/"retain") loss called ``name``."""

    def deco(fn: LossFn) -> LossFn:
        if reduction not in ("token", "sequence"):
            raise ValueError(f"{kind} loss {name!r}: reduction must be 'token' or 'sequence', got {reduction!r}")
        LOSSES[kind].add(name, LossInfo(name, kind, fn, needs_ref, description or (fn.__doc__ or "").split("\n")[0],
                                        reduction, tokens, uses))
        return fn

    return deco


def list_losses(kind: str) -> list[str]:
    """Registered names of ``kind`` losses."""
    return LOSSES[kind].names()


def get_loss(kind: str, name: str) -> LossInfo:
    """The registered loss; ConfigError listing valid names if unknown."""
    return LOSSES[kind].get(name)


def token_logprobs(model: torch.nn.Module, enc: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor,
                                                                                     torch.Tensor]:
    """Per answer token: ``(log p(label), label mask, logits)``, shifted so position t predicts token t+1."""
    logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits[:, :-1].float()
    labels = enc["labels"][:, 1:]
    mask = labels != -100
    logp = torch.log_softmax(logits, -1).gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    return logp * mask, mask, logits


def seq_logprob(model: torch.nn.Module, enc: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample: summed answer log-probability and number of answer tokens."""
    logp, mask, _ = token_logprobs(model, enc)
    return logp.sum(1), mask.sum(1)


def token_counts(enc: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per sample: ``answer`` tokens (labels) and ``sequence`` positions (predicting a real token)."""
    return {"answer": (enc["labels"][:, 1:] != -100).sum(1), "sequence": enc["attention_mask"][:, 1:].sum(1)}


def nll_sum(model: torch.nn.Module, enc: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-sample summed answer-token negative log-likelihood (``reduction="token"`` losses)."""
    return -seq_logprob(model, enc)[0]


def ref_seq_logprob(ref: torch.nn.Module | None, enc: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed answer log-probability under the frozen reference model."""
    if ref is None:
        raise ConfigError("this loss needs the frozen reference model")
    with torch.no_grad():
        return seq_logprob(ref, enc)[0]


def logsigmoid(x: torch.Tensor) -> torch.Tensor:  # noqa: D103 - alias kept for the one-line loss files
    return F.logsigmoid(x)
