"""Progress while `nnspec check` runs: a bar per spec file on a terminal (tasks done, model
queries per second, time left), one plain line per task otherwise (CI logs)."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from nnspec.text import plain


class PlainProgress:
    def __init__(self, console: Console):
        self.console = console
        self.total = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def plan(self, tasks) -> None:
        self.total = len(tasks)

    def start(self, task, done: int, total: int) -> None:
        prop = task.prop
        where = Path(task.inputs.path).name if task.module.input_sets else "inputs"
        self.console.print(f"\\[{done + 1}/{total}] " + plain(f"{task.module.file}:{prop.span.line} {prop.name} "
                                                           f"on {where} ({task.backend})"),
                           highlight=False, soft_wrap=True)

    def finish(self, task, records) -> None:
        pass


class BarProgress:
    def __init__(self, console: Console):
        self.bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[rate]} queries/s"), TimeRemainingColumn(),
                             console=console, transient=False)
        self.ids: dict[str, int] = {}
        self.queries = 0
        self.started = time.perf_counter()

    def __enter__(self):
        self.bars.__enter__()
        return self

    def __exit__(self, *exc):
        return self.bars.__exit__(*exc)

    def plan(self, tasks) -> None:
        for spec, count in Counter(t.module.file for t in tasks).items():
            self.ids[spec] = self.bars.add_task(plain(spec), total=count, rate="-")

    def start(self, task, done: int, total: int) -> None:
        self.bars.update(self.ids[task.module.file], description=plain(f"{task.module.file}: {task.prop.name}"))

    def finish(self, task, records) -> None:
        self.queries += sum(r.queries for r in records)
        rate = self.queries / max(time.perf_counter() - self.started, 1e-9)
        for tid in self.ids.values():
            self.bars.update(tid, rate=f"{rate:,.0f}")
        self.bars.update(self.ids[task.module.file], advance=1, description=plain(task.module.file))


def progress_for(console: Console):
    return BarProgress(console) if console.is_terminal else PlainProgress(console)
