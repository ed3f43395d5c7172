"""Fuzzing `nnspec check` end to end at scale (issue: hardening). Every generated spec must end in
exit 0, 1 or 2 (a result or a positioned error), never 3 (an internal error), never a hang.

    .venv/bin/python -m bench.fuzz_check --examples 10000

Uses the strategy of tests/fuzz_specs.py; prints the exit-code counts, the slowest example, and
every internal error with its spec (the default test suite runs the same strategy on 40 examples).
"""

from __future__ import annotations

import argparse
import collections
import io
import re
import tempfile
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from hypothesis import HealthCheck, given, settings

from tests.fuzz_specs import spec_files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    from nnspec.cli.main import main as nnspec_main

    torch.set_num_threads(1)
    codes: collections.Counter = collections.Counter()
    internal: list[tuple[str, str]] = []
    messages: collections.Counter = collections.Counter()
    slowest = (0.0, "")
    work = Path(tempfile.mkdtemp(prefix="nnspec-fuzz-"))
    started = time.perf_counter()

    @settings(max_examples=args.examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(spec_files())
    def run(text: str) -> None:
        nonlocal slowest
        path = work / "fuzz.nnspec"
        path.write_text(text, encoding="utf-8")
        out, err = io.StringIO(), io.StringIO()
        t0 = time.perf_counter()
        with redirect_stdout(out), redirect_stderr(err):
            code = nnspec_main(["check", str(path), "--budget", "10", "--json", str(work / "r.json")])
        dt = time.perf_counter() - t0
        codes[code] += 1
        slowest = max(slowest, (dt, text))
        if code == 2:
            first = (err.getvalue().strip().splitlines() or ["(no message)"])[0]
            messages[re.sub(r"\b\d[\d.e+-]*|'[^']*'|\"[^\"]*\"", "#", first.split("error:")[-1])[:60]] += 1
        if code not in (0, 1, 2) or "internal error" in err.getvalue():
            internal.append((text, err.getvalue().strip()))
        total = sum(codes.values())
        if total % 500 == 0:
            print(f"{total} examples, {time.perf_counter() - started:.0f} s, exit codes {dict(sorted(codes.items()))}, "
                  f"internal errors {len(internal)}", flush=True)

    import random

    random.seed(args.seed)
    run()
    total = sum(codes.values())
    print(f"\n{total} examples in {time.perf_counter() - started:.0f} s; exit codes {dict(sorted(codes.items()))}; "
          f"internal errors: {len(internal)}; slowest example {slowest[0]:.2f} s")
    print("most frequent errors (exit 2):")
    for message, count in messages.most_common(12):
        print(f"  {count:6d}  {message}")
    for text, err in internal[:20]:
        print("-" * 60 + "\n" + text + "\n" + err)


if __name__ == "__main__":
    main()
