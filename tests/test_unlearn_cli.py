"""``dualoptim unlearn`` and ``dualoptim methods`` on scikit-learn digits, through ``dualoptim.cli.main``."""

from __future__ import annotations

import json

import pytest
import torch

from dualoptim.cli import main
from dualoptim.vision.checkpoint import load_classifier
from dualoptim.vision.methods import get_method_info, list_methods


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """A tiny digits CNN checkpoint made with ``dualoptim train``."""
    out = tmp_path_factory.mktemp("cli") / "original"
    assert main(["train", "--dataset", "digits", "--width", "8", "--epochs", "6", "--threads", "1", "--no-progress",
                 "--out", str(out)]) == 0
    return out


def _unlearn(original, out, *extra):
    return main(["unlearn", "--original", str(original), "--forget", "random:0.1", "--seed", "3", "--threads", "1",
                 "--no-progress", "--no-svc", "--out", str(out), *extra])


@pytest.mark.parametrize("optim", ["sgd", "adam+sgd"])
def test_unlearn_writes_checkpoint_and_metrics(original, tmp_path, optim, capsys):
    out = tmp_path / "salun"
    assert _unlearn(original, out, "--method", "salun", "--optim", optim, "--epochs", "1", "--opt", "ratio=0.4",
                    "--forget-lr", "0.01") == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["config"]["method"] == "salun" and report["config"]["optim"] == optim
    assert report["config"]["options"] == {"ratio": 0.4} and report["config"]["forget_lr"] == 0.01
    assert report["config"]["retain_lr"] == 0.01  # from the preset (digits: the paper's CIFAR-10 table)
    assert report["optimizer"] == ("dual" if "+" in optim else "shared")
    assert report["split"]["num_forget"] == 135 and report["split"]["seed"] == 3
    assert {"FA", "UA", "RA", "TA", "MIA"} <= set(report["metrics"])
    assert report["forget_steps"] == 2 and report["retain_steps"] == 10
    model, meta, forget_idx = load_classifier(out)
    assert meta.role == "unlearned" and meta.metrics == report["metrics"] and len(forget_idx) == 135
    assert meta.original["path"] == str(original)
    assert "salun with " + optim in capsys.readouterr().out
    # the unlearned checkpoint can be evaluated on its stored forget set
    assert main(["eval", "--checkpoint", str(out), "--no-svc", "--threads", "1"]) == 0


def test_unlearn_defaults_come_from_the_preset(original, tmp_path):
    out = tmp_path / "sfron"
    assert _unlearn(original, out, "--method", "sfron", "--iterations", "10", "--calibrate", "off") == 0
    cfg = json.loads((out / "metrics.json").read_text())["config"]
    assert (cfg["optim"], cfg["forget_lr"], cfg["retain_lr"], cfg["options"]["alpha"]) == ("adam+sgd", 1e-4, 0.01, 1.0)
    assert cfg["preset"] == "cifar10-paper"


@pytest.fixture(scope="module")
def memorized(tmp_path_factory):
    """A digits CNN trained to 100 % training accuracy on 400 images (a real generalisation gap)."""
    out = tmp_path_factory.mktemp("cli") / "memorized"
    assert main(["train", "--dataset", "digits", "--train-subset", "400", "--width", "8", "--epochs", "60",
                 "--threads", "1", "--no-progress", "--out", str(out)]) == 0
    return out


def test_unlearn_without_learning_rates_calibrates_and_forgets(memorized, tmp_path, capsys):
    out = tmp_path / "rl"
    assert main(["unlearn", "--original", str(memorized), "--forget", "random:0.3", "--seed", "3", "--threads", "1",
                 "--no-progress", "--no-svc", "--out", str(out), "--method", "rl"]) == 0
    text = capsys.readouterr().out
    report = json.loads((out / "metrics.json").read_text())
    assert report["calibration"]["mode"] == "auto" and report["calibration"]["stop_reason"]
    assert report["config"]["lr_source"].startswith("calibrated") and "calibrated forget lr" in text
    # the original's checkpoint records its training length: rule v5 with a time budget of 20 % of a Retrain of it
    budget = report["calibration"]["budget"]
    assert report["calibration"]["rule"] == "v6" and "time budget" in text
    assert budget["train_epochs"] == 60 and budget["source"] == "the original checkpoint's recipe"
    assert "verdict: " in text and report["verdict"] and report["verdict_details"]["kind"] == "sample"
    # the calibrated run acts on a memorizing model (fails if the defaults leave it unchanged); whether that is
    # enough is the verdict's job, checked against its own numbers
    assert report["verdict_details"]["before"]["FA"] == 100.0 and report["forget_steps"] > 0
    unlearned, _, _ = load_classifier(out)
    before, _, _ = load_classifier(memorized)
    assert any(not torch.equal(a, b) for a, b in zip(unlearned.state_dict().values(), before.state_dict().values()))
    d = report["verdict_details"]  # rule v5's target: accuracy, loss AUC and the Gap's attack
    met = (d["FA"] <= d["HA"] + d["tol_acc"] and d["AUC"] <= 0.5 + d["tol_auc"]
           and d["MIA_forget"] <= d["MIA_heldout"] + d["tol_mia"])
    assert report["verdict"].startswith(("forgotten", "utility lost") if met else "NOT forgotten")
    # the audit of the saved run says how many steps it took (it printed "after ? steps")
    assert report["timings"]["unlearn_steps"] == report["steps"]
    assert main(["audit", "--original", str(memorized), "--unlearned", str(out), "--no-svc", "--threads", "1"]) == 0
    assert f"{report['calibration']['stop_reason']} after {report['steps']} steps" in capsys.readouterr().out
    # explicit learning rates switch calibration off, and the verdict is printed there too
    out2 = tmp_path / "rl-fixed"
    assert main(["unlearn", "--original", str(memorized), "--forget", "random:0.3", "--seed", "3", "--threads", "1",
                 "--no-progress", "--no-svc", "--out", str(out2), "--method", "rl", "--forget-lr", "1e-5",
                 "--retain-lr", "1e-5", "--epochs", "1"]) == 0
    report = json.loads((out2 / "metrics.json").read_text())
    assert report["calibration"] == {"mode": "off", "reason": "--forget-lr given"}
    assert report["verdict"].startswith("NOT forgotten") and "verdict: NOT forgotten" in capsys.readouterr().out


def test_nan_guard_exits_2_and_leaves_no_output(original, tmp_path, capsys):
    out = tmp_path / "ga"
    code = _unlearn(original, out, "--method", "ga", "--optim", "sgd", "--forget-lr", "1e30", "--epochs", "2")
    assert code == 2
    err = capsys.readouterr().err
    assert "forget loss became" in err and "step" in err and err.count("\n") == 1
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []  # no temporary folder left either


def test_unlearn_heldout_file_reaches_calibration_and_verdict(original, tmp_path, capsys):
    """``--heldout FILE`` (here: a 120-image slice of the test split) is what calibration and the verdict use."""
    from dualoptim.vision import load_dataset

    data = load_dataset("digits")
    torch.save((data.test_x[:120], data.test_y[:120]), tmp_path / "val.pt")
    out = tmp_path / "rl"
    assert _unlearn(original, out, "--method", "rl", "--epochs", "1", "--heldout", str(tmp_path / "val.pt"),
                    "--train-epochs", "7") == 0
    report = json.loads((out / "metrics.json").read_text())
    assert report["calibration"]["budget"] == {"train_epochs": 7, "source": "--train-epochs",
                                               "note": "epochs= / iterations= given"}  # --train-epochs overrides
    d = report["verdict_details"]
    assert d["n_heldout"] == 120 and d["heldout"] == "held-out (val.pt)"
    assert report["heldout"] == str(tmp_path / "val.pt")
    assert report["calibration"]["mode"] == "auto" and "val.pt" in report["verdict"]
    assert _unlearn(original, tmp_path / "y", "--method", "rl", "--heldout", str(tmp_path / "nope.npz")) == 2
    assert "--heldout" in capsys.readouterr().err and not (tmp_path / "y").exists()


def test_verdict_outputs_pass_over_the_test_split_only_when_it_is_the_heldout_data(monkeypatch):
    """``--heldout FILE`` / ``none``: the original's verdict outputs need no forward pass over the test split; the
    forget and retain outputs are those of the full pass (``--heldout test``)."""
    from types import SimpleNamespace

    import dualoptim.vision.metrics as metrics
    from dualoptim.vision.unlearn_cli import verdict_outputs

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    data = SimpleNamespace(train_x=torch.randn(10, 1, 2, 2), train_y=torch.randint(0, 3, (10,)),
                           test_x=torch.randn(6, 1, 2, 2), test_y=torch.randint(0, 3, (6,)))
    split = SimpleNamespace(forget_idx=torch.arange(3), retain_idx=torch.arange(3, 10))
    seen, real = [], metrics.predict_probs
    monkeypatch.setattr(metrics, "predict_probs", lambda m, x, *a, **k: seen.append(x) or real(m, x, *a, **k))
    full = verdict_outputs(model, data, split, (data.test_x, data.test_y))
    assert len(seen) == 3 and seen[-1] is data.test_x and torch.equal(full[2][0], real(model, data.test_x))
    heldout_file = (torch.randn(5, 1, 2, 2), torch.randint(0, 3, (5,)))
    for heldout in (heldout_file, None):
        seen.clear()
        out = verdict_outputs(model, data, split, heldout)
        assert len(seen) == 2 + (heldout is not None) and not any(x is data.test_x for x in seen)
        assert all(torch.equal(out[i][j], full[i][j]) for i in (0, 1) for j in (0, 1))
        assert out[2] is None if heldout is None else torch.equal(out[2][0], real(model, heldout_file[0]))


def test_train_epochs_recipe_reads_the_original_checkpoint(original, tmp_path):
    out = tmp_path / "rl"
    assert _unlearn(original, out, "--method", "rl", "--epochs", "1", "--train-epochs", "recipe") == 0
    budget = json.loads((out / "metrics.json").read_text())["calibration"]["budget"]
    recipe = json.loads((original / "meta.json").read_text())["recipe"]
    assert budget["train_epochs"] == recipe["epochs"] and budget["source"] == "the original checkpoint's recipe"


@pytest.mark.parametrize("args,message", [
    (["--method", "salun", "--opt", "sparsity=0.5"], "no option"),
    (["--method", "salun", "--opt", "ratio"], "KEY=VALUE"),
    (["--method", "rl", "--optim", "adam+nope"], "unknown optimizer"),
    (["--method", "scrub", "--optim", "adam+sgd"], "retain_lr"),
    (["--method", "rl", "--preset", "nope"], "unknown preset"),
    (["--method", "rl", "--forget-lr", "-1"], "forget_lr"),
    (["--method", "rl", "--bf16"], "--bf16 only apply to the preset path"),
    (["--method", "rl", "--train-epochs", "0"], "--train-epochs must be auto, recipe, none or an integer >= 1"),
    (["--method", "rl", "--train-epochs", "forty"], "--train-epochs must be auto, recipe, none or an integer >= 1"),
])
def test_bad_options_exit_2_before_any_work(original, tmp_path, capsys, args, message):
    assert _unlearn(original, tmp_path / "x", *args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_existing_output_needs_overwrite(original, tmp_path, capsys):
    (tmp_path / "x").mkdir()
    assert _unlearn(original, tmp_path / "x", "--method", "ft", "--epochs", "1") == 2
    assert "--overwrite" in capsys.readouterr().err


def test_methods_lists_every_method_and_option(capsys):
    assert main(["methods", "--presets"]) == 0
    out = capsys.readouterr().out
    for name in list_methods():
        assert f"\n{name} " in "\n" + out
        for option in get_method_info(name).options:
            assert f"--opt {option.name}=" in out
    assert "preset fashion-mnist-quick" in out and "preset cifar10-paper" in out
