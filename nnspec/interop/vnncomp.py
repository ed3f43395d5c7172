"""The VNN-COMP runner: one instance (network, query, timeout) -> sat / unsat / unknown / timeout.

It runs the same pipeline as ``nnspec check`` on the imported query (one task per box of the
query): the searches first (projected gradient, then MADS), then a proof of the whole box by
branch and bound on the bound engine, each box getting an equal share of what is left of the
timeout (with long timeouts, after a quick round of both at 2% of the timeout). The answer keeps
the rules of every verdict path:

- ``sat`` only with a counterexample that onnxruntime confirms against the query itself (its boxes
  compared as the model reads them, its output constraints in float64 at tolerance 0): the same
  check as the competition's, independent of nnspec's formula code;
- ``unsat`` only when every box was proved by a sound method;
- otherwise ``unknown``, or ``timeout`` when the time ran out.

The timeout counts from the start of the process (``started``), start-up included; the runner
keeps a margin for writing the answer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

RESULTS = ("sat", "unsat", "unknown", "timeout")
QUERIES_PER_SECOND = 50_000  # the searches' query budget per second of a task's share (see solve)
# the quick round (see solve): for timeouts of at least QUICK_MIN_TIMEOUT seconds, QUICK_SHARE of
# the timeout for all tasks together, QUICK_SEARCHES of each task's part for its searches
QUICK_MIN_TIMEOUT = 60.0
QUICK_SHARE = 0.02
QUICK_SEARCHES = 0.2
QUICK_SEED = 7907  # added to the searches' seed in the quick round (round r adds 1009 r)


@dataclass
class Answer:
    result: str
    x: np.ndarray | None = None  # the counterexample, flat, as the model reads it (float32)
    y: np.ndarray | None = None  # onnxruntime's outputs there
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        """The competition's result file: the result, then for sat ((X_0 v) ... (Y_0 v) ...)."""
        if self.result != "sat":
            return self.result + "\n"
        lines = [f"(X_{i} {repr(float(v))})" for i, v in enumerate(self.x)] + \
                [f"(Y_{j} {repr(float(v))})" for j, v in enumerate(self.y)]
        return "sat\n(" + "\n".join(lines) + ")\n"


def margin(timeout: float) -> float:
    """Seconds kept back for writing the answer."""
    return min(2.0, 0.1 * timeout)


def solve(onnx_path: str | Path, vnnlib_path: str | Path, timeout: float, *, started: float | None = None,
          seed: int = 0) -> Answer:
    from nnspec.interop.vnnlib import spec_source
    from nnspec.models.crosscheck import onnxruntime_session
    from nnspec.pipeline import CheckOptions
    from nnspec.runner import Runner, bind_task
    from nnspec.planning.plan import plan
    from nnspec.semantics import lower
    from nnspec.syntax.parser import parse_text

    started = time.perf_counter() if started is None else started
    deadline = started + max(0.5, timeout - margin(timeout))
    onnx_path, vnnlib_path = Path(onnx_path), Path(vnnlib_path)
    query, text = spec_source(vnnlib_path, onnx_path)
    module = lower(parse_text(text, f"{vnnlib_path} (imported)"))
    runner = Runner(CheckOptions(models=[str(onnx_path)]))
    model = runner.model_for(module, str(onnx_path))
    session = onnxruntime_session(str(onnx_path), model)
    tasks = list(plan([module], seed=seed, n_inputs={module.file: model.n_inputs}).tasks)
    notes: list[str] = []
    proven: set[int] = set()

    def attempt(k: int, share: float, searches: float, proof: float, round_no: int, quick: bool = False):
        """Task k's searches for ``searches`` x ``share`` seconds, then branch and bound on its
        box for ``proof`` x ``share``: the confirmed counterexample's answer, or None (the task
        added to ``proven`` where the proof holds)."""
        task = tasks[k]
        opts = task.option_dict()
        # the answer needs one confirmed violation, not the closest one: no refinement toward the
        # centre, and no radius bound below it
        # queries: more than any network here evaluates in the time, so the time limits decide
        # each round's searches restart from points of their own (the quick round's too)
        offset = QUICK_SEED if quick else 1009 * round_no
        opts.update(bound="bab", bound_time=max(0.05, proof * share), time=max(0.05, searches * share), refine=False,
                    bound_violated=False, seed=int(opts.get("seed", seed)) + offset,
                    budget=max(int(opts.get("budget", 0)), int(QUERIES_PER_SECOND * share)))
        run = dataclasses.replace(task, options=tuple(sorted(opts.items())))
        for record, outcome in runner.run_task(run, model, bind_task(run, model)):
            decided = outcome.witness is not None or record.verdict == "proven"
            if (round_no == 0 and not quick) or decided:
                notes.extend(f"{task.prop.name}: {n}" for n in record.notes)
            candidate = None
            if outcome.witness is not None:
                candidate = outcome.witness.x
            elif near_miss(outcome):  # below the searches' witness slack: the query's own check decides
                candidate = outcome.lowest_x
            if candidate is not None:
                x = np.asarray(candidate, dtype=np.float32).reshape(-1)
                y = session(_as_torch(x, model)).double().numpy().reshape(-1)
                if query.violated_by(x, y):
                    if outcome.witness is None:
                        notes.append(f"{task.prop.name}: a near miss of the searches (s = {outcome.min_s:.3g}, "
                                     f"within their witness slack) that onnxruntime confirms against the query")
                    if quick:
                        notes.append("found in the quick round")
                    elif round_no:
                        notes.append(f"found in round {round_no + 1}")
                    return Answer("sat", x, y, time.perf_counter() - started, notes)
                if outcome.witness is not None:
                    notes.append(f"{task.prop.name}: a witness that onnxruntime does not confirm against the query "
                                 f"was dropped")
            if record.verdict == "proven":
                if quick:
                    notes.append(f"{task.prop.name}: proved in the quick round")
                proven.add(k)
        return None

    # with a long timeout, a quick round first: each task's searches and branch and bound for
    # QUICK_SHARE of the timeout. Most instances that are easy either way are decided there, where
    # the first full round would have spent its searches' share (0.05 of the time: 15 s of mnist_fc's
    # 300 s) before any proof started
    if timeout >= QUICK_MIN_TIMEOUT:
        for k in range(len(tasks)):
            left = deadline - time.perf_counter()
            if left <= 0.05:
                return Answer("timeout", seconds=time.perf_counter() - started, notes=notes)
            share = min(left / (len(tasks) - k), QUICK_SHARE * timeout / len(tasks))
            answer = attempt(k, share, QUICK_SEARCHES, 1.0 - QUICK_SEARCHES, 0, quick=True)
            if answer is not None:
                return answer
        if len(proven) == len(tasks):
            return Answer("unsat", seconds=time.perf_counter() - started, notes=notes)
    round_no, first_share = 0, 0.0  # (the first round's share per task: set by its first task)
    # anytime: a first pass shares the time among the tasks; while time is left and some task is
    # undecided, further rounds run them again with new seeds (other restarts of the searches)
    # and longer budgets, until the deadline. Branch and bound starts afresh in every round, so the
    # first round gives it most of its share (0.8): a later round's shorter run cannot prove what
    # the first did not, its searches can still find what the first missed. The searches run first
    # and, with fresh restarts, use all their time: 0.05 of the share in the first round (the
    # proofs wait for it), 0.15 in later ones
    while True:
        open_tasks = [k for k in range(len(tasks)) if k not in proven]
        for j, k in enumerate(open_tasks):
            left = deadline - time.perf_counter()
            if left <= 0.05:
                return Answer("timeout", seconds=time.perf_counter() - started, notes=notes)
            share = left / (len(open_tasks) - j)
            if round_no:
                share = min(share, (2 ** round_no) * first_share)  # rounds grow, the time is shared fairly
            answer = attempt(k, share, 0.05 if round_no == 0 else 0.15, 0.8 if round_no == 0 else 0.6, round_no)
            if answer is not None:
                return answer
            if round_no == 0 and j == 0:
                first_share = share
        if len(proven) == len(tasks):
            return Answer("unsat", seconds=time.perf_counter() - started, notes=notes)
        if deadline - time.perf_counter() <= 0.3:
            return Answer("timeout", seconds=time.perf_counter() - started, notes=notes)
        round_no += 1


def near_miss(outcome) -> bool:
    """Whether an outcome without a witness saw s within the searches' witness slack of 0 (their
    witnesses need s below -slack, so that no other evaluation of the network flips them): a
    near-tangent counterexample that the query's own float32 check may still confirm."""
    from nnspec.backends.quant.tracker import WITNESS_SLACK

    return outcome.witness is None and outcome.lowest_x is not None and outcome.min_s is not None and \
        outcome.min_s < WITNESS_SLACK


def _as_torch(x: np.ndarray, model):
    import torch

    return torch.from_numpy(x.copy()).reshape((1,) + tuple(model.input_shape))


def write_answer(path: str | Path, answer: Answer) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(answer.text(), encoding="utf-8")
    tmp.replace(path)


@contextlib.contextmanager
def watchdog(path: str | Path, deadline: float):
    """At ``deadline`` (a ``time.perf_counter`` value), unless the block has finished: write
    ``timeout`` to ``path`` and end the process at once (exit 0, as the competition's scripts
    expect of a run that answered). Yields a function that claims the answer for the block:
    after it returns True, the watchdog stays silent; False means the watchdog already answered."""
    lock, state = threading.Lock(), {"owner": None}

    def claim(who: str) -> bool:
        with lock:
            if state["owner"] is None:
                state["owner"] = who
            return state["owner"] == who

    def fire() -> None:
        time.sleep(max(0.0, deadline - time.perf_counter()))
        if claim("watchdog"):
            write_answer(path, Answer("timeout", notes=["the timeout was reached"]))
            print("timeout (the time limit was reached)", file=sys.stdout, flush=True)
            os._exit(0)

    threading.Thread(target=fire, name="nnspec-vnncomp-watchdog", daemon=True).start()
    yield lambda: claim("solver")
