"""The ``dualoptim llm`` commands end to end on a tiny configuration."""

import json

import pytest

from dualoptim.cli import main

TINY = ["--hidden", "16", "--layers", "1", "--heads", "2", "--intermediate", "32", "--vocab-size", "400",
        "--base-epochs", "1", "--epochs", "1", "--batch-size", "64", "--threads", "1"]


@pytest.mark.slow
def test_llm_cli_end_to_end(tmp_path, capsys):
    data, cache, db = str(tmp_path / "data"), str(tmp_path / "models"), str(tmp_path / "results.db")
    common = ["--data", data, "--cache", cache, "--splits", "forget10", *TINY]
    assert main(["llm", "make-data", "--out", data, "--authors", "20"]) == 0
    assert "forget01=40" in capsys.readouterr().out
    assert main(["llm", "prepare", *common]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["models"]) == {"base", "full", "retain90"}
    assert main(["llm", "prepare", *common]) == 0  # cached: nothing retrained
    assert json.loads(capsys.readouterr().out)["timings"] == {}
    assert main(["llm", "unlearn", *common, "--method", "npo+gd", "--scheme", "dual", "--split", "forget10",
                 "--unlearn-epochs", "1", "--global-batch", "64", "--grad-accum", "2",
                 "--out", str(tmp_path / "u")]) == 0
    assert json.loads(capsys.readouterr().out)["optimizer"] == "adamw+adamw"
    assert main(["llm", "unlearn", *common, "--method", "ga+gd", "--split", "forget10", "--unlearn-epochs", "1",
                 "--global-batch", "64", "--fsdp", "--device", "cpu", "--out", str(tmp_path / "f")]) == 0  # 1 process
    assert json.loads(capsys.readouterr().out)["steps"] > 0
    assert json.loads((tmp_path / "f" / "dualoptim_llm.json").read_text())["fsdp"] is True
    assert main(["llm", "eval", *common, "--model", str(tmp_path / "u"), "--retain-model", str(tmp_path /
                 "models"), "--max-items", "4", "--max-new-tokens", "4", "--encoder", "none"]) == 2  # not a model
    capsys.readouterr()
    assert main(["llm", "bench", *common, "--db", db, "--max-items", "6", "--max-new-tokens", "4",
                 "--encoder", "none"]) == 0
    table = capsys.readouterr().out
    for row in ("Original", "Retain", "me+gd | dual", "idk+ap | joint", "idk+ap | alternate"):
        assert row in table
    assert "no NLI entailment" in table


def test_llm_cli_errors(tmp_path, capsys):
    assert main(["llm", "prepare", "--data", str(tmp_path / "none")]) == 2
    assert "make-data" in capsys.readouterr().err
    assert main(["llm", "unlearn", "--data", str(tmp_path), "--method", "foo+gd"]) == 2
    assert "unknown forget loss 'foo'" in capsys.readouterr().err
    assert main(["llm", "unlearn", "--data", str(tmp_path / "d"), "--fsdp", "--lora", "--out",
                 str(tmp_path / "u")]) == 2
    assert "--fsdp shards full-parameter training" in capsys.readouterr().err  # one line, before any data is read
