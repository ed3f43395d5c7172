"""Benchmark 16: 1 against 2 workers on the DeepGame MNIST CNN with 200 test images (issue 14).

    python -m bench.workers [--inputs 200] [--ray]

One robustness property (L-inf 0.05, `mads` with a 500-query budget per input) on the first 200
MNIST test images, run through `nnspec.pipeline.check` in-process, in a process pool of 2
(`--jobs 2`) and, with `--ray`, on a private local Ray cluster of 2 actors. The 200 inputs are cut
into 4 shards of 50 (planning.shard), which the workers share. Wall time of the whole check, the
records compared (they must be the same), threads per worker as the defaults choose them.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench.common import data_root

SPEC = """model "{model}"
output logits
inputs "{images}" labels "{labels}" first {n}
domain [0, 1]
property robust: robustness within linf(0.05) using mads(budget=500, seed=0)
"""


def essence(result) -> list:
    return [(r.input_id, r.verdict, json.dumps(r.bounds, sort_keys=True), r.queries) for r in result.records]


def main() -> None:
    from nnspec.pipeline import CheckOptions, check

    ap = argparse.ArgumentParser()
    ap.add_argument("--inputs", type=int, default=200)
    ap.add_argument("--ray", action="store_true")
    args = ap.parse_args()
    root = data_root()
    if root is None:
        raise SystemExit("needs ../shared/data (or NNSPEC_DATA)")
    folder = Path(tempfile.mkdtemp())
    spec = folder / "dg.nnspec"
    spec.write_text(SPEC.format(model=root / "models/deepgame_mnist.onnx",
                                images=root / "mnist/t10k-images-idx3-ubyte.gz",
                                labels=root / "mnist/t10k-labels-idx1-ubyte.gz", n=args.inputs))
    runs = [("in-process, 1 worker (2 threads: the default on 2 cores)", CheckOptions(cache=False)),
            ("in-process, 1 worker, 1 thread", CheckOptions(cache=False, threads=1)),
            ("process pool, 2 workers", CheckOptions(cache=False, jobs=2))]
    if args.ray:
        runs.append(("Ray local cluster, 2 actors", CheckOptions(cache=False, executor="ray", jobs=2)))
    reference = None
    print("| executor | wall s | speed-up | checks | records equal |")
    print("|---|---|---|---|---|")
    base = None
    for name, options in runs:
        start = time.perf_counter()
        result = check([str(spec)], options)
        wall = time.perf_counter() - start
        base = base or wall
        if reference is None:
            reference = essence(result)
        print(f"| {name} | {wall:.1f} | {base / wall:.2f} | {len(result.records)} checks | "
              f"{essence(result) == reference} |", flush=True)


if __name__ == "__main__":
    main()
