"""Problems solved several at once in forked processes, for solvers that run one thread each and
cannot be stopped from outside (HiGHS): a process can be. Used by branch and bound's MILP stage
(``bounds.bab._solve_all``) and the LP relaxations of ``bounds.hull.refine_bounds``.

Where there is one worker, no ``fork`` (not Linux), or the caller is itself a daemon process (a
pool's worker, which may not have children), every problem is solved in this process, in order.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from multiprocessing.connection import wait


def solve_all(fn, problems: list, deadline: float, workers: int):
    """(index, ``fn(*problem, seconds left to the deadline)``) for the problems in order; with
    ``workers`` > 1 up to that many at once in forked processes, results as they come (a problem
    not started by the deadline is skipped; one running then is waited for, at most 5 s). A result
    is None where a process died without one (killed for memory). An exception in ``fn`` is
    raised here (as a RuntimeError naming it, from a process). A generator: closing it kills the
    processes still running, so a caller stops at the first result it does not want."""
    if workers <= 1 or len(problems) <= 1 or "fork" not in mp.get_all_start_methods() or mp.current_process().daemon:
        for k, problem in enumerate(problems):
            left = deadline - time.perf_counter()
            if left <= 0:
                return
            yield k, fn(*problem, left)
        return
    ctx = mp.get_context("fork")
    running: dict = {}  # receiving end -> (index, process)
    queue = list(range(len(problems)))
    try:
        while queue or running:
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
