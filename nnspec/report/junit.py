"""JUnit XML: one testcase per property x input, failures with the witness summary."""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree as ET

from nnspec.report.terminal import group
from nnspec.results.run import RunResult
from nnspec.results.store import write_atomic


def render_junit(result: RunResult) -> str:
    suites = ET.Element("testsuites", name="nnspec")
    for (spec, prop, model), recs in group(result.records).items():
        suite = ET.SubElement(suites, "testsuite", name=f"{spec}::{prop}", tests=str(len(recs)),
                              failures=str(sum(not r.passed and r.verdict != "error" for r in recs)),
                              errors=str(sum(r.verdict == "error" for r in recs)),
                              time=f"{sum(r.seconds for r in recs):.3f}")
        for r in recs:
            case = ET.SubElement(suite, "testcase", classname=f"{Path(spec).stem}.{prop}",
                                 name=f"{r.input_id} [{model}]", file=spec, line=str(r.line), time=f"{r.seconds:.3f}")
            if r.verdict == "error":  # an internal error in this task: JUnit's <error>, not a failed check
                failure = ET.SubElement(case, "error", message="; ".join(r.failures), type="internal")
                failure.text = _details(r)
            elif not r.passed:
                failure = ET.SubElement(case, "failure", message="; ".join(r.failures), type=r.verdict)
                failure.text = _details(r)
            out = ET.SubElement(case, "system-out")
            out.text = _details(r)
    for err in result.errors:
        suite = ET.SubElement(suites, "testsuite", name="nnspec errors", tests="1", failures="0", errors="1")
        case = ET.SubElement(suite, "testcase", classname="nnspec", name="run")
        ET.SubElement(case, "error", message=err)
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def _details(r) -> str:
    b = r.bounds
    lines = [f"{r.kind}: {r.expression} within {r.norm}({r.radius:g})", f"verdict: {r.verdict}",
             f"s at centre: {r.s_centre}", f"radius: estimate {b.get('estimate')}, upper {b.get('upper')}, "
             f"lower {b.get('lower')}", f"queries: {r.queries}, stop: {r.stop}"]
    if r.witness:
        lines.append(f"witness: distance {r.witness['distance']:.6g}, s {r.witness['s']:.4g}, "
                     f"file {r.witness.get('file')}")
    return "\n".join(lines)


def write_junit(result: RunResult, path: Path) -> None:
    write_atomic(Path(path), render_junit(result))
