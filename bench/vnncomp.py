"""Benchmark 12: the VNN-COMP 2022 instances in ../shared/data through nnspec's runner.

Every instance of acasxu, mnist_fc, oval21 and test runs through ``nnspec.interop.vnncomp.solve``
(the code behind ``nnspec vnncomp run``) with a per-benchmark timeout (start-up of the solve
included, not the interpreter's), two instances at a time with one torch thread each (2 cores).
Each answer is compared with ground_truth.csv: a `sat` on an `unsat` instance, or an `unsat` on a
`sat` one, is a wrong answer (the goal is 0); `sat` answers carry a counterexample that onnxruntime
confirmed against the query. Writes bench/results/vnncomp.jsonl and prints the table for
docs/benchmarks.md.

    python -m bench.vnncomp [--timeout-scale 1.0] [--only acasxu] [--limit N]
    python -m bench.vnncomp --official --only acasxu --rerun-unsolved bench/results/vnncomp_acasxu.jsonl

``--official``: each instance's own VNN-COMP timeout (instances.csv: 116 s ACAS Xu, 120/300 s
mnist_fc, 720 s oval21) instead of the short per-benchmark ones. ``--rerun-unsolved FILE``: an
instance answered sat or unsat in FILE (a shorter run; the runner is anytime, so a longer timeout
only adds time) keeps that answer, marked ``"from": FILE``; only the others run again. Together
they measure the competition's setting in the hours that the unsolved instances need, not a day.
``--cap S``: no instance gets more than S seconds (with ``--official``, a lower bound of what the
competition's timeouts would give). ``--jobs 1 --threads 2``: one instance at a time with both
cores (torch's threads, and branch and bound's MILPs two at a time), as the competition gives
each instance the whole machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing as mp
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from bench.common import ROOT, data_root

TIMEOUTS = {"acasxu": 8.0, "mnist_fc": 10.0, "oval21": 10.0, "test": 5.0}


def _one(args):
    bench, onnx_path, vnnlib_path, timeout, threads = args
    import torch

    torch.set_num_threads(threads)  # and branch and bound's MILPs at once
    from nnspec.interop.vnncomp import solve

    started = time.perf_counter()
    try:
        answer = solve(onnx_path, vnnlib_path, timeout, started=started)
        result, notes = answer.result, answer.notes[-3:]
    except Exception as err:  # an error is an answer too: it is counted, never hidden
        result, notes = "error", [f"{type(err).__name__}: {err}"]
    seconds = time.perf_counter() - started
    late = None
    if seconds > timeout:  # the competition kills a run at its timeout (``nnspec vnncomp run`` does too)
        late, result = result, "timeout"
    return {"benchmark": bench, "onnx": Path(onnx_path).name, "vnnlib": Path(vnnlib_path).name, "result": result,
            "seconds": round(seconds, 2), "timeout": timeout, "late_result": late, "notes": notes}


def _one_check(args):
    """The instance through ``nnspec check QUERY --model NET`` (the pipeline behind it, default
    options): violated (a confirmed witness), proven, or neither; errors are counted."""
    bench, onnx_path, vnnlib_path, timeout, threads = args
    import torch

    torch.set_num_threads(threads)
    from nnspec.pipeline import CheckOptions, check

    started = time.perf_counter()
    try:
        run = check([vnnlib_path], CheckOptions(models=[onnx_path], cross_check=True, cache=False))
        verdicts = [r.verdict for r in run.records]
        result = "sat" if any(r.witness for r in run.records) else \
            "unsat" if verdicts and all(v == "proven" for v in verdicts) else "unknown"
        notes = [f"{len(verdicts)} record(s): {', '.join(sorted(set(verdicts)))}"]
    except Exception as err:
        result, notes = "error", [f"{type(err).__name__}: {err}"]
    return {"benchmark": bench, "onnx": Path(onnx_path).name, "vnnlib": Path(vnnlib_path).name, "result": result,
            "seconds": round(time.perf_counter() - started, 2), "timeout": None, "late_result": None,
            "notes": notes}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--timeout-scale", type=float, default=1.0)
    ap.add_argument("--only", default=None)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1,
                    help="threads per instance (torch's, and MILPs at once); VNN-COMP gives one instance the machine")
    ap.add_argument("--official", action="store_true", help="each instance's VNN-COMP timeout")
    ap.add_argument("--cap", type=float, default=None,
                    help="at most this many seconds per instance (with --official: a lower bound of its result)")
    ap.add_argument("--pick", default=None, help="only these instances: comma-separated ONNX:VNNLIB file names")
    ap.add_argument("--rerun-unsolved", default=None, help="keep this file's sat/unsat answers, rerun the rest")
    ap.add_argument("--via", choices=["runner", "check"], default="runner",
                    help="the runner (solve, timeouts) or `nnspec check` with default options")
    args = ap.parse_args()
    root = data_root()
    if root is None:
        raise SystemExit("no ../shared/data: set NNSPEC_DATA")
    base = root / "vnncomp2022"
    truth = {}
    for row in csv.DictReader(open(root / "ground_truth.csv")):
        truth[(row["benchmark"].split("/")[-1], Path(row["onnx"]).name, Path(row["vnnlib"]).name)] = row["verdict"]
    jobs = []
    for bench in TIMEOUTS:
        if args.only and bench != args.only:
            continue
        rows = [r for r in csv.reader(open(base / bench / "instances.csv")) if r]
        if args.limit:
            rows = rows[:: max(1, len(rows) // args.limit)][: args.limit]
        if args.pick:
            wanted = {tuple(p.split(":")) for p in args.pick.split(",")}
            rows = [r for r in rows if (Path(r[0].strip()).name, Path(r[1].strip()).name) in wanted]
        for r in rows:
            timeout = float(r[2]) if args.official else TIMEOUTS[bench]
            if args.cap:
                timeout = min(timeout, args.cap)
            jobs.append((bench, str(base / bench / r[0].strip()), str(base / bench / r[1].strip()),
                         timeout * args.timeout_scale, args.threads))
    kept = {}
    if args.rerun_unsolved:
        for line in open(args.rerun_unsolved):
            rec = json.loads(line)
            if rec["result"] in ("sat", "unsat"):
                kept[(rec["benchmark"], rec["onnx"], rec["vnnlib"])] = dict(rec, **{"from": args.rerun_unsolved})
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    records = [kept[k] for k in kept if any((j[0], Path(j[1]).name, Path(j[2]).name) == k for j in jobs)]
    jobs = [j for j in jobs if (j[0], Path(j[1]).name, Path(j[2]).name) not in kept]
    name = f"vnncomp{'_check' if args.via == 'check' else ''}{'_official' if args.official else ''}" \
           f"{'_cap%g' % args.cap if args.cap else ''}{'_' + args.only if args.only else ''}.jsonl"
    # workers that may start processes of their own (branch and bound's MILPs); a Pool's may not
    with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool, open(out / name, "w") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
        work = [pool.submit(_one_check if args.via == "check" else _one, job) for job in jobs]
        for rec in (future.result() for future in as_completed(work)):
            rec["truth"] = truth.get((rec["benchmark"], rec["onnx"], rec["vnnlib"]), "?")
            records.append(rec)
            f.write(json.dumps(rec) + "\n")
            f.flush()
    print("| benchmark | instances | sat (truth sat) | unsat (truth unsat) | unknown/timeout | errors | wrong | "
          "median s |")
    print("|---|---|---|---|---|---|---|---|")
    for bench in TIMEOUTS:
        rs = [r for r in records if r["benchmark"] == bench]
        if not rs:
            continue
        c = Counter(r["result"] for r in rs)
        t = Counter(r["truth"] for r in rs)
        wrong = sum(1 for r in rs if (r["result"], r["truth"]) in (("sat", "unsat"), ("unsat", "sat"))
                    or (r.get("late_result"), r["truth"]) in (("sat", "unsat"), ("unsat", "sat")))
        secs = sorted(r["seconds"] for r in rs)
        print(f"| {bench} | {len(rs)} | {c['sat']} ({t['sat']}) | {c['unsat']} ({t['unsat']}) | "
              f"{c['unknown'] + c['timeout']} | {c['error']} | {wrong} | {secs[len(secs) // 2]:.1f} |")
    for r in records:
        if r["result"] == "error" or (r["result"], r["truth"]) in (("sat", "unsat"), ("unsat", "sat")):
            print("!!", r)


if __name__ == "__main__":
    main()
