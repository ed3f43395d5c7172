"""Benchmark 15: start-up of `nnspec check` (issue 14).

    python -m bench.startup [--repeat 5]

The issue's case: one robustness property with a 50-query budget on one input of the demo MLP,
run as a user runs it (a fresh `nnspec check` process, wall time), in four states:
- no cache (`--no-cache`): everything from the start;
- the run cached: the same spec and model again (the whole run comes from the result cache:
  nothing lowered, no model loaded, no torch import);
- one property edited: the cache holds the model's facts and the other tasks, the edited
  property runs (torch imported, the model converted and loaded);
- the same with a warm server (`nnspec server start`: the command runs in a fork of a process that
  has imported torch, onnx2torch and nnspec);
- `import torch` alone, and `nnspec version` (the interpreter and the CLI's imports).
Medians of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import ROOT

SPEC = """model "{model}"
output logits
inputs "{inputs}" key x labels key y first 1
domain [0, 1]
property p: robustness within linf({radius}) using mads(budget=50, seed=0)
"""


def wall(args: list[str], cwd: Path, env=None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr[-400:]}")
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp())
    (folder / ".git").mkdir()  # a project folder: the cache is on by default there
    models = ROOT / "specs" / "models"
    spec = folder / "one.nnspec"
    nnspec = [sys.executable, "-m", "nnspec"]
    alone = {**os.environ, "NNSPEC_SERVER": "off"}
    served = {**os.environ, "NNSPEC_SERVER": "on", "NNSPEC_SERVER_DIR": str(Path(tempfile.mkdtemp(prefix="nns-")))}

    def write(radius: float) -> None:
        spec.write_text(SPEC.format(model=models / "digits_mlp.onnx", inputs=models / "digits_test.npz",
                                    radius=radius))

    def states(env: dict, label: str, start: float) -> None:
        write(start)
        rows[f"{label}no cache"] = [wall(nnspec + ["check", "one.nnspec", "--no-cache"], folder, env)
                                    for _ in range(args.repeat)]
        wall(nnspec + ["check", "one.nnspec"], folder, env)  # fill the cache
        rows[f"{label}the run cached"] = [wall(nnspec + ["check", "one.nnspec"], folder, env) for _ in range(args.repeat)]
        edited = []
        for k in range(args.repeat):
            write(start + 0.001 * (k + 1))  # a new radius each time: that task is not in the cache
            edited.append(wall(nnspec + ["check", "one.nnspec"], folder, env))
        rows[f"{label}one property edited"] = edited

    rows: dict[str, list[float]] = {}
    states(alone, "", 0.01)
    started = time.perf_counter()
    subprocess.run(nnspec + ["server", "start"], env=served, check=True, capture_output=True)
    server_start = time.perf_counter() - started
    try:
        states(served, "warm server: ", 0.02)
    finally:
        subprocess.run(nnspec + ["server", "stop"], env=served, capture_output=True)
    rows["import torch alone"] = [wall([sys.executable, "-c", "import torch"], folder) for _ in range(args.repeat)]
    rows["nnspec version"] = [wall(nnspec + ["version"], folder, alone) for _ in range(args.repeat)]
    print(f"`nnspec server start` took {server_start:.2f} s")
    print("| state | median wall s | min | max |")
    print("|---|---|---|---|")
    for name, times in rows.items():
        print(f"| {name} | {statistics.median(times):.2f} | {min(times):.2f} | {max(times):.2f} |")
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
