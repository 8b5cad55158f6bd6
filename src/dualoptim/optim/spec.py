"""The optimizer spec string, parsed in one place.

``"sgd"`` is one optimizer whose state both phases share (the baseline); ``"adam+sgd"`` is
``forget+retain`` with two decoupled states (DualOptim); ``"adam+adam:decouple=m|v|mv|none"`` is the
paper's Table-17 moment ablation, where only the named moments are kept per phase. Every label,
preset lookup and report reads :attr:`OptimSpec.is_dual`, so a spec whose state is (partly) shared is
never called DualOptim.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ConfigError

#: ``decouple=`` values of the moment ablation and the moments each keeps per phase.
DECOUPLE = {"m": "m", "v": "v", "mv": "mv", "vm": "mv", "none": ""}


@dataclass(frozen=True)
class OptimSpec:
    """A parsed optimizer spec.

    Attributes:
        forget: optimizer name used in forget steps.
        retain: optimizer name used in retain steps.
        shared_state: True for a single name (``"sgd"``): one state serves both phases.
        options: ``key=value`` options after ``:`` (only ``decouple`` exists).
    """

    forget: str
    retain: str
    shared_state: bool
    options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str | OptimSpec) -> OptimSpec:
        """Parse ``spec`` (an :class:`OptimSpec` is returned unchanged); ConfigError (a ValueError) on bad syntax."""
        if isinstance(spec, OptimSpec):
            return spec
        if not isinstance(spec, str):
            raise ConfigError(f"optimizer spec must be a string like 'adam+sgd', got {spec!r}")
        text = spec.strip().lower()
        base, colon, extra = text.partition(":")
        names = base.split("+")
        if len(names) > 2 or not all(n.strip() for n in names):
            raise ConfigError(f"bad optimizer spec {spec!r}: use 'name' or 'forget+retain', e.g. 'adam+sgd'")
        names = [n.strip() for n in names]
        options: dict[str, str] = {}
        if colon:
            key, _, value = extra.partition("=")
            if key.strip() != "decouple" or value.strip() not in DECOUPLE or names != ["adam", "adam"]:
                raise ConfigError(f"bad ablation spec {spec!r}: use 'adam+adam:decouple=m|v|mv|none'")
            options["decouple"] = DECOUPLE[value.strip()]
        return cls(forget=names[0], retain=names[-1], shared_state=len(names) == 1, options=options)

    @property
    def decouple(self) -> str | None:
        """Moments kept per phase for the Table-17 ablation (``""`` = none), else None."""
        return self.options.get("decouple")

    @property
    def is_dual(self) -> bool:
        """True when forget and retain steps keep fully separate optimizer states (DualOptim)."""
        if self.shared_state:
            return False
        return self.decouple is None or self.decouple == "mv"

    @property
    def mode(self) -> str:
        """``"dual"`` (decoupled states) or ``"shared"`` (one state, or partly shared moments)."""
        return "dual" if self.is_dual else "shared"

    @property
    def names(self) -> tuple[str, str]:
        """(forget optimizer name, retain optimizer name); a shared spec names the same one twice."""
        return (self.forget, self.retain)

    def __str__(self) -> str:
        base = self.forget if self.shared_state else f"{self.forget}+{self.retain}"
        if self.decouple is not None:
            base += f":decouple={self.decouple or 'none'}"
        return base

    def label(self) -> str:
        """``"DualOptim"`` for decoupled states, ``"shared"`` for one state, ``"partly shared"`` for m/v."""
        if self.is_dual:
            return "DualOptim"
        return "partly shared" if self.decouple else "shared"
