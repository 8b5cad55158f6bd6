"""dualoptim.config: nested dataclasses from untrusted JSON, one error naming the path of the bad value."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

import pytest

from dualoptim.config import check_name, from_dict, load_json
from dualoptim.errors import ConfigError


@dataclass
class Inner:
    lr: float
    steps: int = 1
    mode: Literal["a", "b"] = "a"

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")


@dataclass
class Outer:
    name: str
    inner: list[Inner] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    limit: int | None = None
    flags: dict[str, bool] = field(default_factory=dict)


def test_valid_nested_config_is_built_without_converting_values():
    cfg = from_dict(Outer, {"name": "x", "inner": [{"lr": 1}, {"lr": 0.5, "steps": 3, "mode": "b"}], "limit": None})
    assert cfg.inner == [Inner(lr=1), Inner(lr=0.5, steps=3, mode="b")] and cfg.limit is None
    assert type(cfg.inner[0].lr) is int  # stays as written: hashes like the same config written in Python


@pytest.mark.parametrize("data, message", [
    ({"name": 3}, r"^name must be a string, got 3$"),
    ({"name": "x", "inner": "abc"}, r"^inner must be a list of objects, got 'abc'$"),
    ({"name": "x", "inner": [{"lr": 1}, {"lr": "fast"}]}, r"^inner\[1\]\.lr must be a finite number, got 'fast'$"),
    ({"name": "x", "inner": [{"lr": 1}, {"lr": -1}]}, r"^inner\[1\]\.lr must be > 0, got -1$"),
    ({"name": "x", "inner": [{"lr": 1, "momentum": 0.9}]}, r"^inner\[0\]\.momentum is not a known field; valid: lr, "
                                                           r"mode, steps$"),
    ({"name": "x", "inner": [{"steps": 2}]}, r"^inner\[0\]\.lr is missing$"),
    ({"name": "x", "inner": [{"lr": 1, "steps": True}]}, r"^inner\[0\]\.steps must be an integer, got True$"),
    ({"name": "x", "inner": [{"lr": 1, "mode": "c"}]}, r"^inner\[0\]\.mode must be one of 'a', 'b', got 'c'$"),
    ({"name": "x", "limit": 1.5}, r"^limit must be an integer or null, got 1.5$"),
    ({"name": "x", "flags": {"a": 1}}, r"^flags\.a must be true or false, got 1$"),
    ({"name": "x", "size": 1}, r"^size is not a known field"),
    ([1, 2], r"^the config must be a JSON object"),
])
def test_bad_values_name_their_path(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Outer, data)


@pytest.mark.parametrize("name", ["..", ".", "a/b", "/abs", "", ".hidden", "a b", "x" * 101, 3, None, "ü"])
def test_unsafe_names_are_refused(name):
    with pytest.raises(ConfigError, match="letters, digits"):
        check_name(name)


def test_safe_names_pass():
    assert check_name("quick-2.v1_b") == "quick-2.v1_b"


def test_load_json_refuses_nan_duplicates_and_broken_files(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"lr": NaN}')
    with pytest.raises(ConfigError, match="NaN is not allowed"):
        load_json(path)
    path.write_text('{"lr": 1, "lr": 2}')
    with pytest.raises(ConfigError, match="key 'lr' appears twice"):
        load_json(path)
    path.write_text('{"lr": ')
    with pytest.raises(ConfigError, match="is not valid JSON"):
        load_json(path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_json(tmp_path / "none.json")
    path.write_text(json.dumps({"a": [1, {"b": None}]}))
    assert load_json(path) == {"a": [1, {"b": None}]}
