"""Everything found by name goes through one ``Registry`` type: same lookup, same error, same preset form."""

from __future__ import annotations

import dataclasses

import pytest

from dualoptim.cli import build_parser
from dualoptim.errors import ConfigError
from dualoptim.generation import bench as gen_bench
from dualoptim.generation.methods import METHODS as GEN_METHODS
from dualoptim.llm import bench as llm_bench
from dualoptim.llm.methods.base import LOSSES
from dualoptim.optim import list_optimizers
from dualoptim.optim.factory import OPTIMIZERS
from dualoptim.registry import Registry
from dualoptim.vision import bench_presets as vision_presets
from dualoptim.vision.bench import BenchConfig
from dualoptim.vision.data import AUGMENTS, DATASETS, list_datasets, make_augment
from dualoptim.vision.methods import METHODS as VISION_METHODS
from dualoptim.vision.models import MODELS, list_models

REGISTRIES = {
    "optimizer": OPTIMIZERS, "method": VISION_METHODS, "generation method": GEN_METHODS,
    "forget loss": LOSSES["forget"], "retain loss": LOSSES["retain"], "dataset": DATASETS, "model": MODELS,
    "vision benchmark preset": vision_presets.BENCH_PRESETS, "generation benchmark preset": gen_bench.BENCH_PRESETS,
    "llm benchmark preset": llm_bench.BENCH_PRESETS, "augmentation": AUGMENTS,
}
BENCH_PRESETS = {  # modality: (its preset registry, the config type a preset returns)
    "vision": (vision_presets.BENCH_PRESETS, BenchConfig),
    "gen": (gen_bench.BENCH_PRESETS, gen_bench.BenchPreset),
    "llm": (llm_bench.BENCH_PRESETS, llm_bench.BenchPreset),
}


@pytest.mark.parametrize("what", sorted(REGISTRIES))
def test_every_registry_fails_the_same_way(what):
    reg = REGISTRIES[what]
    assert isinstance(reg, Registry) and len(reg) >= 2
    first = reg.names()[0]
    assert reg.get(first.upper()) is reg.get(first)  # case-insensitive
    with pytest.raises(ConfigError, match=rf"^unknown {reg.kind} 'nope'; valid: {', '.join(reg.names())}$"):
        reg.get("nope")


def test_public_lookups_read_the_registries():
    assert list_optimizers() == OPTIMIZERS.names() and "adam" in list_optimizers()
    assert list_datasets() == DATASETS.names() and "digits" in list_datasets()
    assert list_models() == MODELS.names() and "cnn" in list_models()
    assert make_augment(None) is None and make_augment("none") is None and make_augment("crop_flip") is not None
    assert vision_presets.list_bench_presets() == vision_presets.BENCH_PRESETS.names()
    assert {"quick", "smoke", "offline-full-50"} <= set(vision_presets.list_bench_presets())
    with pytest.raises(ConfigError, match="unknown benchmark preset 'fast'; valid: ablation-moments"):
        vision_presets.get_bench_preset("fast")


@pytest.mark.parametrize("modality", sorted(BENCH_PRESETS))
def test_bench_presets_have_one_form(modality):
    reg, config_type = BENCH_PRESETS[modality]
    assert reg.kind == "benchmark preset" and {"quick"} <= set(reg)
    for name in reg:
        a, b = reg.get(name)(), reg.get(name)()  # zero-argument functions: a fresh config each call
        assert isinstance(a, config_type) and a == b
    if modality == "vision":  # a mutable dataclass: changing one copy must not change the preset
        a.seeds.append(99)
        assert 99 not in reg.get(name)().seeds
    else:
        assert dataclasses.is_dataclass(a)


def test_preset_values_kept():
    assert gen_bench.BENCH_PRESETS.get("quick")().forget_classes == (1, 8)
    assert gen_bench.BENCH_PRESETS.get("full")().eval.sampler.guidance == 0.5
    assert llm_bench.BENCH_PRESETS.get("quick")().methods == ("me+gd", "idk+ap")
    assert llm_bench.BENCH_PRESETS.get("full")().seeds == (0, 1, 2)


@pytest.mark.parametrize("argv", [["gen", "bench"], ["llm", "bench"]])
def test_cli_preset_choices_read_the_registry(argv, monkeypatch, capsys):
    reg = (gen_bench if argv[0] == "gen" else llm_bench).BENCH_PRESETS
    assert build_parser().parse_args([*argv, "--preset", "full"]).preset == "full"
    with pytest.raises(SystemExit):
        build_parser().parse_args([*argv, "--preset", "fastest"])
    assert f"choose from {', '.join(repr(n) for n in reg.names())}" in capsys.readouterr().err
    monkeypatch.setattr(reg, "_entries", {**reg._entries, "tiny": reg.get("quick")})
    assert build_parser().parse_args([*argv, "--preset", "tiny"]).preset == "tiny"  # a new preset is a choice


def test_vision_bench_help_lists_the_registry(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "offline-full-50" in out.replace("- ", "-") and "sensitivity" in out
