"""Unlearning methods for image classification, registered by lower-case name.

Each method is one short file: a dataclass subclass of :class:`dualoptim.engine.Method` whose
``forget_loss`` and ``retain_loss`` say what is minimised on a forget batch ``(x, y)`` and a retain batch,
whose ``prepare`` builds what it needs (teacher, saliency mask, Fisher mask) and whose
``default_schedule()`` says how steps alternate. Alternation, learning-rate schedules and masking live in
the engine and the optimizer, never in a method: switching between the shared baseline and DualOptim is
only the optimizer spec.

Usage::

    from dualoptim.vision.methods import get_method, list_methods
    method = get_method("scrub", variant="upstream")   # options are the dataclass fields
    list_methods()  # ['ft', 'ga', 'rl', 'salun', 'scrub', 'sfron']

Adding a method: write ``methods/<name>.py`` with a ``@register_method`` dataclass, import it at the end of
this file, and add it to the parametrised tests (tests/test_methods.py runs every registered method).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...engine import Method
from ...errors import ConfigError
from ...registry import Registry


@dataclass(frozen=True)
class OptionInfo:
    """One option of a method: a dataclass field with its default and help text."""

    name: str
    type: str
    default: Any
    help: str


@dataclass(frozen=True)
class MethodInfo:
    """A registered method.

    Attributes:
        name: lower-case registry name (``--method``).
        cls: the :class:`Method` dataclass, called as ``cls(**options)``.
        description: one line for ``dualoptim methods``.
        options: its options (dataclass fields) with defaults and help.
        shared_optim: the paper's shared-optimizer spec for this method (the baseline).
        dual_optim: the paper's DualOptim spec for this method.
    """

    name: str
    cls: type[Method]
    description: str
    options: tuple[OptionInfo, ...]
    shared_optim: str = "sgd"
    dual_optim: str = "adam+sgd"


METHODS: Registry[MethodInfo] = Registry("method")
list_methods = METHODS.names  # registered method names, sorted
get_method_info = METHODS.get  # the entry of a name; ConfigError listing valid names if unknown


def _options_of(cls: type) -> tuple[OptionInfo, ...]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init or f.name.startswith("_"):
            continue
        t = hints.get(f.name, Any)
        out.append(OptionInfo(f.name, getattr(t, "__name__", None) or str(t).replace("typing.", ""),
                              f.default, f.metadata.get("help", "")))
    return tuple(out)


def register_method(name: str, description: str, *, shared_optim: str = "sgd",
                    dual_optim: str = "adam+sgd") -> Callable[[type[Method]], type[Method]]:
    """Class decorator registering a :class:`Method` dataclass under ``name``."""

    def wrap(cls: type[Method]) -> type[Method]:
        if not dataclasses.is_dataclass(cls) or not issubclass(cls, Method):
            raise TypeError(f"{cls.__name__} must be a dataclass subclass of dualoptim.engine.Method")
        METHODS.add(name, MethodInfo(name, cls, description, _options_of(cls), shared_optim, dual_optim))
        cls.name = name
        return cls

    return wrap


def option(default: Any, help: str) -> Any:
    """A method option: a dataclass field with a default and the help text ``dualoptim methods`` prints."""
    return dataclasses.field(default=default, metadata={"help": help})


def _coerce(opt: OptionInfo, value: Any) -> Any:
    """Convert a command-line string to the option's type (typed values pass through)."""
    if not isinstance(value, str) or opt.type == "str":
        return value
    text = value.strip()
    if text.lower() == "none" and "None" in opt.type:
        return None
    try:
        if "bool" in opt.type:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        if "int" in opt.type and "float" not in opt.type:
            return int(text)
        if "float" in opt.type:
            return float(text)
    except ValueError:
        raise ConfigError(f"option {opt.name} expects {opt.type}, got {value!r}") from None
    return value


def check_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` of method ``name`` with command-line strings converted to the option types.

    Raises:
        ConfigError: unknown method or option name, or a value of the wrong type.
    """
    info = get_method_info(name)
    valid = {o.name: o for o in info.options}
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(f"method {info.name!r} has no option(s) {unknown}; valid: {sorted(valid) or 'none'}")
    return {k: _coerce(valid[k], v) for k, v in options.items()}


def get_method(name: str, **options: Any) -> Method:
    """A new instance of method ``name`` with ``options`` (strings are converted to the option types)."""
    info = get_method_info(name)
    try:
        return info.cls(**check_options(name, options))
    except TypeError as e:  # e.g. a value of the wrong type reaching a check
        raise ConfigError(f"method {info.name!r}: {e}") from None


# Importing the method modules registers them.
from . import ft, ga, rl, salun, scrub, sfron  # noqa: E402,F401

__all__ = ["METHODS", "MethodInfo", "OptionInfo", "check_options", "get_method", "get_method_info", "list_methods",
           "option", "register_method"]
