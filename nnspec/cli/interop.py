"""The commands that speak other tools' formats: ``nnspec import vnnlib``, ``nnspec export vnnlib``
and the VNN-COMP runner's ``nnspec vnncomp prepare|run``."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from nnspec.cli.options import check_output
from nnspec.errors import UsageError
from nnspec.text import printable

err_console = Console(stderr=True, highlight=False, soft_wrap=True)
_IMPORTED = time.perf_counter()  # a command's start where ``main`` did not pass one

import_app = typer.Typer(no_args_is_help=True, help="Import properties written for other tools.")
export_app = typer.Typer(no_args_is_help=True, help="Export properties for other tools.")
vnncomp_app = typer.Typer(no_args_is_help=True, help="The VNN-COMP runner (prepare_instance.sh / run_instance.sh).")


@import_app.command("vnnlib")
def import_vnnlib(
    query: Path = typer.Argument(..., help="a .vnnlib file (VNN-LIB 1.0 or 2.0)"),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="the network the query is about (checked "
                                         "against its sizes; default: from an instances.csv beside the query)"),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="write the spec here (large boxes go to "
                                       "OUT.boxN.npz beside it); default: print it"),
) -> None:
    """Write a readable nnspec spec for a VNN-LIB query."""
    import numpy as np

    from nnspec.interop.vnnlib import check_against_model, model_for_query, property_name, read_query
    from nnspec.interop.writing import to_spec

    q = read_query(query)
    model = model or model_for_query(query)
    if model is not None:
        if not model.is_file():
            raise UsageError(f"--model {model}: no such file")
        check_against_model(q, model)
    box_file = None
    if out is not None:
        check_output(out, "-o")

        def box_file(k, lower, upper):
            path = out.with_name(f"{out.stem}.box{k + 1}.npz")
            np.savez(path, lower=lower, upper=upper)
            return path.name

    rel = None
    if model is not None:
        rel = os.path.relpath(model.resolve(), (out.parent if out else Path.cwd()).resolve())
    text = to_spec(q, rel, name=property_name(query), box_file=box_file)
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {out}")


@export_app.command("vnnlib")
def export_vnnlib(
    specs: List[str] = typer.Argument(..., help="spec files or folders"),
    out: Path = typer.Option(..., "-o", "--out", help="the folder to write the .vnnlib files (and instances.csv) into"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="model file; overrides the spec's"),
    timeout: float = typer.Option(60.0, "--timeout", help="the timeout written into instances.csv"),
) -> None:
    """Write one VNN-LIB query per (property, input) that VNN-LIB can state."""
    from nnspec.interop.export import export

    written, skipped = export(specs, out, model=model, timeout=timeout)
    for line in skipped:
        err_console.print(printable(f"not exported: {line}", newlines=False), markup=False)
    typer.echo(f"wrote {written} quer{'y' if written == 1 else 'ies'} and {out / 'instances.csv'}")


@vnncomp_app.command("prepare")
def vnncomp_prepare(
    category: str = typer.Argument(..., help="the benchmark category (unused: nnspec needs no per-category setup)"),
    onnx_file: Path = typer.Argument(...),
    vnnlib_file: Path = typer.Argument(...),
) -> None:
    """Check that nnspec can run the instance (reads the query, converts the network)."""
    from nnspec.interop.vnnlib import check_against_model, read_query
    from nnspec.models.loading import load_model

    q = read_query(vnnlib_file)
    check_against_model(q, onnx_file)
    load_model(str(onnx_file))
    typer.echo(f"ready: {onnx_file.name} with {vnnlib_file.name} ({len(q.cases)} box(es))")


@vnncomp_app.command("run")
def vnncomp_run(
    ctx: typer.Context,
    category: str = typer.Argument(..., help="the benchmark category"),
    onnx_file: Path = typer.Argument(...),
    vnnlib_file: Path = typer.Argument(...),
    result_file: Path = typer.Argument(..., help="where the answer goes: sat (with the counterexample), unsat, "
                                       "unknown or timeout"),
    timeout: float = typer.Argument(..., help="seconds, start-up included"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Run one VNN-COMP instance and write the answer in the competition's format."""
    from nnspec.interop.vnncomp import solve, write_answer

    if timeout <= 0:
        raise UsageError(f"timeout {timeout:g}: must be positive")
    check_output(result_file, "RESULT_FILE")
    from nnspec.interop.vnncomp import watchdog

    # the competition kills a run at its timeout: past it, the answer is 'timeout', whatever a stage
    # that does not look at the clock (one bound pass on a big net) is still doing
    started = (ctx.obj or {}).get("started", _IMPORTED)  # the timeout counts start-up too
    with watchdog(result_file, started + timeout) as claim:
        answer = solve(onnx_file, vnnlib_file, timeout, started=started, seed=seed)
        if not claim():
            time.sleep(3600)  # the watchdog is writing 'timeout' and ends the process
        write_answer(result_file, answer)
    typer.echo(f"{answer.result} ({answer.seconds:.2f} s)")
