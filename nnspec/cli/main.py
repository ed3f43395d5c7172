"""`nnspec` commands. Thin: each parses options, calls one library function, prints.

Exit codes are decided here and only here (see ``nnspec.errors.ExitCode``): 0 all pass, 1 some
property failed, 2 bad input or usage, 3 internal error, 130 interrupted. Input errors print as one
line (spec errors also show the source line and a caret); tracebacks only for internal errors,
and only with NNSPEC_DEBUG=1.
"""

from __future__ import annotations

import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from nnspec import __version__
from nnspec.cli.interop import export_app, import_app, vnncomp_app
from nnspec.cli.options import check_device, check_output, overrides, write_reports
from nnspec.errors import DataError, ExitCode, InputError, NnspecError, SpecError, UsageError
from nnspec.text import plain, printable

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Safety specs as code for neural networks.")
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


@app.command()
def check(
    paths: List[str] = typer.Argument(..., help="spec files or folders (searched for *.nnspec)"),
    model: List[str] = typer.Option([], "--model", "-m", help="model file; overrides the spec's; repeat to compare"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write results JSON (and a .jsonl as tasks finish)"),
    html: Optional[Path] = typer.Option(None, "--html", help="write the self-contained HTML report"),
    junit: Optional[Path] = typer.Option(None, "--junit", help="write JUnit XML for CI"),
    sarif: Optional[Path] = typer.Option(None, "--sarif", help="write SARIF 2.1.0 (code-scanning annotations "
                                         "on the failing spec lines)"),
    baseline: Optional[Path] = typer.Option(None, "--baseline", help="an earlier run's results .json: a check "
                                            "that lost its proof, whose lower bound or estimate fell, or that is "
                                            "newly violated is a regression and fails"),
    tolerance: float = typer.Option(0.05, "--regression-tolerance", help="relative drop of a lower bound or "
                                    "estimate that counts as a regression"),
    seed: Optional[int] = typer.Option(None, "--seed", help="seed for every solver (default: the spec's, else 0)"),
    budget: Optional[int] = typer.Option(None, "--budget", help="model queries per input for every property; overrides the spec's budgets"),
    bound_time: Optional[float] = typer.Option(None, "--bound-time", help="seconds of proof per input for every "
                                               "property (bound=bab, bound=milp, and the default's branch and "
                                               "bound; 0: the default stops at CROWN); overrides the spec's"),
    set_: List[str] = typer.Option([], "--set", help="override a spec 'param': --set eps=0.05"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N"),
    float64: bool = typer.Option(False, "--float64", help="evaluate the network in float64"),
    require_proven: bool = typer.Option(False, "--require-proven", help="'no violation found' is not enough"),
    cross_check: Optional[bool] = typer.Option(None, "--cross-check/--no-cross-check",
                                               help="confirm witnesses of ONNX models on onnxruntime too "
                                               "(default: on where onnxruntime loads the model)"),
    strict: bool = typer.Option(False, "--strict", help="warnings about the inputs (e.g. a low clean accuracy) "
                                "stop the run with exit 2"),
    jobs: int = typer.Option(1, "--jobs", "-j", help="tasks run in N local worker processes"),
    threads: Optional[int] = typer.Option(None, "--threads", help="intra-op threads per worker (default: the "
                                          "cores divided among the workers; 1 on a busy machine)"),
    executor: str = typer.Option("inline", "--executor", help="inline (this process, or a process pool with "
                                 "--jobs) or ray"),
    address: Optional[str] = typer.Option(None, "--address", help="with --executor ray: the cluster's address "
                                          "(default: start a local one)"),
    engine: str = typer.Option("auto", "--engine", help="evaluation backend for ONNX models: auto (onnxruntime "
                               "where it runs the graph), ort or torch; gradients and bounds always use torch"),
    cache_dir: Optional[Path] = typer.Option(None, "--cache", help="result cache folder (default: .nnspec-cache "
                                             "in a project folder, or $NNSPEC_CACHE)"),
    no_cache: bool = typer.Option(False, "--no-cache", help="run every task, read and write no cached result"),
) -> None:
    """Check specs against a model; exit 0 when every property passes, 1 when one fails, 3 when a
    task hit an internal error (the others still ran)."""
    from nnspec.pipeline import CheckOptions, check as run_check

    if seed is not None and seed < 0:
        raise UsageError(f"--seed {seed}: must be >= 0")
    if budget is not None and budget < 10:
        raise UsageError(f"--budget {budget}: must be at least 10 queries")
    if bound_time is not None and not 0 <= bound_time < math.inf:
        raise UsageError(f"--bound-time {bound_time}: must be a number of seconds >= 0")
    check_device(device)
    for path, flag in ((json_out, "--json"), (html, "--html"), (junit, "--junit"), (sarif, "--sarif")):
        check_output(path, flag)
    if baseline is not None and json_out is not None and baseline.resolve() == json_out.resolve():
        raise UsageError(f"--baseline {baseline} and --json name the same file: the run would overwrite its "
                         "baseline; write the new results elsewhere")
    if jobs < 1:
        raise UsageError(f"--jobs {jobs}: must be at least 1")
    if threads is not None and threads < 1:
        raise UsageError(f"--threads {threads}: must be at least 1")
    if executor not in ("inline", "process", "ray"):
        raise UsageError(f"--executor {executor!r}: use inline, process or ray")
    if engine not in ("auto", "ort", "torch"):
        raise UsageError(f"--engine {engine!r}: use auto, ort or torch")
    if address is not None and executor != "ray":
        raise UsageError("--address needs --executor ray")
    if cache_dir is not None and no_cache:
        raise UsageError("--cache and --no-cache contradict each other")
    if cache_dir is not None and cache_dir.exists() and not cache_dir.is_dir():
        raise UsageError(f"--cache {cache_dir}: is a file, not a folder")
    options = CheckOptions(models=list(model), overrides=overrides(set_), seed=seed, budget=budget,
                           bound_time=bound_time,
                           device=device, float64=float64, require_proven=require_proven,
                           cross_check=cross_check, json_path=json_out, strict=strict, jobs=jobs,
                           threads=threads, executor=executor, address=address, engine=engine,
                           cache=not no_cache, cache_dir=cache_dir, baseline=baseline,
                           regression_tolerance=tolerance)
    from nnspec.report.progress import progress_for

    console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    result, pending = None, None
    with progress_for(console) as progress:
        try:
            result = run_check(paths, options, on_task=progress.start, on_plan=progress.plan,
                               on_done=progress.finish)
        except BaseException as err:  # reports are still written from what finished
            result, pending = getattr(err, "partial_result", None), err
    if result is not None:
        try:
            write_reports(result, html, junit, sarif)
            from nnspec.report.terminal import print_summary

            print_summary(console, result)
            for path, what in ((json_out, "results"), (html, "report"), (junit, "junit"), (sarif, "sarif")):
                if path is not None:
                    console.print(f"{what}: {path}")
        except KeyboardInterrupt as err:  # Ctrl-C after the JSON was written: it must say so too
            if not result.interrupted:
                result.interrupted = True
                if json_out is not None:
                    from nnspec.results.store import write_json

                    write_json(json_out, result)
            pending = err
    if pending is not None:
        raise pending
    raise typer.Exit(int(result.exit_code()))


@app.command()
def explain(
    file: Path = typer.Argument(..., help="a spec file"),
    set_: List[str] = typer.Option([], "--set", help="override a spec 'param'"),
) -> None:
    """Print what each property compiles to: expression, region, inputs, requirements, solver plan."""
    from nnspec.pipeline import collect, load_specs
    from nnspec.planning.explain import explain as render
    from nnspec.planning.plan import plan

    modules = load_specs(collect([str(file)]), overrides(set_))
    typer.echo(render(modules, plan(modules)), nl=False)


@app.command()
def fmt(
    files: List[Path] = typer.Argument(..., help="spec files to rewrite in canonical layout"),
    check_only: bool = typer.Option(False, "--check", help="only report files that would change (exit 1)"),
) -> None:
    """Rewrite specs in canonical layout (comments kept; idempotent)."""
    from nnspec.results.store import write_atomic
    from nnspec.syntax.format import format_spec
    from nnspec.syntax.parser import parse_file

    changed = []
    for f in files:
        spec = parse_file(f)
        text = format_spec(spec)
        if text != spec.source:
            changed.append(f)
            if not check_only:
                write_atomic(f, text)
    for f in changed:
        typer.echo(f"{'would reformat' if check_only else 'reformatted'} {f}")
    if check_only and changed:
        raise typer.Exit(int(ExitCode.FAILED))


@app.command()
def inspect(
    model: Path = typer.Argument(..., help="a model file (.onnx, .pt, .pt2)"),
    cross_check: bool = typer.Option(False, "--cross-check", help="compare with onnxruntime on random inputs"),
    lo: float = typer.Option(0.0, "--low", help="domain low for the cross-check inputs"),
    hi: float = typer.Option(1.0, "--high", help="domain high for the cross-check inputs"),
) -> None:
    """Describe a model: input shape, outputs, operators, batching; exit 2 if it is unusable."""
    import torch

    from nnspec.models.loading import load_model

    m = load_model(model)
    # one evaluation at the middle of the domain: NaN weights or a broken graph show here, not later
    m(torch.full((1,) + tuple(m.input_shape), (lo + hi) / 2))
    typer.echo(f"model:      {m.name}\nsha256:     {m.sha256}\ninput:      {tuple(m.input_shape)} "
               f"({m.n_inputs} values)\noutputs:    {m.n_outputs}\nbatching:   {m.batching}")
    if m.operators:
        ops = ", ".join(f"{k} x{v}" for k, v in sorted(m.operators.items()))
        typer.echo(f"operators:  {ops}")
    from nnspec.bounds import support

    typer.echo(f"bounds:     {support(m)}")
    if cross_check:
        from nnspec.models.crosscheck import max_difference

        diff = max_difference(model, m, torch.full((m.n_inputs,), lo, dtype=torch.float64),
                              torch.full((m.n_inputs,), hi, dtype=torch.float64))
        typer.echo(f"onnxruntime: max |difference| {diff:.3g} on 16 random inputs in [{lo:g}, {hi:g}]")


@app.command()
def report(
    results: Path = typer.Argument(..., help="a results .json (or the .jsonl of an interrupted run)"),
    html: Optional[Path] = typer.Option(None, "--html", help="write the HTML report here"),
    junit: Optional[Path] = typer.Option(None, "--junit", help="write JUnit XML here"),
    sarif: Optional[Path] = typer.Option(None, "--sarif", help="write SARIF 2.1.0 here"),
) -> None:
    """Rebuild reports from a results file."""
    from nnspec.results.store import load_results

    if html is None and junit is None and sarif is None:
        raise UsageError("nothing to write: give --html, --junit and/or --sarif")
    for path, flag in ((html, "--html"), (junit, "--junit"), (sarif, "--sarif")):
        check_output(path, flag)
    result = load_results(results)
    if result.meta.get("dropped_lines"):
        typer.echo(f"note: {results}: dropped a torn last line (the run that wrote it was stopped); "
                   f"{len(result.records)} complete records kept", err=True)
    write_reports(result, html, junit, sarif)
    for path in (html, junit, sarif):
        if path is not None:
            typer.echo(f"wrote {path}")


@app.command()
def diff(
    old: Path = typer.Argument(..., help="the baseline run's results .json (or .jsonl)"),
    new: Path = typer.Argument(..., help="the new run's results .json (or .jsonl)"),
    tolerance: float = typer.Option(0.05, "--regression-tolerance", help="relative drop of a lower bound or "
                                    "estimate that counts as a regression"),
) -> None:
    """Regressions of NEW against OLD, nothing run: exit 1 when there is one, 0 otherwise."""
    from nnspec.results.baseline import check_tolerance, diff as compare
    from nnspec.results.store import load_results

    check_tolerance(tolerance)
    base = compare(load_results(old), load_results(new), str(old), tolerance)
    summary = base.summary()
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    for reg in base.regressions:
        line = f"{reg.spec}:{reg.line}: {reg.property} on {reg.input_id} ({reg.model}): {reg.message}"
        console.print(f"[red]REGRESSION[/] {plain(line)}", highlight=False)
    counts = ", ".join(f"{v} {k}" for k, v in summary["counts"].items() if v)
    n = len(base.regressions)
    console.print(f"{n} regression{'s' if n != 1 else ''}{' (' + counts + ')' if counts else ''} in "
                  f"{summary['compared']} compared checks (tolerance {100 * tolerance:g}%); "
                  f"{summary['new_checks']} new, {summary['missing']} only in {old.name}", highlight=False)
    raise typer.Exit(int(ExitCode.FAILED) if n else 0)


@app.command()
def lint(
    paths: List[str] = typer.Argument(..., help="spec files or folders (searched for *.nnspec)"),
    set_: List[str] = typer.Option([], "--set", help="override a spec 'param'"),
) -> None:
    """Parse, lower and plan every spec without loading a model or data (fast: for pre-commit)."""
    from nnspec.pipeline import collect, load_specs
    from nnspec.planning.plan import plan

    files = collect(paths)
    modules = load_specs(files, overrides(set_))
    tasks = plan(modules).tasks
    missing = []
    for m in modules:  # the files a run would read: named in the spec, so the error points at the spec
        named = [(m.model.path, m.model.span, "model")] if m.model is not None else []
        for s in m.input_sets:
            named.append((s.path, s.span, "input"))
            if s.labels.kind == "file":
                named.append((str(s.labels.value), s.labels.span, "label"))
        named += [(p.reference_file, p.span, "reference") for p in m.properties if p.reference_file]
        missing += [f"{span}: {what} file not found: {path}" for path, span, what in named if not Path(path).exists()]
    if missing:
        for line in missing[:-1]:
            typer.echo(f"error: {printable(line)}", err=True)
        raise DataError(missing[-1])
    n_props = sum(len(m.properties) for m in modules)
    typer.echo(f"{len(files)} spec file{'s' if len(files) != 1 else ''}, {n_props} "
               f"propert{'ies' if n_props != 1 else 'y'}, {len(tasks)} task{'s' if len(tasks) != 1 else ''}: ok")


server_app = typer.Typer(no_args_is_help=True, help="A warm server that runs this user's nnspec commands in forks "
                         "of one process that has imported torch (start-up ~0.3 s instead of ~3 s).")
app.add_typer(import_app, name="import")
app.add_typer(export_app, name="export")
app.add_typer(vnncomp_app, name="vnncomp")
app.add_typer(server_app, name="server")


@server_app.command("start")
def server_start(idle: float = typer.Option(1800.0, "--idle", help="exit after this many seconds without a command")):
    """Start the server in the background; later `nnspec` commands run in it."""
    from nnspec.cli import server

    if idle <= 0:
        raise UsageError(f"--idle {idle:g}: must be positive")
    try:
        path = server.start(idle)
    except (OSError, TimeoutError) as err:
        raise UsageError(f"server: {err}") from None
    typer.echo(f"nnspec server listening at {path} (stops after {idle:g} s idle, or `nnspec server stop`)")


@server_app.command("stop")
def server_stop():
    """Stop the server of this version of nnspec."""
    from nnspec.cli import server

    typer.echo("stopped" if server.stop() else "no server was running")


@server_app.command("status")
def server_status():
    """Whether a server for this version of nnspec is listening."""
    from nnspec.cli import server

    path, alive, pid = server.status()
    typer.echo(f"listening at {path} (process {pid})" if alive else f"not running (would listen at {path})")


@server_app.command("run", hidden=True)
def server_run(idle: float = typer.Option(1800.0, "--idle")):
    """The server itself, in the foreground (`start` runs this in the background)."""
    from nnspec.cli import server

    server.serve(idle)


@app.command()
def version() -> None:
    """Print the nnspec version."""
    typer.echo(__version__)


def _print_error(err: NnspecError) -> None:
    if isinstance(err, SpecError):
        from nnspec.syntax.diagnostics import render

        sources: dict[str, str | None] = {}
        for diag in err.diagnostics:
            f = diag.span.file
            if f not in sources:
                try:
                    sources[f] = Path(f).read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError):
                    sources[f] = None
            err_console.print(printable(render(diag, sources[f])), markup=False)
        return
    err_console.print(printable(err.one_line(), newlines=False), markup=False)


def main(argv: list[str] | None = None, started: float | None = None) -> int:
    """Entry point; returns (and, as a script, exits with) the exit code. ``started``: when the
    command started (``time.perf_counter``), where that was before this call (a server's client)."""
    if started is None:
        started = time.perf_counter()
    try:  # the commands read the start from their context (the VNN-COMP timeout counts start-up too)
        returned = app(args=argv, prog_name="nnspec", standalone_mode=False, obj={"started": started})
        # without standalone mode, typer returns the code of a raised typer.Exit
        code = returned if isinstance(returned, int) else ExitCode.OK
        if code == ExitCode.INTERRUPTED:  # typer returns Ctrl-C as 130 without a word
            err_console.print("interrupted; finished results were kept", markup=False)
    except typer.Exit as done:
        code = done.exit_code
        if code == ExitCode.INTERRUPTED:
            err_console.print("interrupted; finished results were kept", markup=False)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("interrupted; finished results were kept", markup=False)
        code = ExitCode.INTERRUPTED
    except InputError as err:
        _print_error(err)
        code = err.exit_code
    except NnspecError as err:
        err_console.print(printable(f"internal error: {err}", newlines=False), markup=False)
        code = ExitCode.INTERNAL
    except Exception as err:
        if _is_cli_usage_error(err):  # typer's (vendored click's) parsing errors
            err_console.print(printable(f"error: {err.format_message()}", newlines=False), markup=False)
            return int(ExitCode.USAGE)
        # a bug in nnspec: say so, show the traceback only on request
        err_console.print(printable(f"internal error: {type(err).__name__}: {err} "
                                    "(set NNSPEC_DEBUG=1 for the traceback)", newlines=False), markup=False)
        if os.environ.get("NNSPEC_DEBUG"):
            traceback.print_exc()
        code = ExitCode.INTERNAL
    return int(code)


def _is_cli_usage_error(err: Exception) -> bool:
    module = type(err).__module__
    return hasattr(err, "format_message") and (module.startswith("typer") or module.startswith("click"))


def run() -> None:  # pragma: no cover - the console script
    from nnspec.cli.server import entry

    entry()
