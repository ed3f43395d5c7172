"""Requirements from the spec decide pass/fail; every failure says why."""

from __future__ import annotations

import operator

from nnspec.properties.spec import Property, Requirement
from nnspec.results.records import Outcome, Verdict

_CMP = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


def failures(prop: Property, outcome: Outcome, require_proven: bool = False) -> list[str]:
    """Why this outcome fails its property's requirements; empty when it passes."""
    if outcome.verdict == Verdict.ERROR:
        return ["error: " + "; ".join(outcome.notes)]
    reqs = list(prop.requirements)
    if require_proven and prop.kind not in ("range",) and not any(r.kind == "proven" for r in reqs):
        reqs.append(Requirement("proven", None, None, None, prop.span))
    return [msg for req in reqs if (msg := _fails(req, outcome))]


def _fails(req: Requirement, outcome: Outcome) -> str | None:
    if req.kind == "no_violation":
        if outcome.witness is not None:
            return f"violation at distance {outcome.witness.distance:.4g} (s = {outcome.witness.s:.3g})"
        return None
    if req.kind == "proven":
        if outcome.verdict == Verdict.PROVEN:
            return None
        if outcome.witness is not None:  # disproved, not merely unproved
            return f"not proven: violated (a confirmed violation at distance {outcome.witness.distance:.4g})"
        b = outcome.bounds
        if b.lower is not None:  # a sound method ran, and proved less than the region
            return f"not proven: the sound lower bound of the radius is {b.lower:.4g} ({b.lower_method})"
        return "not proven: no sound method proved this property (only searched)"
    value = getattr(outcome.bounds, req.bound)
    if value is None:
        return f"no {req.bound} bound available for 'require {req.describe()}'"
    if not _CMP[req.cmp](value, req.value):
        return f"{req.bound} {value:.4g} does not satisfy {req.describe()}"
    return None
