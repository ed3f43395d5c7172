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

from nnspec import resources
from nnspec.report import charts
from nnspec.report.terminal import group
from nnspec.results.run import RunResult, TaskRecord
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


def render_html(result: RunResult) -> str:
    env = Environment(loader=FileSystemLoader(str(resources.reports_dir())),
                      autoescape=select_autoescape(["html", "j2"], default=True))
    env.filters["fmt"] = _fmt
    css = (resources.reports_dir() / "report.css").read_text(encoding="utf-8")
    groups = []
    for (spec, prop, model), recs in group(result.records).items():
        groups.append({"spec": spec, "property": prop, "model": model, "first": recs[0],
                       "passed": all(r.passed for r in recs), "records": [_record_view(r) for r in recs],
                       "failed": sum(not r.passed for r in recs), "sweep": _sweep_plots(recs),
                       "radii": sorted({r.radius for r in recs})})
    ranking = _model_ranking(result)
    return env.get_template("report.html.j2").render(result=result, meta=result.meta, summary=result.summary(),
                                                     groups=groups, css=css, ranking=ranking)


def _model_ranking(result: RunResult) -> list[dict[str, Any]]:
    """Per property, the models ordered by their worst radius estimate (largest first)."""
    rows = []
    props = {(r.spec, r.property) for r in result.records}
    for spec, prop in sorted(props):
        per_model = {}
        for r in result.records:
            if (r.spec, r.property) == (spec, prop):
                est = r.bounds.get("estimate")
                m = per_model.setdefault(r.model, {"model": r.model, "worst": math.inf, "failed": 0})
                m["worst"] = min(m["worst"], est if est is not None else math.inf)
                m["failed"] += not r.passed
        if len(per_model) < 2:
            continue  # only properties checked on several models are compared
        order = sorted(per_model.values(), key=lambda m: (m["failed"], -m["worst"]))
        rows.append({"spec": spec, "property": prop, "models": order})
    return rows or None


def write_html(result: RunResult, path: Path) -> None:
    write_atomic(Path(path), render_html(result))
