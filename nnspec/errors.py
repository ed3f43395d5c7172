"""One exception hierarchy for nnspec; each class knows its exit code.

Exit codes (also the CLI's): 0 all properties pass, 1 some property failed, 2 bad input or usage,
3 internal error, 130 interrupted. Everything a user can get wrong is an ``InputError`` and prints
as one line (plus, for spec errors, the source line and a caret); nothing else reaches the user
as a traceback unless it is a genuine internal error.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from enum import IntEnum
from typing import Iterable, Sequence

from nnspec.span import Span


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    INTERNAL = 3
    INTERRUPTED = 130


class NnspecError(Exception):
    """Base class. ``exit_code`` says how the CLI ends when this escapes a run."""

    exit_code = ExitCode.INTERNAL

    def one_line(self) -> str:
        return f"error: {self}"


class InputError(NnspecError):
    """Anything the user supplied is wrong: a spec, a model, data, an option."""

    exit_code = ExitCode.USAGE


class UsageError(InputError):
    """Bad command-line usage (no spec found, unknown option value, ...)."""


class ModelError(InputError):
    """A model file that cannot be loaded, converted or evaluated."""


class DataError(InputError):
    """An input set, label file or reference input that cannot be read or does not fit."""


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One positioned complaint about a spec."""

    span: Span
    message: str
    hint: str | None = None

    def headline(self) -> str:
        text = f"{self.span}: error: {self.message}"
        return f"{text} ({self.hint})" if self.hint else text


class SpecError(InputError):
    """One or more positioned errors in spec files; all errors of a file are reported together."""

    def __init__(self, diagnostics: Sequence[Diagnostic] | Diagnostic):
        if isinstance(diagnostics, Diagnostic):
            diagnostics = [diagnostics]
        self.diagnostics: tuple[Diagnostic, ...] = tuple(diagnostics)
        super().__init__("; ".join(d.headline() for d in self.diagnostics))

    @classmethod
    def at(cls, span: Span, message: str, hint: str | None = None) -> "SpecError":
        return cls(Diagnostic(span, message, hint))

    def one_line(self) -> str:
        return self.diagnostics[0].headline()


class BudgetExhausted(NnspecError):
    """A query or time budget ran out; solvers catch it and stop with a typed reason."""

    exit_code = ExitCode.INTERNAL

    def __init__(self, which: str):
        self.which = which
        super().__init__(f"{which} budget exhausted")


def suggest(name: str, choices: Iterable[str]) -> str | None:
    """A "did you mean" hint for a misspelt name, or None."""
    close = difflib.get_close_matches(name, sorted(set(choices)), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None
