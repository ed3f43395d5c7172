"""The terminal: a progress line per task (a bar on a tty) and a summary table per property."""

from __future__ import annotations

from collections import OrderedDict

from rich.console import Console
from rich.table import Table

from nnspec.results.run import RunResult, TaskRecord, severity
from nnspec.text import plain


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4g}"


def group(records: list[TaskRecord]) -> "OrderedDict[tuple[str, str, str], list[TaskRecord]]":
    groups: OrderedDict = OrderedDict()
    for r in records:
        groups.setdefault((r.spec, r.property, r.model), []).append(r)
    return groups


def worst_first(records: list[TaskRecord]) -> "list[tuple[tuple[str, str, str], list[TaskRecord]]]":
    """Property groups, the group with the worst check first; each group's records worst first."""
    groups = [(key, sorted(recs, key=severity)) for key, recs in group(records).items()]
    return sorted(groups, key=lambda kv: severity(kv[1][0]))


def summary_table(result: RunResult) -> Table:
    table = Table(title="nnspec results", show_lines=False)
    for col in ("property", "where", "model", "inputs", "status", "violated", "proven", "worst input",
                "estimate (min)", "upper (min)", "lower (min)"):
        table.add_column(col, justify="right" if col in ("inputs", "violated", "proven") else "left")
    for (spec, prop, model), recs in worst_first(result.records):
        failed = [r for r in recs if not r.passed]
        estimates = [r.bounds.get("estimate") for r in recs if r.bounds.get("estimate") is not None]
        uppers = [r.bounds.get("upper") for r in recs if r.bounds.get("upper") is not None]
        lowers = [r.bounds.get("lower") for r in recs]  # the property's proved radius: the least of all inputs
        worst = recs[0]  # worst first (nnspec.results.run.severity)
        status = "[green]PASS[/]" if not failed else f"[red]FAIL[/] ({len(failed)})"
        table.add_row(plain(prop), plain(f"{spec}:{recs[0].line}"), plain(model), str(len(recs)), status,
                      str(sum(r.verdict == "violated" for r in recs)), str(sum(r.verdict == "proven" for r in recs)),
                      plain(worst.input_id), _fmt(min(estimates) if estimates else None),
                      _fmt(min(uppers) if uppers else None),
                      _fmt(min(lowers) if lowers and None not in lowers else None))
    return table


def print_summary(console: Console, result: RunResult) -> None:
    for summary in result.meta.get("input_sets", []):
        console.print("inputs: " + plain(_input_line(summary)), highlight=False, soft_wrap=True)
    for warning in result.meta.get("warnings", []):
        console.print(f"[yellow]{plain(warning)}[/]", highlight=False, soft_wrap=True)
    if not result.records and result.errors:
        return  # nothing ran: the error says why, a "0 checks" line would only confuse
    if result.records:
        console.print(summary_table(result))
    for r in sorted(result.records, key=severity):
        for f in r.failures:
            console.print(f"[red]FAIL[/] {plain(f'{r.spec}:{r.line}: {r.property} on {r.input_id}: {f}')}",
                          highlight=False)
    comparison = _comparison_table(result)
    if comparison is not None:
        console.print(comparison)
    base = result.meta.get("baseline")
    if base:
        n = len(base.get("regressions", []))
        counts = ", ".join(f"{v} {k}" for k, v in base.get("counts", {}).items() if v)
        colour = "red" if n else "green"
        console.print(f"[{colour}]baseline {plain(str(base.get('path')))}: {n} regression{'s' if n != 1 else ''}"
                      f"{' (' + counts + ')' if counts else ''}[/] in {base.get('compared', 0)} compared checks"
                      f" (tolerance {100 * float(base.get('tolerance', 0)):g}%); {base.get('new_checks', 0)} new, "
                      f"{base.get('missing', 0)} no longer run", highlight=False)
    s = result.summary()
    verdict = "[green]all properties pass[/]" if result.passed else "[red]some properties fail[/]"
    extra = (f", {s['errors']} internal error{'s' if s['errors'] != 1 else ''}" if s.get("errors") else "") + \
        (f", {s['cached']} from the result cache" if s.get("cached") else "")
    if s.get("errors"):
        verdict = "[red]tasks failed with internal errors (exit 3); the other tasks ran[/]"
    console.print(f"{s['records']} checks, {s['passed']} passed ({s['proven']} proven), {s['failed']} failed, "
                  f"{s['queries']} model queries{extra}: {verdict}", highlight=False)


def _input_line(d: dict) -> str:
    from nnspec.models.sanity import InputSummary

    fields = {k: d[k] for k in InputSummary.__dataclass_fields__ if k in d}
    try:
        return InputSummary(**fields).line_text()
    except TypeError:  # an older results file: what it has
        return str(d.get("source", "?"))


def _comparison_table(result: RunResult) -> Table | None:
    """Several models in one run: per property, the first model the reference and the others
    read as new versions of it (nnspec.results.baseline.compare_models)."""
    from nnspec.results.baseline import compare_models

    rows = compare_models(result)
    if not rows:
        return None
    table = Table(title="model comparison (first model = reference)", show_lines=False)
    for col in ("property", "model", "failed", "proven", "median estimate", "regressions"):
        table.add_column(col, justify="right" if col in ("failed", "proven") else "left")
    for row in rows:
        for k, m in enumerate(row["models"]):
            regs = "reference" if m["regressions"] is None else (
                f"[red]{m['regressions']}[/] (" + ", ".join(f"{n} {kind}" for kind, n in m["kinds"].items()) + ")"
                if m["regressions"] else "[green]0[/]")
            table.add_row(plain(row["property"]) if k == 0 else "", plain(m["model"]), str(m["failed"]),
                          f"{m['proven']}/{m['checks']}", _fmt(m["median_estimate"]), regs)
    return table
