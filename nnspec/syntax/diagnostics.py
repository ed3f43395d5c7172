"""Rendering of positioned errors: `file:line:col: error: message`, the line, a caret."""

from __future__ import annotations

from nnspec.errors import Diagnostic


def render(diag: Diagnostic, source: str | None) -> str:
    """The headline, then the source line and a ^^^ under the span when the text is known."""
    out = [diag.headline()]
    span = diag.span
    if source is None or span.line <= 0:
        return out[0]
    lines = source.split("\n")
    if span.line > len(lines):
        return out[0]
    text = lines[span.line - 1].replace("\t", " ")
    start = max(span.column - 1, 0)
    end = span.end_column - 1 if span.end_line == span.line else len(text)
    width = max(end - start, 1)
    out.append(f"    {text}")
    out.append("    " + " " * start + "^" * width)
    return "\n".join(out)
