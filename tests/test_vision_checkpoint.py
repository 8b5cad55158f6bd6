"""Classifier checkpoints: metadata round trip, forget indices, mismatch and corruption errors."""

import json

import pytest
import torch

from dualoptim.errors import ConfigError, DataNotFoundError
from dualoptim.vision.checkpoint import ClassifierMeta, dataset_for, load_classifier, save_classifier, weights_digest
from dualoptim.vision.forget import make_forget_split
from dualoptim.vision.models import create_model


def meta(**kw):
    base = dict(dataset="digits", model="resnet8", num_classes=10, in_channels=1, image_size=8,
                model_options={"width": 4}, recipe={"epochs": 2, "lr": 0.1}, role="retrain", init_seed=3,
                metrics={"TA": 91.5}, timings={"train_s": 1.0})
    return ClassifierMeta(**{**base, **kw})


def test_round_trip(tmp_path, digits):
    torch.manual_seed(0)
    model = create_model("resnet8", 10, 1, 8, width=4)
    split = make_forget_split("random:0.1", digits.train_y, 7)
    save_classifier(tmp_path / "ck", model, meta(), split)
    loaded, m, forget_idx = load_classifier(tmp_path / "ck", expect={"model": "resnet8", "num_classes": 10})
    assert m.split == split.describe() and torch.equal(forget_idx, split.forget_idx)
    assert m.recipe == {"epochs": 2, "lr": 0.1} and m.metrics == {"TA": 91.5} and m.role == "retrain"
    assert m.versions["dualoptim"] and m.versions["torch"] == torch.__version__
    assert weights_digest(loaded.state_dict()) == weights_digest(model.state_dict())
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(loaded(x), model.eval()(x)) and not loaded.training
    raw = json.loads((tmp_path / "ck" / "meta.json").read_text())
    assert raw["kind"] == "dualoptim.classifier" and raw["split"]["digest"] == split.digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no temp folders left behind
    data = dataset_for(m)
    assert data.num_train == 1347


def test_without_split(tmp_path):
    save_classifier(tmp_path / "ck", create_model("resnet8", 10, 1, 8, width=4), meta(role="original"))
    _, m, idx = load_classifier(tmp_path / "ck")
    assert m.split is None and idx is None


@pytest.mark.parametrize("expect,match", [({"model": "cnn"}, "model='resnet8', expected 'cnn'"),
                                          ({"num_classes": 100}, "num_classes=10, expected 100"),
                                          ({"dataset": "cifar10"}, "dataset='digits'")])
def test_expectation_mismatch(tmp_path, expect, match):
    save_classifier(tmp_path / "ck", create_model("resnet8", 10, 1, 8, width=4), meta())
    with pytest.raises(ConfigError, match=match):
        load_classifier(tmp_path / "ck", expect=expect)


def test_weights_do_not_match_metadata(tmp_path):
    # meta says 100 classes, weights have 10: precise shape error
    save_classifier(tmp_path / "a", create_model("resnet8", 10, 1, 8, width=4), meta(num_classes=100))
    with pytest.raises(ConfigError, match=r"fc\.bias has shape \(10,\).*num_classes=100\) expects \(100,\)"):
        load_classifier(tmp_path / "a")
    # meta says cnn, weights are a resnet: names do not match
    save_classifier(tmp_path / "b", create_model("resnet8", 10, 1, 8, width=4), meta(model="cnn", model_options={}))
    with pytest.raises(ConfigError, match="do not match model 'cnn'"):
        load_classifier(tmp_path / "b")


def test_bad_metadata(tmp_path):
    save_classifier(tmp_path / "ck", create_model("resnet8", 10, 1, 8, width=4), meta())
    path = tmp_path / "ck" / "meta.json"
    raw = json.loads(path.read_text())
    path.write_text(json.dumps({**raw, "kind": "something-else"}))
    with pytest.raises(ConfigError, match="not a dualoptim classifier"):
        load_classifier(tmp_path / "ck")
    path.write_text(json.dumps({**raw, "format": 99}))
    with pytest.raises(ConfigError, match="format 99"):
        load_classifier(tmp_path / "ck")
    path.write_text(json.dumps({k: v for k, v in raw.items() if k != "model"}))
    with pytest.raises(ConfigError, match="metadata model is missing"):
        load_classifier(tmp_path / "ck")
    path.write_text(json.dumps({**raw, "num_classes": "ten"}))  # every field's type is checked
    with pytest.raises(ConfigError, match="num_classes must be an integer, got 'ten'"):
        load_classifier(tmp_path / "ck")
    path.write_text(json.dumps({**raw, "colour": "red"}))
    with pytest.raises(ConfigError, match="colour is not a known field"):
        load_classifier(tmp_path / "ck")
    with pytest.raises(ConfigError, match="unknown checkpoint role"):
        meta(role="teacher")


def test_tampered_forget_indices(tmp_path, digits):
    from safetensors.torch import load_file, save_file

    split = make_forget_split("random:0.1", digits.train_y, 0)
    save_classifier(tmp_path / "ck", create_model("resnet8", 10, 1, 8, width=4), meta(), split)
    tensors = load_file(str(tmp_path / "ck" / "model.safetensors"))
    tensors["split.forget_idx"] = tensors["split.forget_idx"] + 1
    save_file(tensors, str(tmp_path / "ck" / "model.safetensors"))
    with pytest.raises(ConfigError, match="sha256 .* does not match"):  # the weights file's digest
        load_classifier(tmp_path / "ck")
    # even with the file digest rewritten to match, the indices must match the split's own digest
    import hashlib

    raw = json.loads((tmp_path / "ck" / "meta.json").read_text())
    digest = hashlib.sha256((tmp_path / "ck" / "model.safetensors").read_bytes()).hexdigest()
    raw["integrity"]["model.safetensors"]["sha256"] = digest
    (tmp_path / "ck" / "meta.json").write_text(json.dumps(raw))
    with pytest.raises(ConfigError, match="stored forget indices do not match their digest"):
        load_classifier(tmp_path / "ck")


def test_flipped_bit_in_weights_is_refused(tmp_path):
    save_classifier(tmp_path / "ck", create_model("resnet8", 10, 1, 8, width=4), meta())
    weights = tmp_path / "ck" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x10  # one bit of one weight: still a valid safetensors file
    weights.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="corrupt or was modified"):
        load_classifier(tmp_path / "ck")


def test_checkpoint_without_digest_loads_with_a_warning(tmp_path):
    from dualoptim.io import IntegrityWarning

    save_classifier(tmp_path / "ck", create_model("resnet8", 10, 1, 8, width=4), meta())
    raw = json.loads((tmp_path / "ck" / "meta.json").read_text())
    del raw["integrity"]  # as written by dualoptim before weight digests were recorded
    (tmp_path / "ck" / "meta.json").write_text(json.dumps(raw))
    with pytest.warns(IntegrityWarning, match="without a weights digest"):
        model, _, _ = load_classifier(tmp_path / "ck")
    assert model is not None


def test_missing_checkpoint(tmp_path):
    with pytest.raises(DataNotFoundError):
        load_classifier(tmp_path / "nope")
