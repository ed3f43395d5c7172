"""Problems solved several at once in forked processes, for solvers that run one thread each and
cannot be stopped from outside (HiGHS): a process can be. Used by branch and bound's MILP stage
(``bounds.bab.milp_stage._solve_all``) and the LP relaxations of ``bounds.hull.refine_bounds``.

Where there is one worker, no ``fork`` (not Linux), or the caller is itself a daemon process (a
pool's worker, which may not have children), every problem is solved in this process, in order.

A caller whose problems can be divided while they run (branch and bound's searches) lets its
processes see the workers left idle (``share_idle``, ``claim_idle``): a process that claims one
hands back the parts of its problem, and the caller appends them to ``problems``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from multiprocessing.connection import wait

# while ``solve_all(share_idle=True)`` runs: (the pid of its process, a shared count of the
# workers it has no problem for), which its forked processes inherit (``claim_idle``)
_IDLE: tuple | None = None


def claim_idle(most: int) -> int:
    """In a process of ``solve_all(share_idle=True)``: how many of the workers then idle (at most
    ``most``) this process takes, to hand them parts of its problem; 0 anywhere else."""
    idle = _IDLE
    if idle is None or idle[0] == os.getpid() or most <= 0 or idle[1].value <= 0:
        return 0
    with idle[1].get_lock():
        taken = min(most, idle[1].value)
        idle[1].value -= taken
    return taken


def solve_all(fn, problems: list, deadline: float, workers: int, share_idle: bool = False):
    """(index, ``fn(*problem, seconds left to the deadline)``) for the problems in order; with
    ``workers`` > 1 up to that many at once in forked processes, results as they come (a problem
    not started by the deadline is skipped; one running then is waited for, at most 5 s). A result
    is None where a process died without one (killed for memory). An exception in ``fn`` is
    raised here (as a RuntimeError naming it, from a process). A generator: closing it kills the
    processes still running, so a caller stops at the first result it does not want. Problems
    the caller appends to ``problems`` while it iterates are solved too. ``share_idle``: the
    processes see how many workers have no problem left to start (``claim_idle``), and one
    problem alone goes to a process as well (a part of it may go to another)."""
    global _IDLE

    if workers <= 1 or (len(problems) <= 1 and not share_idle) or "fork" not in mp.get_all_start_methods() or \
            mp.current_process().daemon:
        k = 0
        while k < len(problems):
            left = deadline - time.perf_counter()
            if left <= 0:
                return
            yield k, fn(*problems[k], left)
            k += 1
        return
    ctx = mp.get_context("fork")
    running: dict = {}  # receiving end -> (index, process)
    queue = list(range(len(problems)))
    known = len(problems)
    previous = _IDLE
    idle = ctx.Value("i", 0) if share_idle else None
    if idle is not None:
        _IDLE = (os.getpid(), idle)
    try:
        while True:
            queue.extend(range(known, len(problems)))  # the caller's additions
            known = len(problems)
            if not (queue or running):
                break
            while queue and len(running) < workers:
                left = deadline - time.perf_counter()
                if left <= 0:  # the problems not started by the deadline are skipped; those running,
                    queue.clear()  # each within its time limit, are still collected
                    break
                k = queue.pop(0)
                receive, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_worker, args=(send, fn, problems[k], left), daemon=True)
                try:
                    proc.start()
                except OSError:  # no process to be had (memory, a process limit): this one here
                    receive.close()
                    send.close()
                    yield k, fn(*problems[k], left)
                    continue
                send.close()
                running[receive] = (k, proc)
            if not running:  # every start refused: solved here already
                continue
            if idle is not None:  # the workers without a problem: the running ones may claim them
                idle.value = 0 if queue else workers - len(running)
            ready = wait(list(running), timeout=max(0.0, deadline - time.perf_counter()) + 5.0)
            if not ready:
                return
            for conn in ready:
                k, proc = running.pop(conn)
                try:
                    status, result = conn.recv()
                except EOFError:  # the process died (killed for memory): no result
                    status, result = "ok", None
                conn.close()
                proc.join()
                if status == "error":  # the solver raised: as it would in this process
                    raise RuntimeError(f"{getattr(fn, '__name__', fn)}, problem {k}: {result}")
                yield k, result
    finally:
        if idle is not None:
            _IDLE = previous
        for conn, (_, proc) in running.items():
            proc.kill()
            proc.join()
            conn.close()


def _worker(send, fn, problem, time_limit: float) -> None:
    try:  # Linux: die with the parent, even one that ends by os._exit (the VNN-COMP watchdog)
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - elsewhere its time limit ends it
        pass
    try:
        result = fn(*problem, time_limit)
    except Exception as error:  # noqa: BLE001 - handed to the parent, which raises it
        send.send(("error", f"{type(error).__name__}: {error}"))
    else:
        send.send(("ok", result))
    send.close()
