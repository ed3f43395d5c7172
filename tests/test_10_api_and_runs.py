"""The Python API; a run killed with SIGKILL keeps every finished task; the report in a real browser."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import nnspec
from nnspec.results.store import load_results
from tests.conftest import ROOT
from tests.helpers import linear_model


def test_check_module_runs_the_whole_pipeline_in_memory():
    model, lin = linear_model(n=4, m=3, seed=0)
    x = torch.rand(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    spec = "property wide: robustness on logits within linf(5)\nproperty tiny: uncertainty kl > 0.01 within linf(1e-4)"
    records = nnspec.check_module(model, x, spec, domain=(-10, 10), budget=600, seed=0)
    assert [(r.property, r.input_id) for r in records] == [("wide", f"input[{i}]") for i in range(3)] + \
        [("tiny", f"input[{i}]") for i in range(3)]
    wide = [r for r in records if r.property == "wide"]
    assert all(r.verdict == "violated" and r.witness["confirmed"] and not r.passed for r in wide)
    assert all(r.label_source == "predicted" for r in records)
    assert records[-1].passed


def test_check_module_reports_spec_errors_with_positions():
    model, _ = linear_model(n=4, m=3)
    with pytest.raises(nnspec.errors.SpecError) as info:
        nnspec.check_module(model, torch.zeros(1, 4), "robustness within lnf(1)")
    assert info.value.diagnostics[0].span.column == 19


def test_check_module_takes_flat_rows_and_refuses_inputs_that_do_not_fit(tmp_path):
    """The demo MLP (ONNX, input (1, 8, 8)): flat rows of 64 run (the witness confirmed on
    onnxruntime too, which once failed on them after the whole search); 63 values are refused
    before any work, naming the shapes."""
    import numpy as np

    from nnspec.errors import DataError
    from nnspec.models.loading import load_model

    model = load_model(ROOT / "specs" / "models" / "digits_mlp.onnx")
    x = torch.from_numpy(np.load(ROOT / "specs" / "models" / "digits_test.npz")["x"][:1]).reshape(1, 64)
    r = nnspec.check_module(model, x, "robustness on logits within linf(0.5) using mads(bound=none, budget=300)")[0]
    assert r.verdict == "violated" and r.witness["confirmed"]
    with pytest.raises(DataError, match=r"inputs of shape \(1, 63\) do not fit .*\(1, 8, 8\)"):
        nnspec.check_module(model, x[:, :63], "robustness within linf(0.1)")


def test_torch_export_archive(tmp_path):
    from nnspec.models.loading import load_model

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    ep = torch.export.export(net, (torch.rand(2, 1, 2, 2),), dynamic_shapes=({0: batch},))
    torch.export.save(ep, str(tmp_path / "net.pt2"))
    model = load_model(tmp_path / "net.pt2", input_shape=(1, 2, 2))
    x = torch.rand(7, 1, 2, 2)
    assert torch.allclose(model(x), net(x), atol=1e-6)


def test_sigkill_midway_keeps_finished_tasks(tmp_path):
    """A kill can land inside a record's write (or the reader can see one half written): every
    newline-terminated line is a whole record, and a torn tail is what ``load_results`` drops."""
    out = tmp_path / "r.json"
    proc = subprocess.Popen([sys.executable, "-m", "nnspec", "check", str(ROOT / "specs"), "--json", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    lines_path = tmp_path / f"r.{proc.pid}.partial.jsonl"  # the stream of a run that has not finished
    deadline = time.time() + 120
    while time.time() < deadline:
        if lines_path.exists() and lines_path.read_text().count("\n") >= 8:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    *whole, tail = lines_path.read_text().split("\n")  # tail: "" or the write the kill interrupted
    assert len(whole) >= 8
    records = [json.loads(line) for line in whole]
    assert all(r["queries"] > 0 and "verdict" in r for r in records)
    loaded = load_results(lines_path)
    assert len(loaded.records) == len(records) + (1 if tail and _parses(tail) else 0)
    assert loaded.meta.get("dropped_lines", 0) == (1 if tail and not _parses(tail) else 0)
    code = subprocess.run([sys.executable, "-m", "nnspec", "report", str(lines_path), "--html", str(tmp_path / "r.html")],
                          capture_output=True, text=True, cwd=ROOT).returncode
    assert code == 0 and "Run interrupted" in (tmp_path / "r.html").read_text()


def _parses(text):
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium)")
def test_demo_report_renders_in_a_real_browser_without_errors(cli, tmp_path):
    code, _, _ = cli("check", ROOT / "specs" / "digits_mlp.nnspec", "--html", tmp_path / "r.html", "--budget", "300")
    page = (tmp_path / "r.html").as_uri()
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
                           "--virtual-time-budget=2000", "--dump-dom", page],
                          capture_output=True, text=True, timeout=120)
    assert "nnspec audit report" in done.stdout and "robust_small" in done.stdout
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert console == []
