"""An installed wheel finds the grammar and the report templates (they live outside nnspec/)."""

from __future__ import annotations

import subprocess
import sys
import zipfile

from tests.conftest import ROOT


def test_wheel_contains_and_loads_grammar_and_templates(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("nnspec-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "nnspec/_grammar/nnspec.lark" in names
    assert "nnspec/_reports/report.html.j2" in names and "nnspec/_reports/report.css" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    probe = ("from nnspec import resources; from nnspec.syntax.parser import parse_text;"
             "from nnspec.report.html import render_html; from nnspec.results.run import RunResult;"
             "assert str(resources.grammar_path()).startswith(%r);"
             "parse_text('uncertainty kl > 0.3 within linf(0.1)');"
             "assert 'nnspec audit report' in render_html(RunResult([], {}))" % str(site))
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
