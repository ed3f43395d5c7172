"""Result records. Bounds on the safe radius are kept apart and labelled for what they are:

* ``estimate``: s(x) / Q^, Q^ the largest sampled rate of change of s. A sampled Q^ is a *lower*
  bound of the true Lipschitzian metric, so the estimate can overshoot the true radius: it is an
  estimate, never a guarantee.
* ``upper``: the distance of the closest confirmed witness: a true upper bound.
* ``lower``: only from a sound method, which names itself in ``lower_method``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Verdict(str, Enum):
    VIOLATED = "violated"  # a confirmed witness exists
    PROVEN = "proven"  # holds, proved by a sound method
    NO_VIOLATION_FOUND = "no_violation_found"  # holds as far as the search saw; with an estimate
    QUANTIFIED = "quantified"  # a quantity (range, radius bounds) with no threshold to break
    ERROR = "error"

    def __or__(self, other: "Verdict") -> "Verdict":
        """The worse of two verdicts (for a property over many inputs)."""
        order = [Verdict.ERROR, Verdict.VIOLATED, Verdict.NO_VIOLATION_FOUND, Verdict.QUANTIFIED, Verdict.PROVEN]
        return self if order.index(self) <= order.index(other) else other


@dataclass(frozen=True, slots=True)
class RadiusBounds:
    estimate: float | None = None
    upper: float | None = None
    lower: float | None = None
    lower_method: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"estimate": self.estimate, "upper": self.upper, "lower": self.lower,
                "lower_method": self.lower_method}


@dataclass(frozen=True, slots=True)
class Witness:
    """A concrete input that breaks the property. ``x`` is a nested list (the input's shape)."""

    x: Any
    distance: float
    s: float
    output: list[float]
    confirmed: bool
    file: str | None = None  # the saved .npy, once written
    found_at: int | None = None  # queries spent when the search found it (for milestones)

    def to_json(self, include_x: bool = False) -> dict[str, Any]:
        data = {"file": self.file, "distance": self.distance, "s": self.s, "output": self.output,
                "confirmed": self.confirmed, "found_at": self.found_at}
        if include_x:
            data["x"] = self.x
        return data


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a backend found for one property on one input."""

    verdict: Verdict
    s_centre: float
    bounds: RadiusBounds
    witness: Witness | None
    queries: int
    seconds: float
    stop: str
    centre_output: list[float]
    lipschitz: float | None = None  # Q^, the sampled Lipschitzian metric
    min_s: float | None = None  # the lowest s seen in the ball
    # where s was lowest, when no witness was found: a near miss that a caller with a check of its
    # own may try (the VNN-COMP runner, against its query at tolerance 0); never part of a record
    lowest_x: list | None = None
    value_range: tuple[float, float] | None = None  # for `reachability range`
    value_bounds: tuple[float, float] | None = None  # for `reachability range`: proved to hold the value
    trace: list[dict[str, float]] = field(default_factory=list)
    notes: tuple[str, ...] = ()
    dropped_witnesses: int = 0
    # farther violations the search found on its way to the witness (the paper's Fig. 9 images),
    # confirmed like the witness; the witness itself is not among them
    milestones: tuple[Witness, ...] = ()
