"""The bad-input battery (reliability issue): every bad input gets exit code != 0, ONE clear message,
and leaves no output behind. Runs the real CLI in-process on scikit-learn's digits."""

from __future__ import annotations

import errno
import json
import re
from pathlib import Path

import pytest
import torch

from dualoptim.cli import main


@pytest.fixture(scope="module")
def original(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("battery") / "orig"
    assert main(["train", "--dataset", "digits", "--model", "cnn", "--width", "8", "--epochs", "2",
                 "--no-progress", "--out", str(out)]) == 0
    return out


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse: invalid choice / missing argument
        code = e.code
    err = capsys.readouterr().err.strip()
    return code, err


def unlearn(original: Path, out: Path, *extra: str) -> list[str]:
    return ["unlearn", "--original", str(original), "--forget", "random:0.1", "--method", "salun", "--epochs", "1",
            "--no-progress", "--out", str(out), *extra]


def index_file(tmp_path: Path, values: list[int]) -> str:
    path = tmp_path / "idx.txt"
    path.write_text("\n".join(map(str, values)))
    return f"file:{path}"


CASES = {
    # name: (argv builder, expected message regex)
    "unknown dataset": (lambda o, t: ["train", "--dataset", "mnist3d", "--out", str(t / "x")],
                        r"invalid choice: 'mnist3d' \(choose from .*fashion-mnist"),
    "unknown model": (lambda o, t: ["train", "--dataset", "digits", "--model", "vgg", "--out", str(t / "x")],
                      r"invalid choice: 'vgg' \(choose from .*cnn"),
    "unknown method": (lambda o, t: ["unlearn", "--original", str(o), "--forget", "random:0.1", "--method", "neggrad",
                                     "--out", str(t / "x")], r"invalid choice: 'neggrad' \(choose from .*salun"),
    "unknown optimizer": (lambda o, t: unlearn(o, t / "x", "--optim", "adan+sgd"),
                          r"unknown optimizer 'adan'; valid names: .*adam.*sgd"),
    "unknown preset": (lambda o, t: ["bench", "--preset", "fastest", "--root", str(t / "x")],
                       r"unknown benchmark preset 'fastest'; valid: quick"),
    "missing data folder": (lambda o, t: ["train", "--dataset", "fashion-mnist", "--data-dir", str(t / "nodata"),
                                          "--out", str(t / "x")], r"data folder .*nodata does not exist"),
    "missing checkpoint": (lambda o, t: unlearn(t / "no-such-ckpt", t / "x"), r"checkpoint folder not found"),
    "forget fraction 0": (lambda o, t: unlearn(o, t / "x")[:4] + ["random:0"] + unlearn(o, t / "x")[5:],
                          r"fraction must be in \(0, 1\)"),
    "forget fraction 1.5": (lambda o, t: unlearn(o, t / "x")[:4] + ["random:1.5"] + unlearn(o, t / "x")[5:],
                            r"fraction must be in \(0, 1\)"),
    "empty index file": (lambda o, t: ["unlearn", "--original", str(o), "--forget", index_file(t, []), "--method",
                                       "salun", "--out", str(t / "x")], r"empty"),
    "duplicated indices": (lambda o, t: ["unlearn", "--original", str(o), "--forget", index_file(t, [1, 2, 2]),
                                         "--method", "salun", "--out", str(t / "x")], r"duplicate"),
    "index outside the training set": (
        lambda o, t: ["unlearn", "--original", str(o), "--forget", index_file(t, [1, 5000]), "--method", "salun",
                      "--out", str(t / "x")], r"out of range|not part of|outside"),
    "unknown class": (lambda o, t: unlearn(o, t / "x")[:4] + ["class:12"] + unlearn(o, t / "x")[5:],
                      r"class"),
    "negative learning rate": (lambda o, t: unlearn(o, t / "x", "--forget-lr", "-0.1"),
                               r"forget_lr must be a finite number > 0"),
    "zero budget": (lambda o, t: unlearn(o, t / "x", "--epochs", "0"), r"epochs must be"),
    "mask ratio outside (0, 1]": (lambda o, t: unlearn(o, t / "x", "--opt", "ratio=1.5"),
                                  r"ratio must be in \(0, 1\]"),
    "unknown method option": (lambda o, t: unlearn(o, t / "x", "--opt", "temperature=2"), r"temperature"),
    "diverging loss (NaN)": (lambda o, t: unlearn(o, t / "x", "--method", "ga", "--optim", "sgd", "--forget-lr",
                                                  "1e30"), r"loss became (nan|inf|-inf) at step \d+"),
    "unwritable output folder": (lambda o, t: unlearn(o, Path("/proc/dualoptim-out")),
                                 r"(Permission denied|No such file|Read-only|Operation not permitted|/proc)"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gets_one_clear_message_and_no_output(name, original, tmp_path, capsys):
    build, pattern = CASES[name]
    argv = build(original, tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())  # e.g. the bad index file itself
    code, err = run_cli(argv, capsys)
    assert code not in (0, None), name
    last = err.splitlines()[-1] if err else ""
    assert "Traceback" not in err, err
    assert re.search(pattern, last), f"{name}: {last!r}"
    created = sorted(p.name for p in tmp_path.iterdir() if p.name not in before)
    assert created == [], f"{name} left {created}"


def test_disk_full_leaves_no_checkpoint(original, tmp_path, capsys, monkeypatch):
    import dualoptim.io as dio

    real = dio.os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dio.os, "fsync", full)
    code, err = run_cli(unlearn(original, tmp_path / "out"), capsys)
    monkeypatch.setattr(dio.os, "fsync", real)
    assert code == 2 and "No space left on device" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_foreign_or_broken_checkpoints_are_refused(original, tmp_path, capsys):
    # A pickle (may carry code) in place of the weights: refused without unpickling.
    evil = tmp_path / "evil"
    evil.mkdir()
    torch.save({"model.w": torch.ones(1)}, evil / "model.safetensors")
    (evil / "meta.json").write_text((original / "meta.json").read_text())
    code, err = run_cli(["eval", "--checkpoint", str(evil), "--forget", "random:0.1"], capsys)
    assert code == 2 and "corrupt or was modified" in err  # caught by the weights digest
    meta = json.loads((original / "meta.json").read_text())
    del meta["integrity"]  # no digest to compare: the safetensors parser refuses it, nothing is unpickled
    (evil / "meta.json").write_text(json.dumps(meta))
    code, err = run_cli(["eval", "--checkpoint", str(evil), "--forget", "random:0.1"], capsys)
    assert code == 2 and "corrupt or truncated" in err
    # Truncated weights.
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "model.safetensors").write_bytes((original / "model.safetensors").read_bytes()[:100])
    (cut / "meta.json").write_text((original / "meta.json").read_text())
    code, err = run_cli(["eval", "--checkpoint", str(cut), "--forget", "random:0.1"], capsys)
    assert code == 2 and "corrupt" in err
    # Metadata claiming another number of classes than the weights have.
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "model.safetensors").write_bytes((original / "model.safetensors").read_bytes())
    meta = json.loads((original / "meta.json").read_text())
    meta["num_classes"] = 5
    (wrong / "meta.json").write_text(json.dumps(meta))
    code, err = run_cli(["eval", "--checkpoint", str(wrong), "--forget", "random:0.1"], capsys)
    assert code == 2 and re.search(r"num_classes|shape", err), err
    # Not a dualoptim checkpoint at all.
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.safetensors").write_bytes((original / "model.safetensors").read_bytes())
    (other / "meta.json").write_text("{}")
    code, err = run_cli(["eval", "--checkpoint", str(other), "--forget", "random:0.1"], capsys)
    assert code == 2 and "not a dualoptim classifier checkpoint" in err

