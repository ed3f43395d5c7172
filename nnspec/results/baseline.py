"""Regressions against a baseline run (``nnspec check --baseline OLD.json``, ``nnspec diff``).

A check is identified across runs by (spec, property, radius, window, input, model role): the
model's *role*, not its file name, so that ``net_v2.onnx`` in place of ``net_v1.onnx`` compares
with the run of ``net_v1.onnx``. The role is the model's position among the ``--model`` arguments
(``model 1``, ``model 2``, ...) when several are compared, else ``model`` (the spec's model or the
one ``--model`` given in its place).

Against its baseline check a check regresses when:
- ``proven-lost``: it was proven and is not any more;
- ``new-violation``: it was not violated and now is (a confirmed witness);
- ``lower-dropped``: its proven lower bound of the safe radius fell by more than the tolerance
  (relative), or is gone;
- ``estimate-dropped``: its radius estimate fell by more than the tolerance (relative).
Each check gets at most one regression, the first of these that applies. A regression fails the check (``passed`` false, the reason in ``failures``), so it shows in the
terminal, JSON, JUnit, SARIF and HTML like any failure and the run exits 1; the run's JSON also
gets a ``baseline`` section listing every regression.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nnspec.errors import UsageError

DEFAULT_TOLERANCE = 0.05
KINDS = ("proven-lost", "new-violation", "lower-dropped", "estimate-dropped")


@dataclass(frozen=True)
class Regression:
    kind: str
    spec: str
    property: str
    line: int
    input_id: str
    model: str
    old: Any
    new: Any
    message: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def check_tolerance(tolerance: float) -> None:
    if not (0 <= tolerance < 1):
        raise UsageError(f"--regression-tolerance {tolerance:g}: must be in [0, 1) (a relative drop)")


def model_roles(meta: dict[str, Any]) -> dict[str, str]:
    """Model file name -> role, from a run's meta (``model_args``: the --model arguments). One
    model (the spec's, or a single --model in its place) has the one role "model"; a comparison of
    several --model values has "model 1", "model 2", ... in the order given."""
    return roles_for(meta.get("model_args") or [])


def roles_for(model_args: list[str]) -> dict[str, str]:
    if len(model_args) < 2:
        return {}
    return {Path(m).name: f"model {k + 1}" for k, m in enumerate(model_args)}


def check_key(record, roles: dict[str, str]) -> tuple:
    return (Path(record.spec).name, record.property, _round(record.radius), tuple(record.window or ()),
            record.input_id, roles.get(record.model, "model"))


def _round(value):
    return None if value is None or not isinstance(value, (int, float)) or not math.isfinite(value) else \
        float(f"{value:.9g}")


class Baseline:
    def __init__(self, result, path: str, tolerance: float = DEFAULT_TOLERANCE):
        check_tolerance(tolerance)
        self.path = path
        self.tolerance = tolerance
        roles = model_roles(result.meta)
        self.checks = {check_key(r, roles): r for r in result.records if r.verdict != "error"}
        self.regressions: list[Regression] = []
        self.compared = 0
        self.new_checks = 0
        self.seen: set[tuple] = set()

    @classmethod
    def load(cls, path: Path | str, tolerance: float = DEFAULT_TOLERANCE) -> "Baseline":
        from nnspec.results.store import load_results

        return cls(load_results(Path(path)), str(path), tolerance)

    def compare(self, record, roles: dict[str, str]) -> list[Regression]:
        """The regressions of one record against its baseline check (none when it has none)."""
        key = check_key(record, roles)
        old = self.checks.get(key)
        if old is None:
            self.new_checks += 1
            return []
        self.seen.add(key)
        self.compared += 1
        if record.verdict == "error":
            return []
        found = []

        def add(kind, was, now, text):
            found.append(Regression(kind, record.spec, record.property, record.line, record.input_id, record.model,
                                    was, now, f"regression ({kind}) against {Path(self.path).name}: {text}"))

        # one regression per check, the most severe: a new violation implies the lost proof and
        # the fallen bounds, a lost proof implies a lower bound below the radius
        if old.verdict != "violated" and record.verdict == "violated":
            distance = (record.witness or {}).get("distance")
            at = f" (witness at distance {distance:.4g})" if isinstance(distance, (int, float)) else ""
            add("new-violation", old.verdict, "violated", f"was {old.verdict.replace('_', ' ')}, now violated{at}")
            return found
        if old.verdict == "proven" and record.verdict != "proven":
            add("proven-lost", "proven", record.verdict, f"was proven, now {record.verdict.replace('_', ' ')}")
            return found
        for field, kind, what in (("lower", "lower-dropped", "proven lower bound"),
                                  ("estimate", "estimate-dropped", "radius estimate")):
            was, now = (old.bounds or {}).get(field), (record.bounds or {}).get(field)
            if not isinstance(was, (int, float)) or not math.isfinite(was) or was <= 0:
                continue
            if not isinstance(now, (int, float)) or not math.isfinite(now):
                if field == "lower":
                    add(kind, was, None, f"{what} {was:.4g} is gone")
                    return found
                continue
            if now < was * (1 - self.tolerance):
                add(kind, was, now, f"{what} fell from {was:.4g} to {now:.4g} ({100 * (now / was - 1):+.1f}%, "
                                    f"tolerance {100 * self.tolerance:g}%)")
                return found
        return found

    def apply(self, record, roles: dict[str, str]) -> list[Regression]:
        """Compare and fail the record on each regression."""
        found = self.compare(record, roles)
        for reg in found:
            record.failures.append(reg.message)
            record.passed = False
        self.regressions.extend(found)
        return found

    def summary(self) -> dict[str, Any]:
        counts = {k: sum(r.kind == k for r in self.regressions) for k in KINDS}
        return {"path": self.path, "tolerance": self.tolerance, "compared": self.compared,
                "new_checks": self.new_checks, "missing": len(set(self.checks) - self.seen), "counts": counts,
                "regressions": [r.to_json() for r in self.regressions]}


def diff(old, new, old_path: str, tolerance: float = DEFAULT_TOLERANCE) -> Baseline:
    """``nnspec diff``: the regressions of run ``new`` against run ``old``, nothing run (the
    records are only read)."""
    base = Baseline(old, old_path, tolerance)
    roles = model_roles(new.meta)
    for record in new.records:
        base.regressions.extend(base.compare(record, roles))
    return base


def compare_models(result) -> list[dict[str, Any]]:
    """With several models in one run (``--model A --model B``): per property, one row per model,
    the first model the reference and every other one read as a new version of it (its
    regressions against the first, and the checks where it does better)."""
    import statistics

    from nnspec.results.run import RunResult

    order = [Path(m).name for m in result.meta.get("model_args") or []]
    props: dict[tuple, dict[str, list]] = {}
    for r in result.records:
        props.setdefault((r.spec, r.property), {}).setdefault(r.model, []).append(r)
    rows = []
    for (spec, prop), per_model in props.items():
        if len(per_model) < 2:
            continue
        models = sorted(per_model, key=lambda m: order.index(m) if m in order else len(order))
        ref = models[0]
        reference = Baseline(RunResult(per_model[ref], {}), ref)
        entries = []
        for m in models:
            recs = per_model[m]
            est = [r.bounds.get("estimate") for r in recs if isinstance(r.bounds.get("estimate"), (int, float))]
            lows = [r.bounds.get("lower") or 0.0 for r in recs]
            entry = {"model": m, "checks": len(recs), "failed": sum(not r.passed for r in recs),
                     "violated": sum(r.verdict == "violated" for r in recs),
                     "proven": sum(r.verdict == "proven" for r in recs),
                     "median_estimate": statistics.median(est) if est else None,
                     "min_lower": min(lows) if lows else None, "regressions": None, "kinds": {}}
            if m != ref:
                regs = [g for r in recs for g in reference.compare(r, {})]
                entry["regressions"] = len(regs)
                entry["kinds"] = {k: sum(g.kind == k for g in regs) for k in KINDS if any(g.kind == k for g in regs)}
            entries.append(entry)
        rows.append({"spec": spec, "property": prop, "reference": ref, "models": entries})
    return rows
