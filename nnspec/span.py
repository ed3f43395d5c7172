"""Source positions that travel from the spec text to the report."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class Span:
    """A region of a spec file; lines and columns are 1-based, end_column is exclusive."""

    file: str
    line: int
    column: int
    end_line: int
    end_column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"

    @classmethod
    def point(cls, file: str, line: int = 1, column: int = 1) -> "Span":
        return cls(file, line, column, line, column + 1)

    @classmethod
    def unknown(cls, file: str = "<command line>") -> "Span":
        return cls(file, 0, 0, 0, 0)
