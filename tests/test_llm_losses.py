"""Each LLM loss on a hand-checked tiny case (a lookup-table 'language model' with known log-probs)."""

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from dualoptim.errors import ConfigError
from dualoptim.llm.methods import get_loss, list_losses
from dualoptim.llm.methods.base import token_counts

V = 5


class TableLM(torch.nn.Module):
    """logits[t] = table[input_ids[t]]: next-token distribution depends only on the current token."""

    def __init__(self, table: torch.Tensor) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(table.clone())

    def forward(self, input_ids, attention_mask=None):
        return SimpleNamespace(logits=self.table[input_ids])


def enc(ids, n_prompt):
    ids = torch.tensor([ids])
    labels = ids.clone()
    labels[:, :n_prompt] = -100
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


QA = enc([0, 1, 2, 3], 2)    # answer tokens 2, 3 (predicted from tokens 1, 2)
IDK = enc([0, 1, 4, 4], 2)   # answer tokens 4, 4 (predicted from tokens 1, 4)
BATCH = {"qa": QA, "idk": IDK}


def logp(model, pairs):
    """Sum of log p(next | cur) over (cur, next) pairs, by hand."""
    lp = F.log_softmax(model.table.detach(), -1)
    return sum(lp[c, n].item() for c, n in pairs)


@pytest.fixture
def models():
    g = torch.Generator().manual_seed(0)
    return TableLM(torch.randn(V, V, generator=g)), TableLM(torch.randn(V, V, generator=g))


def call(kind, name, model, ref=None, beta=0.1, batch=BATCH):
    """The loss of ``batch`` as the trainer reduces it (the loss's declared per-token / per-sequence mean)."""
    info = get_loss(kind, name)
    counts = {k: token_counts(v) for k, v in batch.items()}
    n = batch["qa"]["input_ids"].shape[0]
    return (info.fn(model, batch, ref, beta).sum() / info.denominator(counts, torch.arange(n))).item()


def test_registry():
    assert list_losses("forget") == ["dpo", "ga", "idk", "me", "npo"]
    assert list_losses("retain") == ["ap", "gd", "kl"]
    with pytest.raises(ConfigError, match="valid: dpo, ga"):
        get_loss("forget", "nope")


def test_me_zero_for_uniform_positive_otherwise(models):
    assert call("forget", "me", TableLM(torch.zeros(V, V))) == pytest.approx(0.0, abs=1e-7)
    m = models[0]
    lp = F.log_softmax(m.table.detach(), -1)
    expected = sum(-math.log(V) - lp[c].mean().item() for c in (1, 2)) / 2
    assert call("forget", "me", m) == pytest.approx(expected, rel=1e-5) and expected > 0


def test_ga_gd_idk_nll(models):
    m = models[0]
    nll_a = -logp(m, [(1, 2), (2, 3)]) / 2
    nll_idk = -logp(m, [(1, 4), (4, 4)]) / 2
    assert call("forget", "ga", m) == pytest.approx(-nll_a, rel=1e-5)
    assert call("retain", "gd", m) == pytest.approx(nll_a, rel=1e-5)
    assert call("forget", "idk", m) == pytest.approx(nll_idk, rel=1e-5)
    assert call("forget", "ga", TableLM(torch.zeros(V, V))) == pytest.approx(-math.log(V), rel=1e-6)


def test_npo_closed_form(models):
    m, ref = models
    beta = 0.1
    ratio = logp(m, [(1, 2), (2, 3)]) - logp(ref, [(1, 2), (2, 3)])
    expected = -(2 / beta) * math.log(1 / (1 + math.exp(beta * ratio)))  # log sigmoid(-beta ratio)
    assert call("forget", "npo", m, ref) == pytest.approx(expected, rel=1e-5)
    # at the reference (ratio 0) NPO = (2/beta) log 2
    assert call("forget", "npo", ref, ref) == pytest.approx(2 / beta * math.log(2), rel=1e-6)
    with pytest.raises(ConfigError, match="reference"):
        call("forget", "npo", m, None)


def test_dpo_closed_form(models):
    m, ref = models
    beta = 0.1
    win = logp(m, [(1, 4), (4, 4)]) - logp(ref, [(1, 4), (4, 4)])
    lose = logp(m, [(1, 2), (2, 3)]) - logp(ref, [(1, 2), (2, 3)])
    expected = -(2 / beta) * math.log(1 / (1 + math.exp(-beta * (win - lose))))
    assert call("forget", "dpo", m, ref) == pytest.approx(expected, rel=1e-5)


def test_ap_closed_form(models):
    m = models[0]
    beta = 0.1
    nll_idk, nll_a = -logp(m, [(1, 4), (4, 4)]), -logp(m, [(1, 2), (2, 3)])
    expected = -(1 / beta) * math.log(1 / (1 + math.exp(-beta * (nll_idk - nll_a))))
    assert call("retain", "ap", m) == pytest.approx(expected, rel=1e-5)


def test_kl_zero_at_reference_positive_elsewhere(models):
    m, ref = models
    assert call("retain", "kl", ref, ref) == pytest.approx(0.0, abs=1e-6)
    p, q = F.log_softmax(ref.table.detach(), -1), F.log_softmax(m.table.detach(), -1)
    # over the whole sequence (TOFU / open-unlearning): positions 0, 1, 2 predict tokens 1, 2, 3 -- prompt included
    expected = sum((p[c].exp() * (p[c] - q[c])).sum().item() for c in (0, 1, 2)) / 3
    assert call("retain", "kl", m, ref) == pytest.approx(expected, rel=1e-5)


def test_token_losses_are_per_token_means_over_the_batch(models):
    """GA/GD/IDK/ME average over all answer tokens of the batch (HF ``outputs.loss``), not per sequence."""
    m = models[0]
    short, long = enc([0, 1, 2, 3, 3], 3), enc([0, 1, 2, 3, 4], 1)  # 2 and 4 answer tokens
    batch = {"qa": {k: torch.cat([short[k], long[k]]) for k in short}}
    hf_loss = F.cross_entropy(m.table.detach()[batch["qa"]["input_ids"][:, :-1]].reshape(-1, V),
                              batch["qa"]["labels"][:, 1:].reshape(-1), ignore_index=-100).item()
    assert call("retain", "gd", m, batch=batch) == pytest.approx(hf_loss, rel=1e-5)
    assert call("forget", "ga", m, batch=batch) == pytest.approx(-hf_loss, rel=1e-5)
    per_sequence = (-logp(m, [(2, 3), (3, 3)]) / 2 - logp(m, [(0, 1), (1, 2), (2, 3), (3, 4)]) / 4) / 2
    assert abs(hf_loss - per_sequence) > 1e-3  # the two conventions really differ on this batch


def test_losses_are_per_sample_and_differentiable(models):
    m, ref = models
    two = {k: {kk: torch.cat([v[kk], v[kk]]) for kk in v} for k, v in BATCH.items()}
    for kind in ("forget", "retain"):
        for name in list_losses(kind):
            out = get_loss(kind, name).fn(m, two, ref, 0.1)
            assert out.shape == (2,)
            out.sum().backward()
            assert m.table.grad is not None and torch.isfinite(m.table.grad).all()
            m.table.grad = None
