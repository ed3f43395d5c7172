"""The HTML audit report: one self-contained file rendered from serialised results.

Jinja2 with autoescape; templates and CSS from ``reports/``; every picture and plot inline
(PNG data URIs, SVG), so the file opens offline, references nothing external, and prints well.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from nnspec import resources
from nnspec.report import charts
from nnspec.report.terminal import worst_first
from nnspec.results.run import RunResult, TaskRecord, severity
from nnspec.results.store import write_atomic


def _softmax(v: list[float]) -> list[float]:
    a = np.asarray(v, dtype=np.float64)
    e = np.exp(a - a.max())
    return (e / e.sum()).tolist()


def _witness_view(r: TaskRecord) -> dict[str, Any] | None:
    w = r.witness
    if not w:
        return None
    x = w.get("x")
    view: dict[str, Any] = {"distance": w.get("distance"), "s": w.get("s"), "confirmed": w.get("confirmed"),
                            "file": w.get("file"), "images": None, "changes": None}
    if x is None and isinstance(w.get("file"), str) and Path(w["file"]).is_file():
        try:
            x = np.load(w["file"], allow_pickle=False).tolist()
        except (OSError, ValueError) as err:  # not a .npy file, or a pickled one: show no picture
            view["file_error"] = f"cannot read {w['file']}: {str(err).splitlines()[0] if str(err) else 'not .npy'}"
    centre = w.get("centre")
    if x is not None and centre is not None and np.shape(x) == np.shape(centre):
        xa, ca = np.asarray(x, dtype=np.float64), np.asarray(centre, dtype=np.float64)
        img_x, img_c = charts.as_image(xa), charts.as_image(ca)
        if img_x is not None and img_c is not None:
            delta = img_x - img_c
            amp = np.abs(delta).max() or 1.0
            scale = max(1, 96 // max(img_x.shape[:2]))
            view["images"] = {"centre": charts.png_data_uri(img_c, scale), "witness": charts.png_data_uri(img_x, scale),
                              "delta": charts.png_data_uri(0.5 + 0.5 * delta / amp, scale), "amp": float(amp)}
        else:
            flat_x, flat_c = xa.reshape(-1), ca.reshape(-1)
            idx = np.nonzero(np.abs(flat_x - flat_c) > 1e-9)[0]
            view["changes"] = [(int(i), float(flat_c[i]), float(flat_x[i]), float(flat_x[i] - flat_c[i])) for i in idx[:50]]
    out = w.get("output") or []
    if out:
        view["out_chart"] = charts.bars(_softmax(out), int(np.argmax(out)), "probabilities at the witness")
    return view


def _milestones_view(r: TaskRecord) -> list[dict[str, Any]]:
    """The confirmed violations found along the way, then the witness: small pictures for images."""
    if not r.milestones or not r.witness:
        return []
    steps = sorted(r.milestones, key=lambda m: -m["distance"]) + [r.witness]
    out = []
    for m in steps:
        img = charts.as_image(np.asarray(m["x"], dtype=np.float64)) if m.get("x") is not None else None
        scale = max(1, 64 // max(img.shape[:2])) if img is not None else 1
        out.append({"distance": m["distance"], "found_at": m.get("found_at"),
                    "image": charts.png_data_uri(img, scale) if img is not None else None})
    return out


def _record_view(r: TaskRecord) -> dict[str, Any]:
    b = r.bounds
    trace = r.trace or []
    series = {}
    if any(t.get("estimate") is not None for t in trace):
        series["estimate"] = [(t["queries"], t.get("estimate")) for t in trace]
    if any(t.get("upper") is not None for t in trace):
        series["upper (witness)"] = [(t["queries"], t.get("upper")) for t in trace]
    if any(t.get("lower") is not None for t in trace):
        series["lower (grid game, A*)"] = [(t["queries"], t.get("lower")) for t in trace]
    min_s = [(t["queries"], t.get("min_s")) for t in trace]
    return {
        "r": r,
        "bar": charts.interval_bar(b.get("lower"), b.get("estimate"), b.get("upper"), r.radius, width=150),
        "witness": _witness_view(r),
        "milestones": _milestones_view(r),
        "centre_chart": charts.bars(_softmax(r.centre_output), r.label, "probabilities at the centre") if r.centre_output else "",
        "bounds_plot": charts.line_plot(series, "radius bounds over queries", "queries") if series else "",
        "s_plot": charts.line_plot({"lowest s": min_s}, "lowest s found over queries", "queries")
        if any(t.get("min_s") is not None for t in trace) else "",
    }


def _sweep_plots(recs: list[TaskRecord]) -> list:
    """For a radius sweep: violated fraction and mean radius bounds against the radius (Fig. 9b)."""
    radii = sorted({r.radius for r in recs})
    if len(radii) < 2:
        return []
    frac, est, upper = [], [], []
    for rad in radii:
        at = [r for r in recs if r.radius == rad]
        frac.append((rad, 100.0 * sum(r.verdict == "violated" for r in at) / len(at)))
        e = [r.bounds.get("estimate") for r in at if r.bounds.get("estimate") is not None]
        u = [r.bounds.get("upper") for r in at if r.bounds.get("upper") is not None]
        est.append((rad, sum(e) / len(e) if e else None))
        upper.append((rad, min(u) if u else None))
    return [charts.line_plot({"violated inputs (%)": frac}, "inputs with a confirmed violation", "radius"),
            charts.line_plot({"mean estimate": est, "closest witness": upper}, "radius bounds", "radius")]


def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "inf" if math.isinf(v) else f"{v:.{digits}g}"
    return str(v)


SHOWN = 10  # per property: the worst checks rendered in full (bars, witness pictures, plots)
ALL_INLINE = 25  # a property with at most this many checks is rendered in full, with no paged table
TOP = 20  # the overview's worst checks across all properties


def _distribution(recs: list[TaskRecord]) -> Markup | str:
    """Robust accuracy against radius for one property: per input (the best over a sweep's radii),
    the proven lower bound, the estimate, and the distance of the closest confirmed witness."""
    per: dict[str, dict[str, float | None]] = {}
    for r in recs:
        b = r.bounds or {}
        d = per.setdefault(r.input_id, {"lower": 0.0, "estimate": 0.0, "upper": math.inf})
        lower, est = b.get("lower"), b.get("estimate")
        upper = (r.witness or {}).get("distance") if r.witness else b.get("upper")
        d["lower"] = max(d["lower"], lower or 0.0)
        d["estimate"] = max(d["estimate"], est if est is not None else (lower or 0.0))
        if upper is not None:
            d["upper"] = min(d["upper"], upper)
    if not any(b for r in recs for b in ((r.bounds or {}).get(k) for k in ("lower", "estimate", "upper")) if b) \
            and not any(r.witness for r in recs):
        return ""  # a quantity with no radius (a range, a reachability value)
    r_max = max(r.radius for r in recs if r.radius is not None and math.isfinite(r.radius))
    curves = {"no violation found within r": [d["upper"] for d in per.values()],
              "estimate >= r": [min(d["estimate"], d["upper"]) for d in per.values()],
              "proven >= r": [d["lower"] for d in per.values()]}
    return charts.radius_distribution(curves, r_max, f"share of the {len(per)} inputs that hold at radius r")


def _rows_json(recs: list[TaskRecord]) -> Markup:
    """Every check of a property as compact JSON for the paged table (script-safe: no '<', '>' or
    '&' survives unescaped, so the data cannot close its script element)."""
    import json

    def num(v):
        return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v

    rows = [[r.input_id, num(r.radius), r.verdict, r.passed, num(r.s_centre), num(r.bounds.get("estimate")),
             num(r.bounds.get("upper")), num(r.bounds.get("lower")), r.bounds.get("lower_method"), r.queries,
             r.stop + (" (cached)" if r.cached else ""), r.failures[0] if r.failures else ""] for r in recs]
    text = json.dumps(rows, separators=(",", ":"), allow_nan=False)
    return Markup(text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e"))


def render_html(result: RunResult) -> str:
    env = Environment(loader=FileSystemLoader(str(resources.reports_dir())),
                      autoescape=select_autoescape(["html", "j2"], default=True))
    env.filters["fmt"] = _fmt
    css = (resources.reports_dir() / "report.css").read_text(encoding="utf-8")
    groups = []
    for k, ((spec, prop, model), recs) in enumerate(worst_first(result.records)):
        full = len(recs) <= ALL_INLINE
        shown = recs if full else recs[:SHOWN]
        verdicts: dict[str, int] = {}
        for r in recs:
            verdicts[r.verdict] = verdicts.get(r.verdict, 0) + 1
        groups.append({"id": f"p{k + 1}", "spec": spec, "property": prop, "model": model, "first": recs[0],
                       "passed": all(r.passed for r in recs), "records": [_record_view(r) for r in shown],
                       "count": len(recs), "paged": None if full else _rows_json(recs),
                       "failed": sum(not r.passed for r in recs), "sweep": _sweep_plots(recs),
                       "radii": sorted({r.radius for r in recs}), "verdicts": verdicts,
                       "distribution": _distribution(recs)})
    index = {(g["spec"], g["property"], g["model"]): g["id"] for g in groups}
    worst = [(r, index[(r.spec, r.property, r.model)]) for r in sorted(result.records, key=severity)[:TOP]]
    ranking = _model_ranking(result)
    return env.get_template("report.html.j2").render(result=result, meta=result.meta, summary=result.summary(),
                                                     groups=groups, css=css, ranking=ranking, worst=worst,
                                                     baseline=result.meta.get("baseline"))


def _model_ranking(result: RunResult) -> list[dict[str, Any]] | None:
    """Per property checked on several models: the first model as the reference, each other one
    read as a new version of it (its regressions against the first)."""
    from nnspec.results.baseline import compare_models

    return compare_models(result) or None


def write_html(result: RunResult, path: Path) -> None:
    write_atomic(Path(path), render_html(result))
