"""Forget splits: invariants (disjoint, complete, reproducible, subset of training data) and every error path."""

import json

import numpy as np
import pytest
import torch

from dualoptim.errors import ConfigError, DataNotFoundError
from dualoptim.vision.forget import indices_digest, make_forget_split

LABELS = torch.arange(100) % 10


def check_partition(split, n):
    f, r = split.forget_idx, split.retain_idx
    assert f.dtype == torch.int64 and r.dtype == torch.int64
    assert torch.all(f[1:] > f[:-1]) and torch.all(r[1:] > r[:-1])  # sorted, no duplicates
    assert len(set(f.tolist()) & set(r.tolist())) == 0  # disjoint
    assert sorted(f.tolist() + r.tolist()) == list(range(n))  # complete, within the training set
    assert split.digest == indices_digest(f)


@pytest.mark.parametrize("spec,n_forget", [("random:0.1", 10), ("random:0.5", 50), ("class:3", 10)])
def test_split_invariants(spec, n_forget):
    s = make_forget_split(spec, LABELS, seed=1)
    check_partition(s, 100)
    assert s.num_forget == n_forget and s.spec == spec and s.seed == 1
    assert s.describe() == {"spec": spec, "seed": 1, "digest": s.digest, "num_forget": n_forget,
                            "num_retain": 100 - n_forget}


def test_random_split_reproducible_and_seeded():
    a, b = make_forget_split("random:0.2", LABELS, 5), make_forget_split("random:0.2", LABELS, 5)
    assert torch.equal(a.forget_idx, b.forget_idx) and a.digest == b.digest
    c = make_forget_split("random:0.2", LABELS, 6)
    assert c.digest != a.digest


def test_class_split_is_exactly_that_class():
    s = make_forget_split("class:7", LABELS, 0)
    assert torch.all(LABELS[s.forget_idx] == 7) and not torch.any(LABELS[s.retain_idx] == 7)


def test_split_is_into_the_given_training_set(digits):
    # a subset-trained original: indices must address the subset, never the full set (the reference code re-split)
    sub = digits.subset(300, seed=0)
    s = make_forget_split("random:0.1", sub.train_y, 0)
    check_partition(s, 300)


@pytest.mark.parametrize("suffix", [".txt", ".json", ".npy"])
def test_index_files(tmp_path, suffix):
    idx = [3, 17, 42]
    path = tmp_path / f"forget{suffix}"
    if suffix == ".npy":
        np.save(path, np.array(idx))
    elif suffix == ".json":
        path.write_text(json.dumps(idx))
    else:
        path.write_text("42\n3, 17\n")
    for spec in (f"file:{path}", str(path)):
        s = make_forget_split(spec, LABELS, 0)
        assert s.forget_idx.tolist() == [3, 17, 42]
        check_partition(s, 100)


@pytest.mark.parametrize("spec,match", [
    ("random:0", r"\(0, 1\)"), ("random:1", r"\(0, 1\)"), ("random:1.5", r"\(0, 1\)"), ("random:-0.1", r"\(0, 1\)"),
    ("random:abc", "fraction"), ("random:0.001", "selects 0"), ("class:10", "not in the training set"),
    ("class:x", "integer"), ("bogus", "unknown forget spec"), ("", "unknown forget spec"),
])
def test_spec_errors(spec, match):
    with pytest.raises(ConfigError, match=match):
        make_forget_split(spec, LABELS, 0)


@pytest.mark.parametrize("content,match", [
    ("", "empty"), ("1 2 2", "duplicated"), ("5 100", "outside"), ("-1", "outside"), ("1.5", "integers"),
    ("a b", "integers"), (" ".join(map(str, range(100))), "whole training set"),
])
def test_index_file_errors(tmp_path, content, match):
    path = tmp_path / "idx.txt"
    path.write_text(content)
    with pytest.raises(ConfigError, match=match):
        make_forget_split(f"file:{path}", LABELS, 0)


def test_missing_index_file(tmp_path):
    with pytest.raises(DataNotFoundError):
        make_forget_split(f"file:{tmp_path / 'nope.txt'}", LABELS, 0)
    path = tmp_path / "obj.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ConfigError):  # no pickles from index files
        make_forget_split(f"file:{path}", LABELS, 0)


def test_digest_is_order_independent():
    assert indices_digest(torch.tensor([3, 1, 2])) == indices_digest(np.array([1, 2, 3]))
    assert indices_digest(torch.tensor([1, 2])) != indices_digest(torch.tensor([1, 3]))
