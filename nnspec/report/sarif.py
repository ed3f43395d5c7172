"""SARIF 2.1.0 output (``--sarif F``): failing properties as code-scanning results on their spec
line, so that a code-review UI annotates the property that failed.

One result per failing (spec, property, model): a property checked on 10,000 inputs is one
annotation saying how many inputs fail and which is the worst, not 10,000. The rule says what
kind of failure it is; the fingerprint (spec, property, model role) lets the UI track it across
commits even when lines move.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from nnspec import __version__
from nnspec.results.run import RunResult, TaskRecord, severity

RULES = {
    "internal-error": ("error", "A task hit an internal error in nnspec (the check did not run to the end)."),
    "violation": ("error", "A confirmed witness: an input in the region that breaks the property."),
    "regression": ("error", "The check regressed against the baseline run (proof lost, bound or estimate "
                            "dropped, or a new violation)."),
    "requirement": ("error", "A requirement of the property is not met (a required radius, proof, or the "
                             "property's own threshold)."),
}


def rule_of(record: TaskRecord) -> str:
    if record.verdict == "error":
        return "internal-error"
    if record.verdict == "violated":
        return "violation"
    if any(f.startswith("regression (") for f in record.failures):
        return "regression"
    return "requirement"


def _uri(spec: str) -> tuple[str, bool]:
    """A repository-relative URI where the spec lies under the current folder, else a file URI."""
    path = Path(spec)
    try:
        rel = Path(os.path.relpath(path.resolve(), Path.cwd().resolve()))
    except ValueError:  # another drive
        rel = None
    if rel is not None and not str(rel).startswith(".."):
        return rel.as_posix(), True
    return path.resolve().as_uri(), False


def to_sarif(result: RunResult) -> dict:
    groups: dict[tuple, list[TaskRecord]] = {}
    for r in result.records:
        if not r.passed:
            groups.setdefault((r.spec, r.property, r.model), []).append(r)
    rule_ids = list(RULES)
    results = []
    for (spec, prop, model), recs in sorted(groups.items(), key=lambda kv: min(severity(r) for r in kv[1])):
        recs.sort(key=severity)
        worst = recs[0]
        rule = rule_of(worst)
        total = sum(1 for r in result.records if (r.spec, r.property, r.model) == (spec, prop, model))
        first = worst.failures[0] if worst.failures else worst.verdict
        text = (f"property '{prop}' fails on {len(recs)} of {total} input{'s' if total != 1 else ''} of {model}; "
                f"worst {worst.input_id}: {first}")
        uri, relative = _uri(spec)
        location = {"artifactLocation": {"uri": uri, **({"uriBaseId": "%SRCROOT%"} if relative else {})},
                    "region": {"startLine": max(1, worst.line), "startColumn": max(1, worst.column)}}
        fingerprint = hashlib.sha256(f"{Path(spec).name}\0{prop}\0{model}".encode()).hexdigest()[:32]
        results.append({
            "ruleId": f"nnspec/{rule}", "ruleIndex": rule_ids.index(rule), "level": RULES[rule][0],
            "message": {"text": text},
            "locations": [{"physicalLocation": location}],
            "partialFingerprints": {"nnspecProperty/v1": fingerprint},
            "properties": {"failing": len(recs), "inputs": total, "worstInput": worst.input_id,
                           "verdicts": sorted({r.verdict for r in recs})},
        })
    driver = {
        "name": "nnspec", "version": __version__, "semanticVersion": __version__,
        "rules": [{"id": f"nnspec/{k}", "name": k.title().replace("-", ""),
                   "shortDescription": {"text": v[1].split(":")[0].rstrip(".")},
                   "fullDescription": {"text": v[1]}, "defaultConfiguration": {"level": v[0]}}
                  for k, v in RULES.items()],
    }
    run = {"tool": {"driver": driver}, "results": results,
           "invocations": [{"executionSuccessful": not result.errors and not result.interrupted}],
           "originalUriBaseIds": {"%SRCROOT%": {"uri": Path.cwd().resolve().as_uri() + "/"}}}
    return {"$schema": "https://json.schemastore.org/sarif-2.1.0.json", "version": "2.1.0", "runs": [run]}


def write_sarif(path: Path, result: RunResult) -> None:
    from nnspec.results.store import write_atomic

    write_atomic(path, json.dumps(to_sarif(result), indent=1))
