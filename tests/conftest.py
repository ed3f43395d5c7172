"""Shared fixtures; tests run single-threaded torch to behave the same on every machine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
# every test runs its tasks: the result cache is on only where a test turns it on (test_17)
os.environ["NNSPEC_CACHE"] = "off"
# nor does a developer's warm server run the commands that tests start (test_17 starts its own)
os.environ["NNSPEC_SERVER"] = "off"
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def shared_data() -> Path | None:
    """The external benchmark data (../shared/data or $NNSPEC_DATA), or None."""
    from nnspec.resources import external_data_root

    return external_data_root()


@pytest.fixture
def data_root() -> Path:
    root = shared_data()
    if root is None:
        pytest.skip("external data (../shared/data or NNSPEC_DATA) not present")
    return root


@pytest.fixture
def cli(capsys):
    """Run the CLI in-process: returns (exit code, stdout, stderr)."""
    from nnspec.cli.main import main

    def run(*args: str):
        code = main([str(a) for a in args])
        out = capsys.readouterr()
        return code, out.out, out.err
    return run
