"""One record per property x input, and the run that holds them. Serialisable both ways, so that
every report renders from the JSON alone (``nnspec report results.json`` rebuilds any of them)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
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

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "TaskRecord":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


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
        if self.interrupted:
            return ExitCode.INTERRUPTED
        return ExitCode.OK if self.passed else ExitCode.FAILED

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, **self.meta, "interrupted": self.interrupted, "errors": self.errors,
                "summary": self.summary(), "records": [r.to_json() for r in self.records]}

    def summary(self) -> dict[str, int]:
        return {"records": len(self.records), "passed": sum(r.passed for r in self.records),
                "failed": sum(not r.passed for r in self.records),
                "violated": sum(r.verdict == "violated" for r in self.records),
                "proven": sum(r.verdict == "proven" for r in self.records),
                "queries": sum(r.queries for r in self.records)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunResult":
        meta = {k: v for k, v in data.items() if k not in ("schema", "records", "interrupted", "errors", "summary")}
        return cls([TaskRecord.from_json(r) for r in data.get("records", [])], meta,
                   data.get("interrupted", False), data.get("errors", []))
