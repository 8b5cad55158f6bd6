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
    assert a["sizes"] == {"forget": split.num_forget, "retain": split.num_retain, "test": len(data.test_y)}
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
