"""Metrics on hand-built models and on constructed member/non-member cases with known answers."""

import math

import pytest
import torch
from torch import nn

from dualoptim.vision.forget import make_forget_split
from dualoptim.vision.metrics import (
    DESCRIPTIONS,
    Outputs,
    accuracy,
    entropy,
    evaluate,
    loader_probs,
    metrics_callback,
    metrics_from_outputs,
    metrics_from_probs,
    mia_entropy_lr,
    mia_svc_confidence,
)


class Oracle(nn.Module):
    """Looks up the label stored in pixel (0, 0) of channel 0 (the test data puts it there)."""

    def __init__(self, num_classes: int, wrong: bool = False, confidence: float = 10.0):
        super().__init__()
        self.num_classes, self.wrong, self.confidence = num_classes, wrong, confidence
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        label = x[:, 0, 0, 0].round().long()
        if self.wrong:
            label = (label + 1) % self.num_classes
        return nn.functional.one_hot(label, self.num_classes).float() * self.confidence + self.dummy


def labelled_data(digits):
    """digits with the label written into pixel (0, 0), so Oracle is always right."""
    from dataclasses import replace

    tx, sx = digits.train_x.clone(), digits.test_x.clone()
    tx[:, 0, 0, 0] = digits.train_y.float()
    sx[:, 0, 0, 0] = digits.test_y.float()
    return replace(digits, train_x=tx, test_x=sx)


def test_always_right_and_always_wrong(digits):
    data = labelled_data(digits)
    split = make_forget_split("random:0.1", data.train_y, 0)
    right = evaluate(Oracle(10), data, split)
    assert right["FA"] == 100 and right["UA"] == 0 and right["RA"] == 100 and right["TA"] == 100
    wrong = evaluate(Oracle(10, wrong=True), data, split, mia_svc=False)
    assert wrong["FA"] == 0 and wrong["UA"] == 100 and wrong["RA"] == 0 and wrong["TA"] == 0
    assert "MIA_SVC" not in wrong and set(right) == set(DESCRIPTIONS)
    assert accuracy(Oracle(10), data.test_x, data.test_y) == 100


def test_accuracy_counts_exactly(digits):
    data = labelled_data(digits)
    y = data.test_y.clone()
    y[:45] = (y[:45] + 1) % 10  # 45 of 450 labels made wrong
    assert math.isclose(accuracy(Oracle(10), data.test_x, y, batch_size=7), 90.0)


def test_evaluate_restores_training_mode(digits):
    m = Oracle(10).train()
    evaluate(m, labelled_data(digits), make_forget_split("class:1", digits.train_y, 0), mia_svc=False)
    assert m.training


def test_metrics_callback_whole_split_or_seeded_subsample(digits):
    from types import SimpleNamespace

    data = labelled_data(digits)
    data.train_x[::2, 0, 0, 0] = (data.train_y[::2] + 1).float() % 10  # the Oracle is wrong on every other image
    split = make_forget_split("random:0.1", data.train_y, 0)
    event = SimpleNamespace(model=Oracle(10))
    whole = metrics_callback(data, split)(event)  # unlearn_classifier's default: FA/UA/RA/TA/MIA of the whole split
    assert whole == evaluate(event.model, data, split, mia_svc=False)
    curve = metrics_callback(data, split, samples=20, seed=3, keys=("FA", "RA", "TA"))  # the benchmark's curves
    got = curve(event)
    assert set(got) == {"FA", "RA", "TA"} and got == curve(event) == metrics_callback(
        data, split, samples=20, seed=3, keys=("FA", "RA", "TA"))(event)
    assert got["FA"] * 20 / 100 == round(got["FA"] * 20 / 100) and got["FA"] != whole["FA"]  # 20 forget samples
    assert got["TA"] == whole["TA"]  # the whole test set


def probs_with_true_prob(p_true: torch.Tensor, labels: torch.Tensor, k: int = 10) -> torch.Tensor:
    """Softmax-like rows with probability ``p_true`` on the label and the rest spread uniformly."""
    rest = ((1 - p_true) / (k - 1)).unsqueeze(1).expand(-1, k).clone()
    rest.scatter_(1, labels.unsqueeze(1), p_true.unsqueeze(1))
    return rest


def member_nonmember(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=g)
    members = probs_with_true_prob(0.95 + 0.04 * torch.rand(n, generator=g), y)  # confident, low entropy
    nonmembers = probs_with_true_prob(0.2 + 0.3 * torch.rand(n, generator=g), y)  # unsure, high entropy
    return y, members, nonmembers


def test_mia_entropy_lr_known_answers():
    y, members, nonmembers = member_nonmember()
    assert mia_entropy_lr(members, nonmembers, members[:50]) == 100.0  # forget looks like training data
    assert mia_entropy_lr(members, nonmembers, nonmembers[:50]) == 0.0  # forget looks unseen
    mixed = torch.cat([members[:30], nonmembers[:10]])
    assert mia_entropy_lr(members, nonmembers, mixed) == 75.0


def test_mia_svc_known_answers_and_direction():
    y, members, nonmembers = member_nonmember()
    # the SVC variant reports the NON-member rate
    assert mia_svc_confidence(members, y, nonmembers, y, members[:40], y[:40]) == 0.0
    assert mia_svc_confidence(members, y, nonmembers, y, nonmembers[:40], y[:40]) == 100.0
    forget = torch.cat([members[:10], nonmembers[:30]])
    assert mia_svc_confidence(members, y, nonmembers, y, forget, torch.cat([y[:10], y[:30]])) == 75.0
    # capped training size still separates the two
    assert mia_svc_confidence(members, y, nonmembers, y, nonmembers[:40], y[:40], max_samples=50) == 100.0


def test_entropy():
    uniform = torch.full((1, 4), 0.25)
    assert math.isclose(entropy(uniform).item(), math.log(4), rel_tol=1e-9)
    assert entropy(torch.tensor([[1.0, 0.0, 0.0]])).item() == 0.0


def test_metrics_from_probs_serves_sets_with_and_without_test(digits):
    g = torch.Generator().manual_seed(0)
    pair = lambda n: (torch.softmax(torch.randn(n, 10, generator=g), 1), torch.randint(0, 10, (n,), generator=g))  # noqa: E731
    forget, retain, test = pair(30), pair(80), pair(50)
    assert set(metrics_from_probs(forget, retain)) == {"FA", "UA", "RA"}  # no held-out data: no TA, no attacks
    assert set(metrics_from_probs(forget, retain, test, mia_svc=False)) == {"FA", "UA", "RA", "TA", "MIA"}
    full = metrics_from_probs(forget, retain, test, seed=3)
    assert full["FA"] == 100.0 * (forget[0].argmax(1) == forget[1]).double().mean().item()
    assert full["TA"] == 100.0 * (test[0].argmax(1) == test[1]).double().mean().item()
    assert full["MIA_SVC"] == mia_svc_confidence(retain[0], retain[1], test[0], test[1], *forget, seed=3)
    # the benchmark's entry point is the same computation on an ImageData split
    split = make_forget_split("random:0.1", digits.train_y, 0)
    probs = torch.softmax(torch.randn(digits.num_train, 10, generator=g), 1)
    test_probs = torch.softmax(torch.randn(len(digits.test_y), 10, generator=g), 1)
    out = Outputs(forget=probs[split.forget_idx], retain=probs[split.retain_idx], test=test_probs)
    assert metrics_from_outputs(out, digits, split, seed=1) == metrics_from_probs(
        (out.forget, digits.train_y[split.forget_idx]), (out.retain, digits.train_y[split.retain_idx]),
        (test_probs, digits.test_y), seed=1)


def test_loader_probs_restores_mode_and_keeps_order():
    model = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5)).train()
    x, y = torch.randn(10, 4), torch.arange(10) % 3
    probs, labels = loader_probs(model, [(x[:6], y[:6]), (x[6:], y[6:])])
    assert model.training and torch.equal(labels, y)
    model.eval()
    assert torch.allclose(probs, torch.softmax(model(x), 1))  # eval mode: dropout off


@pytest.mark.parametrize("name", ["MIA", "MIA_SVC"])
def test_mia_descriptions_state_direction(name):
    assert ("member rate" in DESCRIPTIONS[name]) and (("non-member" in DESCRIPTIONS[name]) == (name == "MIA_SVC"))
