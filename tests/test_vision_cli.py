"""``dualoptim train | retrain | eval`` end to end on digits, through ``dualoptim.cli.main``."""

import json

import pytest
import torch

from dualoptim.cli import main
from dualoptim.vision.checkpoint import load_classifier

FAST = ["--dataset", "digits", "--epochs", "2", "--width", "8", "--batch-size", "64", "--no-progress"]


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "original"
    assert main(["train", *FAST, "--train-subset", "1000", "--seed", "3", "--out", str(out)]) == 0
    return out


def test_train_writes_original(original):
    model, meta, idx = load_classifier(original)
    assert meta.role == "original" and meta.dataset == "digits" and meta.model == "cnn"
    assert meta.model_options == {"width": 8, "hidden": 128}  # defaults recorded too
    assert meta.train_subset == 1000 and meta.recipe["epochs"] == 2
    assert meta.recipe["batch_size"] == 64 and meta.init_seed == 3 and idx is None
    assert meta.metrics["TA"] > 50 and meta.timings["train_s"] > 0


def test_retrain_then_eval(original, tmp_path, capsys):
    out = tmp_path / "retrain"
    assert main(["retrain", "--original", str(original), "--forget", "class:3", "--seed", "5", "--out", str(out),
                 "--no-progress", "--epochs", "1", "--no-svc"]) == 0
    model, meta, idx = load_classifier(out)
    assert meta.role == "retrain" and meta.recipe["epochs"] == 1 and meta.recipe["batch_size"] == 64
    from dualoptim.vision.checkpoint import dataset_for

    n3 = int((dataset_for(meta).train_y == 3).sum())  # class 3 of the 1000-image training subset
    assert meta.split["spec"] == "class:3" and meta.split["num_forget"] == n3 and 90 < n3 < 110
    assert meta.original["weights_sha256"] and meta.train_subset == 1000
    assert meta.metrics["FA"] == 0.0  # never saw class 3: cannot predict it
    assert "MIA_SVC" not in meta.metrics

    js = tmp_path / "eval.json"
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out), "--json", str(js), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    for name in ("FA", "UA", "RA", "TA", "MIA", "MIA_SVC"):
        assert name in printed
    res = json.loads(js.read_text())
    assert res["split"]["digest"] == meta.split["digest"] and res["forget_indices"] == idx.tolist()
    assert res["metrics"]["FA"] == 0.0 and res["metrics"]["UA"] == 100.0 and "entropy-LR" in \
        res["metric_definitions"]["MIA"]
    for k, v in meta.metrics.items():  # evaluating the saved model reproduces the stored metrics exactly
        assert res["metrics"][k] == v, k


def test_eval_original_on_random_split(original, tmp_path):
    js = tmp_path / "e.json"
    assert main(["eval", "--checkpoint", str(original), "--forget", "random:0.1", "--seed", "4", "--json",
                 str(js), "--no-svc"]) == 0
    res = json.loads(js.read_text())
    assert res["split"]["num_forget"] == 100 and res["split"]["seed"] == 4
    assert all(0 <= i < 1000 for i in res["forget_indices"])  # indices into the original's training subset


def test_errors_exit_2_and_write_nothing(original, tmp_path, capsys):
    out = tmp_path / "r"
    for spec in ("random:1.5", "class:42", f"file:{tmp_path / 'missing.txt'}"):
        assert main(["retrain", "--original", str(original), "--forget", spec, "--out", str(out)]) == 2
        assert not out.exists()
    assert main(["eval", "--checkpoint", str(original)]) == 2  # original stores no forget set
    assert "pass --forget" in capsys.readouterr().err
    assert main(["train", *FAST, "--out", str(original)]) == 2  # exists: needs --overwrite
    assert main(["retrain", "--original", str(tmp_path / "nope"), "--forget", "random:0.1", "--out", str(out)]) == 2
    assert main(["train", "--dataset", "digits", "--lr", "-1", "--out", str(out)]) == 2
    assert not out.exists()


def test_retrain_refuses_non_original(original, tmp_path):
    r = tmp_path / "r"
    assert main(["retrain", "--original", str(original), "--forget", "random:0.1", "--out", str(r), "--epochs", "1",
                 "--no-progress", "--no-svc"]) == 0
    assert main(["retrain", "--original", str(r), "--forget", "random:0.1", "--out", str(tmp_path / "r2")]) == 2
    model, _, _ = load_classifier(r)
    assert torch.isfinite(model(torch.zeros(1, 1, 8, 8))).all()


def test_threads_flag_does_not_leak(original, tmp_path):
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    assert main(["eval", "--checkpoint", str(original), "--forget", "class:0", "--no-svc", "--threads",
                 str(target)]) == 0
    assert torch.get_num_threads() == before
    assert main(["eval", "--checkpoint", str(original), "--forget", "class:0", "--threads", "0"]) == 2
