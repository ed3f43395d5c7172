"""Backend options and capabilities declared as data: the language, the CLI and `explain` read them."""

from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Any

# No option counts past this: a larger budget or limit is a typo, and past 2**63 it would overflow.
MAX_COUNT = 10**12


@dataclass(frozen=True, slots=True)
class OptionSpec:
    name: str
    type: type  # int | float | str | bool
    default: Any  # None: chosen by the planner
    doc: str
    choices: tuple[str, ...] | None = None
    minimum: float | None = None


@dataclass(frozen=True, slots=True)
class Capabilities:
    kinds: tuple[str, ...]  # property kinds the backend evaluates
    norms: tuple[str, ...]
    gives: tuple[str, ...]  # estimate | upper | lower | proof


@dataclass(frozen=True, slots=True)
class BackendInfo:
    name: str
    summary: str
    capabilities: Capabilities
    options: tuple[OptionSpec, ...]

    def option(self, name: str) -> OptionSpec | None:
        return next((o for o in self.options if o.name == name), None)

    def defaults(self) -> dict[str, Any]:
        return {o.name: o.default for o in self.options}


def coerce(spec: OptionSpec, value: Any) -> Any:
    """Check and convert one option value; raises ValueError with a user-facing message."""
    if spec.type is bool:
        if isinstance(value, bool):
            return value
        if value in ("true", "false", "yes", "no", 0, 1):
            return value in ("true", "yes", 1)
        raise ValueError(f"option '{spec.name}' takes true or false, not {value!r}")
    if spec.type is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"option '{spec.name}' takes an integer, not {value!r}")
        if abs(value) > MAX_COUNT:
            raise ValueError(f"option '{spec.name}' must be at most {MAX_COUNT:.0e}, not {value:.3g}")
    elif spec.type is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(f"option '{spec.name}' takes a number, not {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"option '{spec.name}' takes a finite number, not {value!r}")
    elif spec.type is str:
        if not isinstance(value, str):
            raise ValueError(f"option '{spec.name}' takes a name, not {value!r}")
        if spec.choices and value not in spec.choices:
            raise ValueError(f"option '{spec.name}' takes one of {', '.join(spec.choices)}, not {value!r}")
    if spec.minimum is not None and value < spec.minimum:
        raise ValueError(f"option '{spec.name}' must be at least {spec.minimum:g}, not {value!r}")
    return value
