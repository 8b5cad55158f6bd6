"""Evaluation metrics on constructed cases: ROUGE-L recall, truth ratio, KS forget quality, token entropy."""

import numpy as np
import pytest

from dualoptim.llm.evaluate import (
    forget_quality,
    harmonic_mean,
    rouge_l_recall,
    token_entropy,
    truth_ratio,
    truth_ratio_score,
)


def test_rouge_l_recall():
    r = rouge_l_recall(["the cat sat", "completely different words", "The cats sat on the mat"],
                       ["the cat sat on the mat"] * 3)
    assert r[0] == pytest.approx(3 / 6)
    assert r[1] == 0.0
    assert r[2] == pytest.approx(1.0)  # stemmer: cats -> cat, case-insensitive


def test_truth_ratio():
    para = np.log(np.array([0.5, 0.1]))
    pert = np.log(np.array([[0.25, 0.25, 0.25], [0.2, 0.05, 0.8]]))
    r = truth_ratio(para, pert)
    assert r[0] == pytest.approx(0.5)
    assert r[1] == pytest.approx(((0.2 * 0.05 * 0.8) ** (1 / 3)) / 0.1)  # geometric mean / paraphrase
    assert truth_ratio_score(np.array([0.5, 2.0]), forget=True) == pytest.approx(0.5)
    assert truth_ratio_score(np.array([0.5, 2.0]), forget=False) == pytest.approx((0.5 + 0.0) / 2)


def test_forget_quality_ks():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, 200)
    assert forget_quality(a, a) == pytest.approx(1.0)
    assert forget_quality(a, a + 2.0) < 1e-10
    assert 0.01 < forget_quality(a, rng.uniform(0, 1, 200))


def test_token_entropy_and_harmonic_mean():
    assert token_entropy([1, 2, 3, 4]) == pytest.approx(1.0)
    assert token_entropy([7, 7, 7, 7]) == pytest.approx(0.0)
    assert token_entropy([1, 1, 2, 2]) == pytest.approx(1 / 2)  # 1 bit / log2(4)
    assert token_entropy([]) == 0.0
    assert harmonic_mean([0.5, 0.5]) == pytest.approx(0.5)
    assert harmonic_mean([1.0, 0.25]) == pytest.approx(0.4)
    assert harmonic_mean([1.0, 0.0]) == 0.0
