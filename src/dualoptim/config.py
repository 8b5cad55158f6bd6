"""Typed configs from untrusted JSON: dataclasses built from nested dicts with every field checked.

    from dualoptim.config import from_dict, load_json
    cfg = from_dict(BenchConfig, load_json("bench.json"), where="bench.json")

:func:`from_dict` walks the dataclass's type annotations (``int``, ``float``, ``bool``, ``str``,
``X | None``, ``list[X]``, ``tuple[X, ...]``, ``dict[str, X]``, ``Literal[...]``, ``Any`` and nested
dataclasses), refuses unknown and missing keys and values of the wrong type, then runs the dataclass's
own ``__post_init__`` range checks. Every error is ONE :class:`~dualoptim.errors.ConfigError` that names
the path of the bad value, e.g. ``bench.json: runs[2].config.forget_lr must be a number, got 'fast'``.

Values are never converted (an integer stays an integer where a float is allowed), so a config read
here hashes exactly like the same config written in Python. Names that become file or folder names
must pass :func:`check_name` (letters, digits, ``.``, ``_``, ``-``; no path separators, no ``..``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from .errors import ConfigError

T = TypeVar("T")
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def join(path: str, key: str | int) -> str:
    """``path`` extended by a field name or a list index: ``runs`` + 2 -> ``runs[2]``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def check_name(value: Any, path: str = "name") -> str:
    """A name that becomes part of a file or folder name: 1-100 letters, digits, ``.``, ``_``, ``-``, starting
    with a letter or digit (so never ``..``, a hidden file, an absolute path or a path with separators)."""
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise ConfigError(f"{path} must be 1-100 letters, digits, '.', '_' or '-' starting with a letter or digit "
                          f"(it names files and folders), got {value!r}")
    return value


#: Per scalar type: how an error names it, and whether a value has it (never converted: bool is not an int here;
#: an int is a valid float).
_SCALARS: dict[type, tuple[str, Callable[[Any], bool]]] = {
    type(None): ("null", lambda v: v is None),
    bool: ("true or false", lambda v: isinstance(v, bool)),
    int: ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    float: ("a finite number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)),
    str: ("a string", lambda v: isinstance(v, str)),
}


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return "any value"
    if isinstance(tp, type) and tp in _SCALARS:
        return _SCALARS[tp][0]
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (list, tuple):
        inner = _describe(args[0]).removeprefix("a ").removeprefix("an ") if args else ""
        return f"a list of {inner}s" if args and args[0] is not Any else "a list"
    if origin is dict:
        return "an object" + (f" of {_describe(args[1])}" if len(args) == 2 and args[1] is not Any else "")
    if dataclasses.is_dataclass(tp):
        return "an object"
    return getattr(tp, "__name__", str(tp))


def check_value(tp: Any, value: Any, path: str) -> Any:
    """``value`` if it has type ``tp`` (nested dataclasses are built from dicts); else a ConfigError at ``path``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    bad = ConfigError(f"{path} must be {_describe(tp)}, got {value!r}")
    if tp is Any or tp is object:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise bad
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return check_value(option, value, path)
            except ConfigError as e:
                errors.append(e)
        deeper = len(errors) == 1 and not str(errors[0]).startswith(f"{path} must be ")
        raise errors[0] if deeper else bad  # a nested error names its own path; else list every allowed type
    if isinstance(tp, type) and tp in _SCALARS:
        if not _SCALARS[tp][1](value):
            raise bad
        return value
    if origin is typing.Literal:
        if value not in args:
            raise bad
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise bad
        item = args[0] if args else Any
        if origin is tuple and len(args) != 2 and args:  # tuple[X, Y, Z]: fixed length
            if len(value) != len(args):
                raise bad
            return tuple(check_value(a, v, join(path, i)) for i, (a, v) in enumerate(zip(args, value)))
        checked = [check_value(item, v, join(path, i)) for i, v in enumerate(value)]
        return tuple(checked) if origin is tuple else checked
    if origin is dict:
        if not isinstance(value, Mapping):
            raise bad
        vt = args[1] if len(args) == 2 else Any
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(f"{path} keys must be strings, got {k!r}")
            out[k] = check_value(vt, v, join(path, k))
        return out
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        return from_dict(tp, value, path)
    if isinstance(tp, type) and not isinstance(value, tp):
        raise bad
    return value


def field_types(cls: type) -> dict[str, Any]:
    """The resolved type of every init field of dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def check_fields(cls: type, data: Any, path: str, *, exclude: Iterable[str] = (),
                 require: bool = False) -> dict[str, Any]:
    """Check the keys and value types of ``data`` against dataclass ``cls``'s fields (not its ranges).

    Args:
        exclude: field names that may not appear in ``data`` (set elsewhere).
        require: also refuse a missing field that has no default.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or 'the config'} must be a JSON object, got {data!r}")
    types_ = field_types(cls)
    allowed = sorted(set(types_) - set(exclude))
    for key in data:
        if key in exclude:
            raise ConfigError(f"{join(path, str(key))} cannot be set here (it is set by the enclosing config)")
        if key not in types_:
            raise ConfigError(f"{join(path, str(key))} is not a known field; valid: {', '.join(allowed)}")
    if require:
        for f in dataclasses.fields(cls):
            if (f.init and f.name not in data and f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING):
                raise ConfigError(f"{join(path, f.name)} is missing")
    return {k: check_value(types_[k], v, join(path, k)) for k, v in data.items()}


def located(e: Exception, path: str, fields: Iterable[str] = ()) -> ConfigError:
    """A range error raised by a config's own checks, placed at ``path``: a message that starts with one of
    ``fields`` (``"forget_lr must be ..."``) becomes ``"<path>.forget_lr must be ..."``."""
    msg = str(e)
    first = re.match(r"([A-Za-z_][A-Za-z0-9_]*) (must|is|cannot) ", msg)
    if not path:
        return ConfigError(msg)
    if first and first.group(1) in set(fields):
        return ConfigError(f"{path}.{msg}")
    return ConfigError(f"{path}: {msg}")


def from_dict(cls: type[T], data: Any, path: str = "") -> T:
    """Build dataclass ``cls`` from ``data`` (a JSON object), checking keys, types and ranges.

    Raises:
        ConfigError: naming the path of the first bad value (``path`` is the prefix, e.g. ``runs[2]``).
    """
    kwargs = check_fields(cls, data, path, require=True)
    try:
        return cls(**kwargs)
    except (ConfigError, ValueError, TypeError) as e:
        raise located(e, path, field_types(cls)) from None


def load_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file; a missing file, invalid JSON, NaN/Infinity or duplicated keys are ConfigErrors."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")

    def constant(name: str) -> Any:
        raise ConfigError(f"{p}: {name} is not allowed (JSON has no NaN/Infinity)")

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                raise ConfigError(f"{p}: key {k!r} appears twice in one object")
            out[k] = v
        return out

    try:
        return json.loads(p.read_text(encoding="utf-8"), parse_constant=constant, object_pairs_hook=no_duplicates)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p} is not valid JSON: {e}") from None
