"""Checks and conversions of the commands' options, shared by the commands of ``main`` and
``interop``. Each raises ``UsageError`` naming the option and the offending value, before anything
runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from nnspec.errors import UsageError


def overrides(values: list[str]) -> dict:
    if not values:  # (the semantics package imports torch: a run served from the cache needs none)
        return {}
    from nnspec.semantics.values import parse_override

    out = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip().isidentifier():
            raise UsageError(f"--set {item!r}: expected NAME=VALUE")
        try:
            out[name.strip()] = parse_override(value.strip())
        except ValueError as err:
            raise UsageError(f"--set {name.strip()}={err}") from None
    return out


def check_output(path: Optional[Path], flag: str) -> None:
    """Refuse an output path that cannot be written before anything runs: empty, a folder, under
    a file, or in a folder that cannot be created or written."""
    if path is None:
        return
    text = str(path)
    if not text.strip() or text in (".", "..") or text.endswith(("/", os.sep)):
        raise UsageError(f"{flag} {text!r}: give a file name")
    if path.is_dir():
        raise UsageError(f"{flag} {text}: is a folder; give a file name inside it")
    parent = path.parent
    while not parent.exists():
        if parent == parent.parent:
            break
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise UsageError(f"{flag} {text}: {parent} is a file, not a folder")
    if parent.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {text}: cannot write in {parent}")
    if len(path.name.encode()) > 255:
        raise UsageError(f"{flag}: the file name is longer than 255 bytes")


def check_device(device: str) -> None:
    if device == "cpu":
        return
    import torch

    if not device.startswith("cuda"):
        raise UsageError(f"--device {device!r}: use cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise UsageError(f"--device {device}: CUDA is not available on this machine")


def write_reports(result, html: Optional[Path], junit: Optional[Path], sarif: Optional[Path] = None) -> None:
    if sarif is not None:
        from nnspec.report.sarif import write_sarif

        write_sarif(sarif, result)
    if html is not None:
        from nnspec.report.html import write_html

        write_html(result, html)
    if junit is not None:
        from nnspec.report.junit import write_junit

        write_junit(result, junit)
