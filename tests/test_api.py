"""dualoptim.unlearn on user models and data, the Audit (JSON/HTML), and the README example."""

from __future__ import annotations

import copy
import json
import os
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset

import dualoptim
from dualoptim.errors import ConfigError
from dualoptim.vision.api import default_lrs, unlearn
from dualoptim.vision.metrics import mia_entropy_lr, mia_svc_confidence, predict_probs

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: results depend on the thread count


def blobs(n: int = 240, classes: int = 3, dim: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    centers = torch.randn(classes, dim, generator=g) * 2
    return centers[y] + torch.randn(n, dim, generator=g), y


def trained_mlp(x: torch.Tensor, y: torch.Tensor, dropout: float = 0.0, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(x.shape[1], 32), nn.ReLU(), nn.Dropout(dropout), nn.Linear(32, int(y.max()) + 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def task():
    x, y = blobs(300)
    train_x, train_y, test_x, test_y = x[:240], y[:240], x[240:], y[240:]
    model = trained_mlp(train_x, train_y)
    return SimpleNamespace(model=model, forget=(train_x[:24], train_y[:24]), retain=(train_x[24:], train_y[24:]),
                           test=(test_x, test_y), x=train_x, y=train_y)


FAST = dict(epochs=2, batch_size=32, progress=False)


def test_readme_example_runs_as_written(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    section = text.split("## Unlearn your own model", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert 10 <= len([line for line in code.splitlines() if line.strip()]) <= 20
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__readme__"}
    exec(compile(code, "README.md", "exec"), namespace)
    audit = namespace["out"].audit
    assert "torch.manual_seed" in code and "forget_lr" not in code  # seeded; defaults only
    # the original memorized its forget set; the defaults visibly forget it (fails if they leave it unchanged)
    assert audit.original["FA"] >= 99 and audit.unlearned["FA"] <= audit.original["FA"] - 3
    assert not audit.verdict.startswith("NOT forgotten") and audit.calibration["mode"] == "auto"
    assert (tmp_path / "audit.html").is_file() and "Verdict: " in (tmp_path / "audit.html").read_text()


def test_audit_fields_match_direct_metric_calls(task):
    model = copy.deepcopy(task.model)
    before = copy.deepcopy(model)
    reference = trained_mlp(*task.retain, seed=1)
    out = unlearn(model, forget=task.forget, retain=task.retain, test=task.test, method="rl", retrain=reference,
                  seed=3, calibrate="off", **FAST)
    a = json.loads(out.audit.to_json())
    for key in ("method", "optim", "hyperparameters", "sizes", "original", "unlearned", "retrain", "gap",
                "metric_gaps", "gap_metrics", "timings", "versions", "created", "metric_definitions", "verdict",
                "verdict_details", "calibration", "warnings"):
        assert key in a, key
    assert a["method"] == "rl" and a["optim"] == "adam+sgd" and a["sizes"] == {"forget": 24, "retain": 216, "test": 60}
    assert a["hyperparameters"]["forget_lr"] > 0 and a["timings"]["unlearn_s"] > 0
    assert a["hyperparameters"]["forget_steps"] == 2 * 1 and a["hyperparameters"]["lr_source"].startswith("default")
    assert a["hyperparameters"]["forget_lr"] == pytest.approx(1e-3)  # 1 batch x 2 epochs: scaled 10x (the cap)
    assert "member" in a["metric_definitions"]["MIA"] and "non-member" in a["metric_definitions"]["MIA_SVC"]
    assert "Gap to Retrain = mean" in a["metric_definitions"]["Gap"]
    assert a["calibration"]["mode"] == "off" and a["calibration"]["reason"] == "calibrate='off'"
    assert set(a["unlearned"]) == {"FA", "UA", "RA", "TA", "MIA", "MIA_SVC"}
    (fx, fy), (rx, ry), (tx, ty) = task.forget, task.retain, task.test
    for name, net in (("original", before), ("unlearned", out.model), ("retrain", reference)):
        pf, pr, pt = predict_probs(net, fx), predict_probs(net, rx), predict_probs(net, tx)
        want = {"FA": 100.0 * (pf.argmax(1) == fy).double().mean().item(),
                "RA": 100.0 * (pr.argmax(1) == ry).double().mean().item(),
                "TA": 100.0 * (pt.argmax(1) == ty).double().mean().item(),
                "MIA": mia_entropy_lr(pr, pt, pf), "MIA_SVC": mia_svc_confidence(pr, ry, pt, ty, pf, fy, seed=3)}
        for m, v in want.items():
            assert a[name][m] == pytest.approx(v, abs=1e-6), (name, m)
        assert a[name]["UA"] == pytest.approx(100 - want["FA"])
    gap = sum(abs(a["unlearned"][m] - a["retrain"][m]) for m in ("FA", "RA", "TA", "MIA")) / 4
    assert a["gap"]["Unlearned"] == pytest.approx(gap)
    assert not out.model.training


def test_model_with_dropout_and_batchnorm_on_datasets_and_loaders():
    x, y = blobs(200, dim=6)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))
    data = TensorDataset(x, y)
    forget, retain = Subset(data, range(20)), Subset(data, range(20, 160))
    test = DataLoader(Subset(data, range(160, 200)), batch_size=16)
    out = unlearn(model, forget=forget, retain=DataLoader(retain, batch_size=32, shuffle=True), test=test,
                  method="salun", **FAST)
    assert out.audit.sizes == {"forget": 20, "retain": 140, "test": 40}
    assert not out.model.training
    with torch.no_grad():  # eval mode: dropout off, deterministic
        assert torch.equal(out.model(x[:5]), out.model(x[:5]))


class DictNet(nn.Module):
    def __init__(self, key: str = "logits") -> None:
        super().__init__()
        self.key, self.fc = key, nn.Linear(8, 3)

    def forward(self, x):
        return {self.key: self.fc(x), "features": x}


class TupleNet(DictNet):
    def forward(self, x):
        return self.fc(x), x


class HFStyle(DictNet):
    def forward(self, x):
        return SimpleNamespace(logits=self.fc(x), hidden_states=None)


def test_non_standard_outputs_are_handled_or_explained(task):
    kw = dict(forget=task.forget, retain=task.retain, method="ga", **FAST)
    for model in (DictNet("logits"), HFStyle()):  # a "logits" entry is found automatically
        unlearn(model, **kw)
    with pytest.raises(ConfigError, match=r"expects model\(x\) to return a logits tensor of shape \(N, num_classes\)"):
        unlearn(DictNet("scores"), **kw)
    with pytest.raises(ConfigError, match="output_key"):
        unlearn(TupleNet(), **kw)
    unlearn(DictNet("scores"), output_key="scores", **kw)
    unlearn(TupleNet(), output_key=0, **kw)
    with pytest.raises(ConfigError, match=r"shape \(N, num_classes\)"):
        unlearn(nn.Sequential(nn.Linear(8, 6), nn.Unflatten(1, (2, 3))), **kw)  # (N, 2, 3): not logits


def test_overlapping_empty_or_bad_sets_are_refused(task):
    data = TensorDataset(task.x, task.y)
    model = copy.deepcopy(task.model)
    kw = dict(method="rl", **FAST)
    with pytest.raises(ConfigError, match="overlap: 5 samples"):
        unlearn(model, forget=Subset(data, range(20)), retain=Subset(data, range(15, 240)), **kw)
    with pytest.raises(ConfigError, match="overlap"):  # retain = the whole training set
        unlearn(model, forget=Subset(data, range(20)), retain=data, **kw)
    with pytest.raises(ConfigError, match="overlap"):  # through DataLoaders and nested Subsets
        inner = Subset(data, range(100))
        unlearn(model, forget=DataLoader(Subset(inner, [3, 4])), retain=DataLoader(Subset(data, [4, 50])), **kw)
    with pytest.raises(ConfigError, match="same object"):
        unlearn(model, forget=task.retain, retain=task.retain, **kw)
    with pytest.raises(ConfigError, match="forget set is empty"):
        unlearn(model, forget=(task.x[:0], task.y[:0]), retain=task.retain, **kw)
    with pytest.raises(ConfigError, match="forget set is empty"):
        unlearn(model, forget=Subset(data, []), retain=Subset(data, range(5, 9)), **kw)
    with pytest.raises(ConfigError, match=r"labels must be class indices in \[0, 3\)"):
        unlearn(model, forget=(task.x[:4], task.y[:4] + 5), retain=task.retain, **kw)
    with pytest.raises(ConfigError, match=r"retain labels must be class indices in \[0, 3\)"):
        unlearn(model, forget=task.forget, retain=TensorDataset(task.x[30:40], task.y[30:40] - 1), **kw)
    with pytest.raises(ConfigError, match="must be a torch Dataset"):
        unlearn(model, forget=[1, 2, 3], retain=task.retain, **kw)
    unlearn(model, forget=Subset(data, range(20)), retain=Subset(data, range(20, 240)), **kw)  # disjoint: fine


def test_retrain_true_trains_a_reference_and_gap(task):
    model = copy.deepcopy(task.model)
    out = unlearn(model, forget=task.forget, retain=task.retain, test=task.test, method="salun", retrain=True,
                  retrain_recipe={"epochs": 3, "batch_size": 32, "lr": 0.05}, eval_every=4, **FAST)
    a = out.audit
    assert out.retrain_model is not None and out.retrain_model is not out.model
    assert a.timings["retrain_steps"] == 3 * 7 and a.timings["retrain_s"] > 0
    assert a.hyperparameters["retrain"] == "trained" and a.hyperparameters["retrain_recipe"]["epochs"] == 3
    assert a.gap_metrics == ["FA", "RA", "TA", "MIA"]
    for row in ("Original", "Unlearned"):
        rows = a.original if row == "Original" else a.unlearned
        assert a.gap[row] == pytest.approx(sum(abs(rows[m] - a.retrain[m]) for m in a.gap_metrics) / 4)
    assert len(a.process) >= 2 and {"FA", "RA", "TA", "MIA", "step"} <= set(a.process[-1])
    # the Retrain model is a re-initialised copy: not the original's weights
    assert not torch.equal(out.retrain_model[0].weight, task.model[0].weight)

    class Custom(nn.Module):  # a parameter with no reset_parameters(): True cannot re-initialise it
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(8, 3))

        def forward(self, x):
            return x @ self.w

    with pytest.raises(ConfigError, match="reset_parameters"):
        unlearn(Custom(), forget=task.forget, retain=task.retain, method="rl", retrain=True, **FAST)
    out = unlearn(Custom(), forget=task.forget, retain=task.retain, method="rl", retrain=Custom,
                  retrain_recipe={"epochs": 1}, **FAST)
    assert out.audit.retrain is not None and out.audit.gap_metrics == ["FA", "RA"]  # no test set: no TA/MIA
    assert out.audit.unlearned["TA"] is None and json.loads(out.audit.to_json())["unlearned"]["MIA"] is None
    # a bad recipe for a Retrain factory is refused before any work: the model is left as it was
    model = copy.deepcopy(task.model)
    with pytest.raises(ConfigError, match="epochs must be >= 1"):
        unlearn(model, forget=task.forget, retain=task.retain, method="rl", retrain=Custom,
                retrain_recipe={"epochs": 0}, **FAST)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), task.model.parameters()))


def test_html_is_self_contained_and_written_atomically(task, tmp_path, monkeypatch):
    out = unlearn(copy.deepcopy(task.model), forget=task.forget, retain=task.retain, test=task.test, method="rl",
                  retrain=trained_mlp(*task.retain, seed=2), eval_every=3, **FAST)
    path = tmp_path / "audit.html"
    out.audit.write_html(path)
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>") and "<table>" in text and "Gap to Retrain" in text
    assert "data:image/png;base64," in text  # the process plot, embedded
    assert not re.search(r"https?://|<link|<script|@import|url\(", text)
    assert all(src.startswith("data:") for src in re.findall(r'src="([^"]*)"', text))
    out.audit.write_json(tmp_path / "audit.json")
    assert json.loads((tmp_path / "audit.json").read_text())["kind"] == "dualoptim.audit"

    import dualoptim.io as dio

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(dio.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        out.audit.write_html(path)
    assert path.read_text() == text  # the previous report is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.html", "audit.json"]  # no temp files left


def test_device_dtype_follow_the_model(task):
    model = copy.deepcopy(task.model).double()
    out = unlearn(model, forget=task.forget, retain=task.retain, test=task.test, method="rl", **FAST)
    assert next(out.model.parameters()).dtype == torch.float64
    assert out.audit.unlearned["TA"] is not None


def test_defaults_and_lazy_export():
    assert dualoptim.unlearn is unlearn
    assert default_lrs("salun", "sgd") == (0.018, 0.01)  # the shared baseline: the paper's per-method lrs
    assert default_lrs("sfron", "adam+sgd", forget_steps=350) == (1e-4, 0.01)
    assert default_lrs("salun", "adam+sgd", forget_steps=35) == (pytest.approx(1e-3), 0.01)
    assert default_lrs("salun", "adam+sgd", forget_steps=3) == (pytest.approx(1e-3), 0.01)  # at most 10x
    with pytest.raises(ConfigError, match="pass forget_lr"):
        default_lrs("salun", "lion+sgd")
    code = "import sys, dualoptim; assert 'dualoptim.vision' not in sys.modules; print('ok')"
    import subprocess

    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr
