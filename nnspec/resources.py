"""Files shipped beside the code: the grammar and the report templates.

In a wheel they live in ``nnspec/_grammar`` and ``nnspec/_reports`` (mapped there by
pyproject's force-include); in a source checkout they are the repository's top-level
``grammar/`` and ``reports/`` folders, which win because an editable install also leaves a
copy behind that goes stale as soon as the grammar is edited.
"""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_CHECKOUT = _PACKAGE.parent


def _folder(packaged: str, in_checkout: str) -> Path:
    checkout = _CHECKOUT / in_checkout
    if (_CHECKOUT / "pyproject.toml").is_file() and checkout.is_dir():
        return checkout
    return _PACKAGE / packaged


def grammar_path() -> Path:
    return _folder("_grammar", "grammar") / "nnspec.lark"


def reports_dir() -> Path:
    return _folder("_reports", "reports")


def external_data_root() -> Path | None:
    """The external benchmark data (VNN-COMP networks, MNIST, ...), never shipped with nnspec:
    $NNSPEC_DATA, else ../shared/data beside a source checkout; None when absent."""
    env = os.environ.get("NNSPEC_DATA")
    for p in ([Path(env)] if env else []) + [_CHECKOUT.parent / "shared" / "data"]:
        if p.is_dir():
            return p
    return None
