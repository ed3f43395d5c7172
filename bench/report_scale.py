"""Benchmark 14: the HTML report at scale (issue 15).

    python -m bench.report_scale [--inputs 10000]

Builds a results file like a real run's (one robustness property on N MNIST-sized inputs: 5%
violated with a witness image, 60% proven, the rest quantified with an estimate; a second
property on 200 inputs), renders it with ``nnspec report``, and opens the page in headless
Chromium: the page's own script records when its paged tables are ready. Prints the file size,
the render time and the time to a ready page (Chromium's start included and not).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from nnspec.results.run import RunResult, TaskRecord
from nnspec.results.store import write_json


def synthetic_result(n: int = 10_000, seed: int = 0) -> RunResult:
    rng = np.random.default_rng(seed)
    records = []

    def add(prop: str, line: int, i: int, radius: float):
        u = rng.random()
        centre = rng.random((1, 28, 28)).round(2)
        r_star = float(rng.gamma(4.0, radius / 3))
        trace = [{"queries": 64 * k, "estimate": r_star * (1 + 1 / k), "min_s": 1 / k} for k in range(1, 21)]
        witness, verdict, bounds = None, "quantified", {"estimate": min(r_star, radius), "upper": None, "lower": None,
                                                        "lower_method": None}
        if u < 0.05:
            x = np.clip(centre + rng.uniform(-radius, radius, centre.shape), 0, 1)
            d = float(np.abs(x - centre).max())
            verdict = "violated"
            witness = {"file": None, "distance": d, "s": -0.1, "output": rng.normal(size=10).tolist(), "confirmed": True,
                       "found_at": 300, "x": x.tolist(), "centre": centre.tolist()}
            bounds = {"estimate": None, "upper": d, "lower": None, "lower_method": None}
        elif u < 0.65:
            verdict = "proven"
            bounds = {"estimate": radius, "upper": None, "lower": radius, "lower_method": "CROWN"}
        records.append(TaskRecord(
            spec="specs/zoo.nnspec", property=prop, line=line, column=1, kind="robustness", norm="linf", radius=radius,
            window=None, expression="logit(label) - max other logit", requirements=["no violation"],
            model="net.onnx", input_id=f"mnist_test.idx[{i}]", label=int(rng.integers(10)), label_source="data",
            backend="auto", options={"budget": 1280, "seed": 0}, verdict=verdict, passed=verdict != "violated",
            failures=[] if verdict != "violated" else [f"confirmed violation at distance {bounds['upper']:.4g}"],
            s_centre=float(rng.random()), bounds=bounds, witness=witness, lipschitz=float(rng.random() * 10),
            min_s=float(rng.random()), value_range=None, queries=1280, seconds=0.2, stop="budget",
            centre_output=rng.normal(size=10).tolist(), notes=[], trace=trace))

    for i in range(n):
        add("robust", 5, i, 0.02)
    for i in range(200):
        add("robust_wide", 6, i, 0.1)
    return RunResult(records, {"nnspec_version": "bench", "created": "2026-12-03T00:00:00+00:00", "seed": 0,
                               "budget": None, "device": "cpu", "seconds": 1.0})


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def open_in_chromium(html: Path, timeout: float = 60) -> tuple[float, int | None, str]:
    """(wall seconds, the page's ready time in ms (None: its script never finished), the DOM)."""
    browser = chromium()
    start = time.perf_counter()
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                           "--v=0", "--dump-dom", html.resolve().as_uri()],
                          capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - start
    dom = proc.stdout
    ready = None
    import re

    m = re.search(r'data-ready="(\d+)"', dom)
    if m:
        ready = int(m.group(1))
    return wall, ready, dom + "\n" + proc.stderr


def console_errors(log: str) -> list[str]:
    return [line for line in log.splitlines() if "CONSOLE" in line and ("Uncaught" in line or "Error" in line)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--inputs", type=int, default=10_000)
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp())
    result = synthetic_result(args.inputs)
    write_json(folder / "r.json", result)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "nnspec", "report", str(folder / "r.json"), "--html", str(folder / "r.html")], check=True,
                   capture_output=True)
    render = time.perf_counter() - start
    size = (folder / "r.html").stat().st_size
    print(f"{len(result.records)} checks: results JSON {(folder / 'r.json').stat().st_size / 1e6:.1f} MB, "
          f"HTML {size / 1e6:.2f} MB, `nnspec report` {render:.1f} s")
    if chromium() is None:
        print("no Chromium: page load not measured")
        return
    blank = folder / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body><script>document.body.dataset.ready=String(Math.round("
                     "performance.now()))</script></body></html>")
    base = min(open_in_chromium(blank)[0] for _ in range(3))
    runs = [open_in_chromium(folder / "r.html") for _ in range(3)]
    wall = min(r[0] for r in runs)
    ready = min(r[1] for r in runs if r[1] is not None)
    print(f"headless Chromium: page ready at {ready} ms after navigation start; wall {wall:.2f} s with the "
          f"browser's start ({base:.2f} s for a blank page): {wall - base:.2f} s for the report; console errors: "
          f"{len(console_errors(runs[0][2]))}")


if __name__ == "__main__":
    main()
