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


def unlearn_argv(original: Path, out: Path, *extra: str) -> list[str]:
    return ["unlearn", "--original", str(original), "--forget", "random:0.1", "--method", "salun", "--epochs", "1",
            "--no-progress", "--out", str(out), *extra]


def index_file(tmp_path: Path, values: list[int]) -> str:
    path = tmp_path / "idx.txt"
    path.write_text("\n".join(map(str, values)))
    return f"file:{path}"


def bench_config(tmp_path: Path, change) -> str:
    """A valid small benchmark config with one change applied, written to tmp_path."""
    cfg = {"name": "t", "dataset": "digits", "model": "cnn", "model_options": {"width": 8}, "recipe": {"epochs": 1},
           "seeds": [0], "runs": [{"method": "ga", "optim": "sgd", "config": {"forget_lr": 0.01, "retain_lr": 0.01,
                                                                              "epochs": 1}}]}
    change(cfg)
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(cfg))
    return str(path)


def bench(tmp_path: Path, change) -> list[str]:
    return ["bench", "--config", bench_config(tmp_path, change), "--root", str(tmp_path / "root"), "--no-progress"]


def user_folder(tmp_path: Path) -> Path:
    """A folder the user keeps their own files in (no dualoptim marker)."""
    folder = tmp_path / "mine"
    folder.mkdir(exist_ok=True)
    (folder / "notes.txt").write_text("keep me")
    return folder


def results_root(tmp_path: Path) -> Path:
    from dualoptim.store import ResultsStore

    root = tmp_path / "root"
    (root / "quick").mkdir(parents=True)
    ResultsStore(root / "results.db").close()
    return root


def junk_db(tmp_path: Path) -> str:
    path = tmp_path / "junk.db"
    path.write_bytes(b"not a database at all" * 50)
    return str(path)


CASES = {
    # name: (argv builder, expected message regex)
    "unknown dataset": (lambda o, t: ["train", "--dataset", "mnist3d", "--out", str(t / "x")],
                        r"invalid choice: 'mnist3d' \(choose from .*fashion-mnist"),
    "unknown model": (lambda o, t: ["train", "--dataset", "digits", "--model", "vgg", "--out", str(t / "x")],
                      r"invalid choice: 'vgg' \(choose from .*cnn"),
    "unknown method": (lambda o, t: ["unlearn", "--original", str(o), "--forget", "random:0.1", "--method", "neggrad",
                                     "--out", str(t / "x")], r"invalid choice: 'neggrad' \(choose from .*salun"),
    "unknown optimizer": (lambda o, t: unlearn_argv(o, t / "x", "--optim", "adan+sgd"),
                          r"unknown optimizer 'adan'; valid: .*adam.*sgd"),
    "unknown preset": (lambda o, t: ["bench", "--preset", "fastest", "--root", str(t / "x")],
                       r"unknown benchmark preset 'fastest'; valid: .*quick, quick-class"),
    "missing data folder": (lambda o, t: ["train", "--dataset", "fashion-mnist", "--data-dir", str(t / "nodata"),
                                          "--out", str(t / "x")], r"data folder .*nodata does not exist"),
    "missing checkpoint": (lambda o, t: unlearn_argv(t / "no-such-ckpt", t / "x"), r"checkpoint folder not found"),
    "forget fraction 0": (lambda o, t: unlearn_argv(o, t / "x")[:4] + ["random:0"] + unlearn_argv(o, t / "x")[5:],
                          r"fraction must be in \(0, 1\)"),
    "forget fraction 1.5": (lambda o, t: unlearn_argv(o, t / "x")[:4] + ["random:1.5"] + unlearn_argv(o, t / "x")[5:],
                            r"fraction must be in \(0, 1\)"),
    "empty index file": (lambda o, t: ["unlearn", "--original", str(o), "--forget", index_file(t, []), "--method",
                                       "salun", "--out", str(t / "x")], r"empty"),
    "duplicated indices": (lambda o, t: ["unlearn", "--original", str(o), "--forget", index_file(t, [1, 2, 2]),
                                         "--method", "salun", "--out", str(t / "x")], r"duplicate"),
    "index outside the training set": (
        lambda o, t: ["unlearn", "--original", str(o), "--forget", index_file(t, [1, 5000]), "--method", "salun",
                      "--out", str(t / "x")], r"out of range|not part of|outside"),
    "unknown class": (lambda o, t: unlearn_argv(o, t / "x")[:4] + ["class:12"] + unlearn_argv(o, t / "x")[5:],
                      r"class"),
    "negative learning rate": (lambda o, t: unlearn_argv(o, t / "x", "--forget-lr", "-0.1"),
                               r"forget_lr must be a finite number > 0"),
    "zero budget": (lambda o, t: unlearn_argv(o, t / "x", "--epochs", "0"), r"epochs must be"),
    "mask ratio outside (0, 1]": (lambda o, t: unlearn_argv(o, t / "x", "--opt", "ratio=1.5"),
                                  r"ratio must be in \(0, 1\]"),
    "unknown method option": (lambda o, t: unlearn_argv(o, t / "x", "--opt", "temperature=2"), r"temperature"),
    "diverging loss (NaN)": (lambda o, t: unlearn_argv(o, t / "x", "--method", "ga", "--optim", "sgd", "--forget-lr",
                                                  "1e30"), r"loss became (nan|inf|-inf) at step \d+"),
    "unwritable output folder": (lambda o, t: unlearn_argv(o, Path("/proc/dualoptim-out")),
                                 r"--out /proc/dualoptim-out cannot be written"),
    "unwritable --json": (lambda o, t: ["eval", "--checkpoint", str(o), "--json", "/proc/dualoptim/eval.json"],
                          r"--json /proc/dualoptim/eval.json cannot be written"),
    # issue 19: output over an input, --overwrite of a user's folder
    "output is the input": (lambda o, t: unlearn_argv(o, o, "--overwrite"), r"--out .* is the input"),
    "output contains the input": (lambda o, t: unlearn_argv(o, o.parent, "--overwrite"),
                                  r"--out .* contains the input"),
    "output is a link to the input": (lambda o, t: unlearn_argv(o, _link(t / "link", o), "--overwrite"),
                                      r"--out .*link is the input"),
    "output inside the input": (lambda o, t: unlearn_argv(o, o / "sub"), r"--out .* lies inside the input"),
    "retrain over the original": (lambda o, t: ["retrain", "--original", str(o), "--forget", "random:0.1", "--out",
                                                str(o), "--overwrite"], r"--out .* is the input"),
    "eval --json into the checkpoint": (lambda o, t: ["eval", "--checkpoint", str(o), "--json",
                                                      str(o / "meta.json")], r"--json .* lies inside the input"),
    "--overwrite of a user's folder": (lambda o, t: unlearn_argv(o, user_folder(t), "--overwrite"),
                                       r"was not written by dualoptim .*--overwrite only replaces"),
    "existing output without --overwrite": (lambda o, t: unlearn_argv(o, user_folder(t)),
                                            r"already exists; pass --overwrite"),
    # issue 19: nested benchmark configs
    "bench seeds not a list": (lambda o, t: bench(t, lambda c: c.update(seeds="abc")),
                               r"bench.json: seeds must be a list of integers, got 'abc'"),
    "bench unknown key in a run config": (lambda o, t: bench(t, lambda c: c["runs"][0]["config"].update(lrr=1)),
                                          r"runs\[0\]\.config\.lrr is not a known field; valid: .*forget_lr"),
    "bench run lr not a number": (lambda o, t: bench(t, lambda c: c["runs"][0]["config"].update(forget_lr="fast")),
                                  r"runs\[0\]\.config\.forget_lr must be a finite number, got 'fast'"),
    "bench run lr out of range": (lambda o, t: bench(t, lambda c: c["runs"][0]["config"].update(retain_lr=-1)),
                                  r"runs\[0\]\.config\.retain_lr must be a finite number > 0"),
    "bench recipe lr not a number": (lambda o, t: bench(t, lambda c: c["recipe"].update(lr="fast")),
                                     r"recipe\.lr must be a finite number, got 'fast'"),
    "bench name escapes the root": (lambda o, t: bench(t, lambda c: c.update(name="..")),
                                    r"name must be .*letters, digits.*got '\.\.'"),
    "bench name with a separator": (lambda o, t: bench(t, lambda c: c.update(name="../../etc")),
                                    r"name must be .*got '\.\./\.\./etc'"),
    "bench NaN in config": (lambda o, t: ["bench", "--config", str(_write(t / "nan.json", '{"name": NaN}')),
                                          "--root", str(t / "root")], r"NaN is not allowed"),
    "bench unknown optimizer in a run": (lambda o, t: bench(t, lambda c: c["runs"][0].update(optim="adan+sgd")),
                                         r"runs\[0\]\.optim: unknown optimizer 'adan'"),
    # issue 19: small ones
    "eval batch size 0": (lambda o, t: ["eval", "--checkpoint", str(o), "--batch-size", "0"],
                          r"--batch-size must be >= 1, got 0"),
    "report given the benchmark root": (lambda o, t: ["report", str(results_root(t))],
                                        r"is a benchmark root .*give one benchmark's folder.*quick"),
    "corrupt results database": (lambda o, t: ["report", str(t / "run"), "--db", junk_db(t)],
                                 r"junk.db is not a dualoptim results database"),
}


def _link(path: Path, target: Path) -> Path:
    path.symlink_to(target, target_is_directory=True)
    return path


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


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
    code, err = run_cli(unlearn_argv(original, tmp_path / "out"), capsys)
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
    assert code == 2 and "corrupt or truncated" in err and "meta.json records" in err  # the recorded size
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



def test_refused_overwrites_leave_inputs_and_user_files_intact(original, tmp_path, capsys):
    weights = (original / "model.safetensors").read_bytes()
    for out in (original, original.parent):  # --out over the input / over its parent folder
        code, err = run_cli(unlearn_argv(original, out, "--overwrite"), capsys)
        assert code == 2 and "Traceback" not in err
    assert (original / "model.safetensors").read_bytes() == weights
    mine = user_folder(tmp_path)
    code, err = run_cli(unlearn_argv(original, mine, "--overwrite"), capsys)
    assert code == 2 and (mine / "notes.txt").read_text() == "keep me"


def test_overwrite_replaces_a_dualoptim_output(original, tmp_path, capsys):
    out = tmp_path / "unlearned"
    assert run_cli(unlearn_argv(original, out), capsys)[0] == 0
    assert (out / ".dualoptim").is_file()
    first = (out / "model.safetensors").read_bytes()
    assert run_cli(unlearn_argv(original, out, "--overwrite", "--unlearn-seed", "7"), capsys)[0] == 0
    assert (out / "model.safetensors").read_bytes() != first and (out / "metrics.json").is_file()


def test_flipped_bit_in_weights_is_refused_by_the_cli(original, tmp_path, capsys):
    import shutil

    ck = tmp_path / "ck"
    shutil.copytree(original, ck)
    data = bytearray((ck / "model.safetensors").read_bytes())
    data[-3] ^= 0x01
    (ck / "model.safetensors").write_bytes(bytes(data))
    code, err = run_cli(["eval", "--checkpoint", str(ck), "--forget", "random:0.1"], capsys)
    assert code == 2 and "Traceback" not in err
    assert re.search(r"model.safetensors is corrupt or was modified: its sha256 .* does not match", err), err


def test_checkpoint_without_digest_loads_with_one_warning(original, tmp_path, capsys):
    import shutil

    ck = tmp_path / "old"
    shutil.copytree(original, ck)
    meta = json.loads((ck / "meta.json").read_text())
    del meta["integrity"]
    (ck / "meta.json").write_text(json.dumps(meta))
    code, err = run_cli(["eval", "--checkpoint", str(ck), "--forget", "random:0.1", "--no-svc"], capsys)
    assert code == 0 and "Traceback" not in err
    lines = [line for line in err.splitlines() if "weights digest" in line]
    assert len(lines) == 1 and lines[0].startswith("dualoptim: warning: ") and "cannot be checked" in lines[0]


def test_edited_split_seed_gives_a_consistent_warning(original, tmp_path, capsys):
    from dualoptim.vision.checkpoint import load_classifier, save_classifier
    from dualoptim.vision.data import load_dataset
    from dualoptim.vision.forget import make_forget_split

    model, meta, _ = load_classifier(original)
    split = make_forget_split("random:0.1", load_dataset("digits").train_y, 1)
    meta.role = "retrain"
    save_classifier(tmp_path / "ck", model, meta, split)
    raw = json.loads((tmp_path / "ck" / "meta.json").read_text())
    raw["split"]["seed"] = 2  # edited by hand: the stored indices were drawn with seed 1
    (tmp_path / "ck" / "meta.json").write_text(json.dumps(raw))
    out = tmp_path / "eval.json"
    code, err = run_cli(["eval", "--checkpoint", str(tmp_path / "ck"), "--no-svc", "--json", str(out)], capsys)
    assert code == 0 and "Traceback" not in err
    assert "does not reproduce its stored forget indices; evaluating on the" in err
    assert "seed 2, evaluating on random:0.1 seed 2" not in err  # the old, self-contradictory message
    written = json.loads(out.read_text())
    assert written["forget_indices"] == split.forget_idx.tolist()
    assert len(written["warnings"]) == 1 and "does not reproduce" in written["warnings"][0]  # in the output too


def test_a_diverged_but_finite_unlearning_run_is_flagged(original, tmp_path, capsys):
    """Reliability issue, item 5: a GA run at a huge lr used to save a chance-level model with huge weights and no
    word about it. It is still saved (the user asked for it), but stdout and metrics.json say what it is."""
    out = tmp_path / "ga-huge"
    assert main(["unlearn", "--original", str(original), "--forget", "random:0.1", "--method", "ga", "--optim", "sgd",
                 "--forget-lr", "100", "--retain-lr", "0.01", "--epochs", "1", "--no-svc", "--no-progress",
                 "--out", str(out)]) == 0
    warnings = json.loads((out / "metrics.json").read_text())["warnings"]
    assert any("near chance accuracy" in w for w in warnings), warnings
    assert "warning: the unlearned model is near chance" in capsys.readouterr().out
