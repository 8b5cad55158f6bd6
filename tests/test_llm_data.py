"""Synthetic TOFU-style benchmark: schema, nested splits, complements, determinism."""

import pytest

from dualoptim.errors import ConfigError, DataNotFoundError
from dualoptim.llm.data import FORGET_SPLITS, RETAIN_OF, SynthConfig, generate, load_benchmark, save_benchmark


@pytest.fixture(scope="module")
def data():
    return generate(SynthConfig(n_authors=30, background_authors=3, seed=1))


def _qs(split):
    return [r["question"] for r in split]


def test_schema_and_sizes(data):
    assert len(data["full"]) == 30 * 20
    assert [len(data[s]) for s in FORGET_SPLITS] == [40, 100, 200]
    assert min(len(data[s]) for s in FORGET_SPLITS) >= 40
    for r in data["forget10_perturbed"] + data["retain_perturbed"]:
        assert set(r) >= {"question", "answer", "paraphrased_answer", "paraphrased_question", "perturbed_answer"}
        assert len(r["perturbed_answer"]) == 5 and len(set(r["perturbed_answer"])) == 5
        assert r["paraphrased_answer"] not in r["perturbed_answer"]
    for s in ("real_authors_perturbed", "world_facts_perturbed"):
        assert all(r["answer"] not in r["perturbed_answer"] for r in data[s])
    assert len(set(data["idk"])) == 100


def test_nested_forget_and_complements(data):
    full = _qs(data["full"])
    assert len(set(full)) == len(full)
    f01, f05, f10 = (set(_qs(data[s])) for s in FORGET_SPLITS)
    assert f01 < f05 < f10 <= set(full)
    for f in FORGET_SPLITS:
        retain = set(_qs(data[RETAIN_OF[f]]))
        assert retain | set(_qs(data[f])) == set(full) and not retain & set(_qs(data[f]))
        assert _qs(data[f"{f}_perturbed"]) == _qs(data[f])
    assert not set(_qs(data["retain_perturbed"])) & f10
    authors_full = {r["author"] for r in data["forget10_perturbed"] + data["retain_perturbed"]}
    hold = set(_qs(data["holdout10"]))
    assert not hold & set(full) and set(_qs(data["holdout01"])) < hold
    assert not any(a in q for a in authors_full for q in _qs(data["base_corpus"]))
    assert set(_qs(data["real_authors"])) <= set(_qs(data["base_corpus"]))


def test_deterministic_and_roundtrip(data, tmp_path):
    cfg = SynthConfig(n_authors=30, background_authors=3, seed=1)
    assert generate(cfg) == data
    assert generate(SynthConfig(n_authors=30, background_authors=3, seed=2))["full"] != data["full"]
    save_benchmark(data, tmp_path)
    assert load_benchmark(tmp_path)["forget05"] == data["forget05"]


def test_errors(tmp_path):
    with pytest.raises(ConfigError, match=">= 40"):
        SynthConfig(forget_authors=(1, 5, 10))
    with pytest.raises(DataNotFoundError, match="make-data"):
        load_benchmark(tmp_path / "missing")
