"""Text that reaches a terminal: no control characters from user input.

Spec strings, file names, `--set` values and model names end up in error messages and summaries.
An escape sequence among them could clear the screen, move the cursor or forge a line such as
"all checks passed", so every such text is shown with its control and formatting characters
(C0/C1 controls, bidirectional overrides, line and paragraph separators) written as visible escapes.
"""

from __future__ import annotations

import re

# C0 and C1 controls but newline, DEL, the bidi controls, zero-width and separator characters
_UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")


def _escape(match: re.Match) -> str:
    ch = match.group()
    if ch == "\t":
        return " "
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, newlines: bool = True) -> str:
    """``text`` with every unsafe character shown as an escape (newlines kept when ``newlines``)."""
    text = _UNSAFE.sub(_escape, str(text))
    return text if newlines else text.replace("\n", "\\n")


def plain(text: str) -> str:
    """One line for a rich console: unsafe characters escaped, and rich markup escaped too."""
    from rich.markup import escape

    return escape(printable(text, newlines=False))
