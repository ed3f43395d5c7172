"""The command line: a thin typer app; diagnostics printing and exit codes live in ``main``."""

from nnspec.cli.main import main, run

__all__ = ["main", "run"]
