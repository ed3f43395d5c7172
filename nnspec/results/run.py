"""One record per property x input, and the run that holds them. Serialisable both ways, so that
every report renders from the JSON alone (``nnspec report results.json`` rebuilds any of them)."""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field
from typing import Any

from nnspec.errors import ExitCode

SCHEMA = "nnspec.results/1"


@dataclass
class TaskRecord:
    spec: str
    property: str
    line: int
    column: int
    kind: str
    norm: str
    radius: float
    window: list[int] | None
    expression: str
    requirements: list[str]
    model: str
    input_id: str
    label: int
    label_source: str
    backend: str
    options: dict[str, Any]
    verdict: str
    passed: bool
    failures: list[str]
    s_centre: float | None
    bounds: dict[str, Any]
    witness: dict[str, Any] | None
    lipschitz: float | None
    min_s: float | None
    value_range: list[float] | None
    queries: int
    seconds: float
    stop: str
    centre_output: list[float]
    notes: list[str]
    dropped_witnesses: int = 0
    trace: list[dict[str, Any]] = field(default_factory=list)
    milestones: list[dict[str, Any]] = field(default_factory=list)  # confirmed violations found on the way
    cached: bool = False  # served from the result cache (an earlier run with the same inputs)
    value_bounds: list[float] | None = None  # for `reachability range`: an interval the value provably stays within

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "TaskRecord":
        """A record from its JSON form; ValueError naming the first field that is missing or of the
        wrong type (a results file is input like any other: it may be truncated, edited or forged)."""
        if not isinstance(data, dict):
            raise ValueError(f"a record is a JSON object, not {type(data).__name__}")
        for name, f in cls.__dataclass_fields__.items():
            if name not in data:
                if f.default is MISSING and f.default_factory is MISSING:
                    raise ValueError(f"field '{name}' is missing")
                continue
            if not _fits(data[name], str(f.type)):
                raise ValueError(f"field '{name}' should be {f.type}, not {type(data[name]).__name__}")
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def _fits(value: Any, annotation: str) -> bool:
    """Whether a JSON value fits a field annotation such as ``float | None`` or ``list[str]``."""
    for part in annotation.split(" | "):
        base = part.split("[", 1)[0]
        if base == "None" and value is None:
            return True
        if base == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if base == "int" and isinstance(value, int) and not isinstance(value, bool):
            return True
        if base in ("str", "bool", "list", "dict") and isinstance(value, {"str": str, "bool": bool, "list": list,
                                                                           "dict": dict}[base]):
            return True
    return False


@dataclass
class RunResult:
    records: list[TaskRecord]
    meta: dict[str, Any]
    interrupted: bool = False
    errors: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.records) and not self.errors

    def exit_code(self) -> ExitCode:
        """130 when interrupted; 3 when a task hit an internal error (the others still ran);
        else 1 when a property fails, 0 when all pass."""
        if self.interrupted:
            return ExitCode.INTERRUPTED
        if any(r.verdict == "error" for r in self.records):
            return ExitCode.INTERNAL
        return ExitCode.OK if self.passed else ExitCode.FAILED

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, **self.meta, "interrupted": self.interrupted, "errors": self.errors,
                "summary": self.summary(), "records": [r.to_json() for r in self.records]}

    def summary(self) -> dict[str, int]:
        return {"records": len(self.records), "passed": sum(r.passed for r in self.records),
                "failed": sum(not r.passed for r in self.records),
                "violated": sum(r.verdict == "violated" for r in self.records),
                "proven": sum(r.verdict == "proven" for r in self.records),
                "errors": sum(r.verdict == "error" for r in self.records),
                "cached": sum(r.cached for r in self.records),
                "queries": sum(r.queries for r in self.records)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunResult":
        """Raises ValueError, naming the record, for anything that is not a results document."""
        meta = {k: v for k, v in data.items() if k not in ("schema", "records", "interrupted", "errors", "summary")}
        records = data.get("records", [])
        if not isinstance(records, list):
            raise ValueError(f"'records' should be a list, not {type(records).__name__}")
        parsed = []
        for i, r in enumerate(records):
            try:
                parsed.append(TaskRecord.from_json(r))
            except ValueError as err:
                raise ValueError(f"record {i}: {err}") from None
        errors = data.get("errors", [])
        if not isinstance(errors, list) or not all(isinstance(e, str) for e in errors):
            raise ValueError("'errors' should be a list of strings")
        return cls(parsed, meta, bool(data.get("interrupted", False)), list(errors))


def severity(record: TaskRecord) -> tuple:
    """Sort key, worst first: internal errors, violations (closest witness first), other failures,
    then the checks nearest to failing: smallest radius estimate, then the lowest property value
    seen in the ball (the margin left: it separates inputs whose estimate is capped at the ball's
    radius), then the smallest proven lower bound."""
    inf = float("inf")

    def num(v):
        return v if isinstance(v, (int, float)) and v == v else inf

    b = record.bounds or {}
    rank = 0 if record.verdict == "error" else 1 if record.verdict == "violated" else 2 if not record.passed else 3
    witness = num((record.witness or {}).get("distance")) if record.witness else num(b.get("upper"))
    margin = num(record.min_s) if record.min_s is not None else num(record.s_centre)
    return (rank, witness, num(b.get("estimate")), margin, num(b.get("lower")), record.input_id)
