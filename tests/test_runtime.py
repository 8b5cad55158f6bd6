"""The CLI runtime shared by every sub-command and the generic registry."""

from collections.abc import Callable

import pytest
import torch

from dualoptim.cli import main
from dualoptim.errors import ConfigError
from dualoptim.registry import Registry
from dualoptim.runtime import current_model_device, model_device, parse_key_values, torch_threads


def test_threads_are_applied_and_restored() -> None:
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    for bad in (0, -2, True, 1.5):
        with pytest.raises(ConfigError, match="--threads"):
            with torch_threads(bad):
                pass


@pytest.mark.parametrize("argv", [["gen", "train", "--threads", "0"], ["methods", "--threads", "0"]])
def test_bad_threads_is_one_clear_error(argv, capsys) -> None:
    try:
        code = main(argv)
    except SystemExit as e:  # a sub-command without --threads: argparse refuses it
        code = e.code
    assert code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_model_device_places_new_classifiers_and_is_restored() -> None:
    from dualoptim.vision.models import create_model

    assert current_model_device() is None
    with model_device("cpu"):
        assert current_model_device() == torch.device("cpu")
        model = create_model("cnn", 10, 1, 8, width=4, hidden=8)
        assert {p.device for p in model.parameters()} == {torch.device("cpu")}
    assert current_model_device() is None
    with model_device("auto"):  # the GPU when there is one, else the CPU
        assert current_model_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="unknown device 'gpu0'"):
        with model_device("gpu0"):
            pass
    assert current_model_device() is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
@pytest.mark.parametrize("cmd", [["train", "--dataset", "digits"], ["bench", "--preset", "smoke"],
                                 ["audit", "--original", "o", "--unlearned", "u"],
                                 ["gen", "train", "--dataset", "digits", "--image-size", "8", "--steps", "1"]])
def test_device_cuda_without_cuda_is_one_clear_error(cmd, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    where = {"train": ["--out", str(out)], "bench": ["--root", str(out)], "audit": ["--json", str(out)],
             "gen": ["--root", str(out)]}[cmd[0]]
    argv = [*cmd, "--device", "cuda", *where]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "CUDA is not available on this machine (use --device cpu)" in err
    assert not out.exists()  # refused before any work


def test_key_values() -> None:
    assert parse_key_values(["a=0.5", "b=true", "c=x", "d=[1, 2]"], "--opt") == {"a": 0.5, "b": True, "c": "x",
                                                                             "d": [1, 2]}
    assert parse_key_values(["a=0.5"], "--opt", convert=False) == {"a": "0.5"}
    with pytest.raises(ConfigError, match="--opt expects KEY=VALUE"):
        parse_key_values(["novalue"], "--opt")


def test_registry() -> None:
    reg: Registry[int] = Registry("widget")
    reg.add("a", 1)
    assert reg.get("A") == 1 and "a" in reg and reg.names() == ["a"] and len(reg) == 1
    with pytest.raises(ConfigError, match="unknown widget 'b'; valid: a"):
        reg.get("b")
    for bad in ("a", "B", "x+y", ""):
        with pytest.raises(ValueError):
            reg.add(bad, 2)
    presets: Registry[Callable[[], dict]] = Registry("benchmark preset", {"quick": lambda: {"n": 1}})
    assert presets.get("quick")() == {"n": 1} and presets.get("quick")() is not presets.get("quick")()
    with pytest.raises(ConfigError, match="unknown benchmark preset 'full'; valid: quick"):
        presets.get("full")
    with pytest.raises(ValueError, match="duplicate"):
        Registry("widget", {"a": 1, "A": 2})


def test_missing_optional_dependency_is_one_actionable_line(monkeypatch, capsys) -> None:
    import sys

    import dualoptim.llm.cli as llm_cli

    def needs_rouge(args):  # what `llm eval` does when it scores answers
        from rouge_score import rouge_scorer  # noqa: F401

    monkeypatch.setitem(sys.modules, "rouge_score", None)  # as if not installed (an import raises)
    monkeypatch.setattr(llm_cli, "cmd_eval", needs_rouge)
    assert main(["llm", "eval"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("dualoptim: error: `dualoptim llm` needs the Python package 'rouge_score': "
                           "pip install 'dualoptim[llm]'")
