"""``dualoptim audit`` on checkpoint folders (tiny CNN on scikit-learn digits)."""

from __future__ import annotations

import json

import pytest
import torch

from dualoptim.cli import main
from dualoptim.io import atomic_write_json
from dualoptim.vision import TrainConfig, create_model, load_dataset, make_forget_split, train_classifier
from dualoptim.vision.checkpoint import ClassifierMeta, save_classifier, weights_digest
from dualoptim.vision.metrics import evaluate


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("audit")
    data = load_dataset("digits")
    split = make_forget_split("random:0.1", data.train_y, 4)
    recipe = TrainConfig(epochs=1, batch_size=64, augment="none")

    def fit(idx, seed, role):
        torch.manual_seed(seed)
        model = create_model("cnn", data.num_classes, data.in_channels, data.image_size, width=4, hidden=16)
        train_classifier(model, data, idx, recipe, progress=False)
        meta = ClassifierMeta(dataset="digits", model="cnn", num_classes=10, in_channels=1, image_size=8,
                              model_options={"width": 4, "hidden": 16}, recipe=recipe.to_dict(), role=role)
        return model, meta

    original, ometa = fit(None, 0, "original")
    save_classifier(root / "orig", original, ometa)
    retrain, rmeta = fit(split.retain_idx, 1, "retrain")
    save_classifier(root / "re", retrain, rmeta, split)
    unlearned, umeta = fit(None, 2, "unlearned")  # stands in for an unlearned model
    umeta.original = {"weights_sha256": weights_digest(original.state_dict())}
    umeta.timings = {"unlearn_s": 1.5}
    save_classifier(root / "un", unlearned, umeta, split)
    atomic_write_json(root / "un" / "metrics.json", {
        "config": {"method": "salun", "optim": "adam+sgd", "forget_lr": 1e-3, "retain_lr": 0.01},
        "evals": [{"step": 0, "FA": 90.0, "RA": 95.0, "TA": 92.0, "MIA": 70.0},
                  {"step": 5, "FA": 80.0, "RA": 94.0, "TA": 91.0, "MIA": 60.0}]})
    yield root, data, split, {"original": original, "unlearned": unlearned, "retrain": retrain}
    torch.set_num_threads(threads)


def test_audit_command_writes_json_and_html(checkpoints, capsys):
    root, data, split, models = checkpoints
    threads = torch.get_num_threads()
    rc = main(["audit", "--original", str(root / "orig"), "--unlearned", str(root / "un"), "--retrain",
               str(root / "re"), "--forget", "random:0.1", "--seed", "4", "--json", str(root / "a.json"),
               "--html", str(root / "a.html"), "--threads", "2"])
    assert rc == 0 and torch.get_num_threads() == threads  # --threads applies to the command only
    assert "Gap=" in capsys.readouterr().out
    a = json.loads((root / "a.json").read_text())
    assert a["method"] == "salun" and a["optim"] == "adam+sgd" and a["timings"]["unlearn_s"] == 1.5
    assert a["sizes"] == {"forget": split.num_forget, "retain": split.num_retain, "test": len(data.test_y),
                          "heldout": len(data.test_y)}
    assert a["source"]["split"]["digest"] == split.digest
    for name, model in models.items():
        want = evaluate(model, data, split, seed=4)
        for m, v in want.items():
            assert a[name][m] == pytest.approx(v), (name, m)
    gap = sum(abs(a["unlearned"][m] - a["retrain"][m]) for m in ("FA", "RA", "TA", "MIA")) / 4
    assert a["gap"]["Unlearned"] == pytest.approx(gap)
    html = (root / "a.html").read_text()
    assert "data:image/png;base64," in html and "http" not in html
    assert a["verdict"].split(":")[0] in ("forgotten", "NOT forgotten", "utility lost")
    assert f"Verdict: {a['verdict_details']['status']}" in html and "Gap to Retrain = mean" in html


def test_audit_warnings_reach_json_html_and_stdout(checkpoints, capsys):
    root, *_ = checkpoints
    # audited on another forget set than the unlearned and Retrain checkpoints were made for
    rc = main(["audit", "--original", str(root / "orig"), "--unlearned", str(root / "un"), "--retrain",
               str(root / "re"), "--forget", "random:0.1", "--seed", "5", "--json", str(root / "w.json"),
               "--html", str(root / "w.html"), "--no-svc", "--threads", "1"])
    assert rc == 0
    out = capsys.readouterr().out
    warnings = json.loads((root / "w.json").read_text())["warnings"]
    assert any("retrain checkpoint was made for forget set random:0.1 seed 4" in w for w in warnings)
    assert any("unlearned checkpoint was made for forget set" in w for w in warnings)
    html = (root / "w.html").read_text()
    assert all(w.split(":")[0] in html for w in warnings) and "Warning:" in html
    assert "warning: the retrain checkpoint was made for forget set" in out and "verdict: " in out


def test_audit_command_errors_are_one_line(checkpoints, capsys):
    root, *_ = checkpoints
    rc = main(["audit", "--original", str(root / "orig"), "--unlearned", str(root / "missing")])
    assert rc == 2 and "checkpoint folder not found" in capsys.readouterr().err
    rc = main(["audit", "--original", str(root / "orig"), "--unlearned", str(root / "orig")])
    assert rc == 2 and "stores no forget set" in capsys.readouterr().err


def test_audit_heldout_file_none_and_default(checkpoints, tmp_path, capsys):
    """``--heldout FILE`` feeds the verdict (and only the verdict); ``none`` falls back to "unknown"; the default
    names the test split; a bad file is one error line before anything is written."""
    import numpy as np

    from dualoptim.vision.metrics import predict_probs

    root, data, split, models = checkpoints
    base = ["audit", "--original", str(root / "orig"), "--unlearned", str(root / "un"), "--forget", "random:0.1",
            "--seed", "4", "--no-svc", "--threads", "1"]
    # held-out = the forget set's own images: it then scores exactly like "held-out" (FA = HA, AUC = 0.5); with
    # the test split instead (flag ignored) HA, AUC and the sample count all differ
    fx, fy = data.train_x[split.forget_idx], data.train_y[split.forget_idx]
    torch.save({"x": fx, "y": fy}, tmp_path / "same.pt")
    assert main([*base, "--heldout", str(tmp_path / "same.pt"), "--json", str(tmp_path / "f.json")]) == 0
    out = capsys.readouterr().out
    a = json.loads((tmp_path / "f.json").read_text())
    d = a["verdict_details"]
    want = 100.0 * (predict_probs(models["unlearned"], fx).argmax(1) == fy).double().mean().item()
    assert d["HA"] == pytest.approx(want) and d["FA"] == pytest.approx(want) and d["AUC"] == pytest.approx(0.5)
    assert d["n_heldout"] == split.num_forget and a["sizes"]["heldout"] == split.num_forget
    assert d["target"] == "target met" and d["heldout"] == "held-out (same.pt)" and "same.pt" in a["verdict"]
    assert a["sizes"]["test"] == len(data.test_y) and a["source"]["heldout"] == str(tmp_path / "same.pt")
    assert f"verdict: {a['verdict']}" in out
    # .npz with a slice of the test split: its size reaches the verdict
    np.savez(tmp_path / "val.npz", x=data.test_x[:100].numpy(), y=data.test_y[:100].numpy())
    assert main([*base, "--heldout", str(tmp_path / "val.npz"), "--json", str(tmp_path / "v.json")]) == 0
    assert json.loads((tmp_path / "v.json").read_text())["verdict_details"]["n_heldout"] == 100
    # none: the sample-wise verdict cannot be decided and says so; default: the test split, named
    assert main([*base, "--heldout", "none", "--json", str(tmp_path / "n.json")]) == 0
    a = json.loads((tmp_path / "n.json").read_text())
    assert a["verdict"].startswith("unknown: no held-out data") and "--heldout" in a["verdict"]
    assert a["verdict_details"]["heldout"] is None and a["sizes"]["heldout"] == 0
    assert main([*base, "--json", str(tmp_path / "t.json")]) == 0
    d = json.loads((tmp_path / "t.json").read_text())["verdict_details"]
    assert d["heldout"] == "held-out (test split)" and d["n_heldout"] == len(data.test_y)
    capsys.readouterr()
    # unusable files: one line on stderr, exit 2, no output written
    np.savez(tmp_path / "bad.npz", x=np.zeros((5, 1, 4, 4), np.float32), y=np.zeros(5, np.int64))
    torch.save({"x": fx, "y": fy + 10}, tmp_path / "labels.pt")
    for bad, message in (("bad.npz", "expected float (N, 1, 8, 8)"), ("labels.pt", "labels must be class indices"),
                         ("missing.pt", "no such file")):
        assert main([*base, "--heldout", str(tmp_path / bad), "--json", str(tmp_path / "x.json")]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "x.json").exists()
