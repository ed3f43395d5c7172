"""Small inline charts: SVG for plots and interval bars, PNG (encoded here) for images.

No plotting library and no external reference: everything is a string embedded in the HTML.
"""

from __future__ import annotations

import base64
import math
import struct
import zlib
from typing import Sequence

import numpy as np
from markupsafe import Markup, escape


def png_data_uri(img: np.ndarray, scale: int = 1) -> str:
    """A grayscale (H, W) or RGB (H, W, 3) image in [0, 1] as a data: URI, upscaled by ``scale``."""
    arr = np.clip(np.asarray(img, dtype=np.float64), 0, 1)
    arr = (arr * 255 + 0.5).astype(np.uint8)
    if scale > 1:
        arr = arr.repeat(scale, axis=0).repeat(scale, axis=1)
    h, w = arr.shape[:2]
    colour = 2 if arr.ndim == 3 else 0
    rows = b"".join(b"\x00" + arr[i].tobytes() for i in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0)) \
        + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def as_image(x: np.ndarray) -> np.ndarray | None:
    """(C, H, W) / (H, W) with C in {1, 3} -> an (H, W[, 3]) image; None for tabular inputs."""
    a = np.asarray(x, dtype=np.float64)
    a = a.reshape(a.shape[-3:]) if a.ndim > 3 else a
    if a.ndim == 3 and a.shape[0] in (1, 3) and min(a.shape[1:]) >= 4:
        return a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)
    if a.ndim == 2 and min(a.shape) >= 4:
        return a
    return None


def interval_bar(lower, estimate, upper, radius: float, width: int = 220) -> Markup:
    """The radius bounds on [0, radius]: lower..upper band, estimate tick."""
    def x(v):
        return 4 + (width - 8) * max(0.0, min(1.0, v / radius)) if radius > 0 else 4
    parts = [f'<svg class="bar" width="{width}" height="18" role="img" aria-label="radius bounds">',
             f'<rect x="4" y="7" width="{width - 8}" height="4" fill="#e5e7eb"/>']
    lo = lower if lower is not None else 0.0
    hi = upper if upper is not None else radius
    parts.append(f'<rect x="{x(lo):.1f}" y="5" width="{max(x(hi) - x(lo), 1):.1f}" height="8" fill="#bfdbfe"/>')
    if lower is not None:
        parts.append(f'<line x1="{x(lower):.1f}" x2="{x(lower):.1f}" y1="2" y2="16" stroke="#15803d" stroke-width="2"/>')
    if upper is not None:
        parts.append(f'<line x1="{x(upper):.1f}" x2="{x(upper):.1f}" y1="2" y2="16" stroke="#b91c1c" stroke-width="2"/>')
    if estimate is not None:
        parts.append(f'<circle cx="{x(estimate):.1f}" cy="9" r="4" fill="#1d4ed8"/>')
    parts.append("</svg>")
    return Markup("".join(parts))


def bars(values: Sequence[float], highlight: int | None, title: str, width: int = 260, height: int = 90) -> Markup:
    """A bar chart of an output vector (probabilities or logits)."""
    vals = [0.0 if v is None or not math.isfinite(v) else float(v) for v in values]
    if not vals:
        return Markup("")
    lo, hi = min(0.0, min(vals)), max(0.0, max(vals))
    span = (hi - lo) or 1.0
    bw = (width - 20) / len(vals)
    zero = 10 + (height - 30) * (hi / span)
    parts = [f'<svg width="{width}" height="{height}" role="img" aria-label="{escape(title)}">',
             f'<text x="4" y="10" class="t">{escape(title)}</text>',
             f'<line x1="10" x2="{width - 10}" y1="{zero + 4:.1f}" y2="{zero + 4:.1f}" stroke="#9ca3af"/>']
    for i, v in enumerate(vals):
        h = (height - 30) * abs(v) / span
        y = zero + 4 - h if v >= 0 else zero + 4
        fill = "#dc2626" if i == highlight else "#6b7280"
        parts.append(f'<rect x="{10 + i * bw + 1:.1f}" y="{y:.1f}" width="{max(bw - 2, 1):.1f}" height="{max(h, 0.5):.1f}" fill="{fill}"/>')
        parts.append(f'<text x="{10 + i * bw + bw / 2:.1f}" y="{height - 4}" class="t" text-anchor="middle">{i}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def line_plot(series: dict[str, list[tuple[float, float]]], title: str, xlabel: str,
              width: int = 420, height: int = 160, y_range: tuple[float, float] | None = None) -> Markup:
    """Lines over a shared x axis (e.g. bounds against queries)."""
    pts = [p for s in series.values() for p in s if p[1] is not None and math.isfinite(p[1])]
    if len(pts) < 2:
        return Markup("")
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = y_range if y_range is not None else (min(p[1] for p in pts), max(p[1] for p in pts))
    if y1 == y0:
        y1 = y0 + 1
    if x1 == x0:
        x1 = x0 + 1
    L, R, T, B = 46, 10, 18, 28

    def sx(v):
        return L + (width - L - R) * (v - x0) / (x1 - x0)

    def sy(v):
        return T + (height - T - B) * (1 - (v - y0) / (y1 - y0))

    colours = ["#1d4ed8", "#b91c1c", "#15803d", "#a16207"]
    parts = [f'<svg width="{width}" height="{height}" role="img" aria-label="{escape(title)}">',
             f'<text x="{L}" y="12" class="t">{escape(title)}</text>',
             f'<rect x="{L}" y="{T}" width="{width - L - R}" height="{height - T - B}" fill="none" stroke="#d1d5db"/>',
             f'<text x="{L - 4}" y="{T + 8}" class="t" text-anchor="end">{y1:.3g}</text>',
             f'<text x="{L - 4}" y="{height - B}" class="t" text-anchor="end">{y0:.3g}</text>',
             f'<text x="{L}" y="{height - 8}" class="t">{x0:.4g}</text>',
             f'<text x="{width - R}" y="{height - 8}" class="t" text-anchor="end">{x1:.4g} {escape(xlabel)}</text>']
    for k, (name, s) in enumerate(series.items()):
        good = [(a, b) for a, b in s if b is not None and math.isfinite(b)]
        if not good:
            continue
        path = " ".join(f"{'M' if i == 0 else 'L'}{sx(a):.1f},{sy(b):.1f}" for i, (a, b) in enumerate(good))
        c = colours[k % len(colours)]
        parts.append(f'<path d="{path}" fill="none" stroke="{c}" stroke-width="1.5"/>')
        parts.append(f'<text x="{width - R - 4}" y="{T + 12 + 12 * k}" class="t" text-anchor="end" '
                     f'style="fill:{c}">{escape(name)}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


def steps(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """A right-continuous step function through ``points`` (sorted by x), as line-plot points."""
    out: list[tuple[float, float]] = []
    for i, (x, y) in enumerate(points):
        if i:
            out.append((x, points[i - 1][1]))
        out.append((x, y))
    return out


def radius_distribution(curves: dict[str, list[float | None]], r_max: float, title: str,
                        width: int = 420, height: int = 170) -> Markup:
    """Robust accuracy against radius: for each curve (one value per input: the radius it holds
    up to), the fraction of inputs whose value is at least r, for r in [0, r_max]."""
    if not r_max or r_max <= 0 or not math.isfinite(r_max):
        return Markup("")
    series = {}
    for name, values in curves.items():
        vals = [min(max(0.0, v), r_max) if v is not None and not math.isnan(v) else 0.0 for v in values]
        n = len(vals)
        if not n:
            continue
        # f(r) = share of inputs that hold beyond r; at r_max, those that hold up to r_max
        pts = [(0.0, sum(v > 0 for v in vals) / n)]
        pts += [(x, sum(v > x for v in vals) / n) for x in sorted({v for v in vals if 0 < v < r_max})]
        pts.append((r_max, sum(v >= r_max for v in vals) / n))
        series[name] = steps(pts)
    return line_plot(series, title, "radius", width, height, y_range=(0.0, 1.0))
