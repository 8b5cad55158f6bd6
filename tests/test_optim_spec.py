"""The optimizer spec is parsed once (optim/spec.py); labels and presets read ``is_dual``."""

import pytest
import torch

from dualoptim.optim import DualOptimizer, OptimSpec, SharedOptimizer, build_optimizer
from dualoptim.vision.presets import mode_of, resolve_preset
from dualoptim.vision.report import row_label


@pytest.mark.parametrize("spec, dual, text", [
    ("sgd", False, "sgd"), ("adam+sgd", True, "adam+sgd"), (" Adam+SGD ", True, "adam+sgd"),
    ("sgd+sgd", True, "sgd+sgd"), ("adam+adam:decouple=mv", True, "adam+adam:decouple=mv"),
    ("adam+adam:decouple=vm", True, "adam+adam:decouple=mv"), ("adam+adam:decouple=m", False, "adam+adam:decouple=m"),
    ("adam+adam:decouple=v", False, "adam+adam:decouple=v"),
    ("adam+adam:decouple=none", False, "adam+adam:decouple=none"),
])
def test_parse(spec: str, dual: bool, text: str) -> None:
    s = OptimSpec.parse(spec)
    assert s.is_dual is dual and str(s) == text
    assert OptimSpec.parse(str(s)) == s
    assert s.mode == ("dual" if dual else "shared")


@pytest.mark.parametrize("bad", ["", "+sgd", "a+b+c", "adam+sgd:decouple=m", "adam+adam:foo=m", "adam+adam:decouple=x"])
def test_bad_specs(bad: str) -> None:
    with pytest.raises(ValueError):
        OptimSpec.parse(bad)


def test_decouple_none_is_shared_everywhere() -> None:
    """One shared Adam state is never labelled +DO nor given the DualOptim preset."""
    spec = "adam+adam:decouple=none"
    assert row_label("SCRUB", spec) == f"SCRUB [{spec}]"
    assert row_label("SCRUB", "adam+adam") == "SCRUB+DO [adam+adam]"
    assert mode_of(spec) == "shared"
    fields = resolve_preset("scrub", spec, preset="cifar10-paper")
    assert fields["forget_lr"] == resolve_preset("scrub", "adam", preset="cifar10-paper")["forget_lr"]
    p = [torch.nn.Parameter(torch.zeros(3))]
    assert isinstance(build_optimizer(p, spec, 1e-3), SharedOptimizer)
    assert isinstance(build_optimizer(p, OptimSpec.parse("adam+sgd"), 1e-3), DualOptimizer)
