"""The CLI in-process: every exit code, one-line errors without tracebacks, the demo specs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT

SPECS = ROOT / "specs"
TSPECS = ROOT / "tests" / "specs"


def _expected_exit(spec: Path) -> int:
    """The exit code a demo spec's header comment promises."""
    m = re.search(r"exit (\d+)", spec.read_text())
    assert m, f"{spec} must say which exit code it expects"
    return int(m.group(1))


@pytest.mark.parametrize("spec", sorted(SPECS.glob("*.nnspec")), ids=lambda p: p.stem)
def test_demo_specs_pass_as_their_comments_say(cli, spec, tmp_path):
    code, out, err = cli("check", spec, "--json", tmp_path / "r.json")
    assert code == _expected_exit(spec), out + err
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["records"] and all(r["passed"] for r in data["records"])


def test_exit_1_when_a_property_is_violated(cli, tmp_path):
    spec = TSPECS / "fails.nnspec"
    assert _expected_exit(spec) == 1
    code, out, err = cli("check", spec, "--json", tmp_path / "r.json", "--junit", tmp_path / "j.xml",
                         "--html", tmp_path / "r.html")
    assert code == 1
    assert "FAIL" in out and "violation at distance" in out
    data = json.loads((tmp_path / "r.json").read_text())
    rec = data["records"][0]
    assert rec["verdict"] == "violated" and rec["witness"]["confirmed"] is True
    assert rec["witness"]["distance"] <= 0.3 + 1e-6
    assert Path(rec["witness"]["file"]).is_file()
    assert "<failure" in (tmp_path / "j.xml").read_text()


def test_exit_2_for_a_missing_path(cli):
    code, out, err = cli("check", "nope/")
    assert code == 2
    assert err.strip() == "error: nope: no such file or folder"


def test_exit_2_for_a_syntax_error_with_position_and_caret(cli):
    code, out, err = cli("check", TSPECS / "syntax_error.nnspec")
    assert code == 2
    lines = err.splitlines()
    assert re.match(r".*syntax_error\.nnspec:3:12: error: unexpected 'withn'", lines[0])
    assert lines[1].strip() == "robustness withn linf(0.1)" and lines[2].strip() == "^^^^^"
    assert "Traceback" not in err


def test_errors_after_loading_the_model_point_at_the_spec(cli):
    code, out, err = cli("check", TSPECS / "bad_label.nnspec")
    assert code == 2
    assert re.search(r"bad_label\.nnspec:3:1: error: label 12 out of range: digits_mlp\.onnx has 10 outputs", err)


def test_exit_2_for_bad_options(cli):
    assert cli("check", SPECS, "--budget", "3")[0] == 2
    assert cli("check", SPECS, "--set", "epz=0.1")[0] == 2
    code, _, err = cli("check", SPECS, "--set", "eps")
    assert code == 2 and "expected NAME=VALUE" in err
    assert cli("check", SPECS, "--no-such-flag")[0] == 2
    code, _, err = cli("check", SPECS / "digits_mlp.nnspec", "--model", "missing.onnx")
    assert code == 2 and err.strip() == "error: --model: missing.onnx: model file not found"


def test_no_spec_found_is_exit_2(cli, tmp_path):
    code, _, err = cli("check", tmp_path)
    assert code == 2 and "no .nnspec files found" in err


def test_set_overrides_a_param(cli, tmp_path):
    code, out, _ = cli("check", SPECS / "digits_mlp.nnspec", "--set", "eps=0.3", "--budget", "300",
                       "--json", tmp_path / "r.json")
    assert code == 1  # in a 0.3 ball the MLP has adversarial examples
    recs = json.loads((tmp_path / "r.json").read_text())["records"]
    assert {r["radius"] for r in recs if r["property"] == "robust_small"} == {0.3}


def test_exit_3_for_an_internal_error(cli, monkeypatch):
    import nnspec.pipeline as pipeline

    def boom(*a, **k):
        raise RuntimeError("simulated bug")
    monkeypatch.setattr(pipeline, "check", boom)
    code, out, err = cli("check", SPECS)
    assert code == 3 and "internal error: RuntimeError: simulated bug" in err and "Traceback" not in err


def test_exit_130_when_interrupted_and_finished_work_is_kept(cli, monkeypatch, tmp_path):
    from nnspec import pipeline

    calls = {"n": 0}
    real = pipeline.Runner.run_task

    def interrupt_second(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, *a, **k)
    monkeypatch.setattr(pipeline.Runner, "run_task", interrupt_second)
    code, out, err = cli("check", SPECS / "digits_mlp.nnspec", "--json", tmp_path / "r.json",
                         "--html", tmp_path / "r.html", "--budget", "100")
    assert code == 130
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["interrupted"] is True and len(data["records"]) == 8  # the first task's 8 inputs
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert len(lines) == 8
    assert "Run interrupted" in (tmp_path / "r.html").read_text()


def test_explain_and_inspect(cli):
    code, out, _ = cli("explain", SPECS / "digits_mlp.nnspec")
    assert code == 0 and "property robust_small (line 13): robustness" in out and "budget=800" in out
    code, out, _ = cli("inspect", SPECS / "models" / "digits_cnn.onnx", "--cross-check")
    assert code == 0 and "input:      (1, 8, 8)" in out and "batching:   native" in out
    diff = float(re.search(r"max \|difference\| (\S+)", out).group(1))
    assert diff < 1e-4
    assert "bounds:     CROWN by default; nonlinear layers: maxpool x1, relu x2" in out
    code, _, err = cli("inspect", SPECS / "digits_mlp.nnspec")
    assert code == 2 and "unknown model format '.nnspec'" in err


def test_python_dash_m_entry_point():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "nnspec", "version"], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0 and done.stdout.strip() == "0.1.0"


def _spec(tmp_path, body: str):
    models = ROOT / "specs" / "models"
    f = tmp_path / "p.nnspec"
    f.write_text(f'model "{models / "digits_mlp.onnx"}"\ninputs "{models / "digits_test.npz"}" key x labels key y first 2\n'
                 f"{body}\n")
    return f


@pytest.mark.parametrize("body, message", [
    ("feature robustness over sift(8) within l1(2) using game(budget=500)", "SIFT found no keypoints in a 8x8 image"),
    ("feature robustness over grid(9, 9) within l1(2) using game(budget=500)", "grid(9, 9) does not fit an image of 8x8"),
    ("robustness within linf(0.1) on feature(grid(2, 2), 7) using mads(budget=200)",
     "feature 7 does not exist: grid gives 4 features"),
    ("feature robustness over saliency(4) within l1(2) using game(budget=70)",
     "budget too small for 4 features: give using game(budget=...) at least 82"),
])
def test_partitions_that_do_not_fit_are_input_errors_at_the_property(cli, tmp_path, body, message):
    f = _spec(tmp_path, body)
    code, out, err = cli("check", f)
    assert code == 2, err
    assert err.startswith(f"{f}:3:1: error: {message}") and "Traceback" not in err


def test_saliency_rankings_are_paid_from_the_budget(cli, tmp_path):
    f = _spec(tmp_path, "feature robustness over saliency(4) within l1(2) using game(budget=2000)\n"
                        "robustness within linf(0.1) on feature(saliency(4), 0) using mads(budget=100)")
    code, _, err = cli("check", f, "--json", tmp_path / "r.json")
    # 1: the mads check on image 0 is violated at 0.1, which its budget of 100 misses and
    # bound=auto's branch and bound (input splits over the window's 16 pixels) meets
    assert code in (0, 1) and "Traceback" not in err, err
    recs = json.loads((tmp_path / "r.json").read_text())["records"]
    assert all(r["queries"] <= r["options"]["budget"] + 1 for r in recs if r["property"].startswith("robustness"))


def test_a_lipschitz_constant_from_the_spec_is_not_called_sound(cli, tmp_path):
    f = _spec(tmp_path, "maximum safe radius within l2(1) using game(budget=500, lipschitz=3)")
    assert cli("check", f, "--json", tmp_path / "r.json")[0] == 0
    rec = json.loads((tmp_path / "r.json").read_text())["records"][0]
    assert rec["bounds"]["lower_method"] == "s(x)/L, L = 3 (given in the spec, not verified)"


def test_device_without_cuda_is_a_usage_error(cli):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = cli("check", SPECS, "--device", "cuda")
    assert code == 2 and err.strip() == "error: --device cuda: CUDA is not available on this machine"
    code, _, err = cli("check", SPECS, "--device", "tpu")
    assert code == 2 and "use cpu, cuda or cuda:N" in err


@pytest.mark.parametrize("partition", ["superpixels", "saliency", "grid"])
def test_maximum_safe_radius_takes_every_partition_for_player_one(cli, tmp_path, partition):
    f = _spec(tmp_path, f"maximum safe radius within l0(8) using game(partition={partition}, features=4, "
                        "upper=mcts, budget=1500)")
    code, out, err = cli("check", f, "--json", tmp_path / "r.json")
    assert code == 0, err
    records = json.loads((tmp_path / "r.json").read_text())["records"]
    assert len(records) == 2 and all(r["witness"] is None or r["witness"]["confirmed"] for r in records)
    assert any(r["witness"] is not None for r in records)  # the demo MLP flips within 8 pixels


def test_a_sift_partition_on_tiny_images_is_a_positioned_error_for_maximum_safe_radius(cli, tmp_path):
    f = _spec(tmp_path, "maximum safe radius within l0(8) using game(partition=sift, budget=1500)")
    code, out, err = cli("check", f)
    assert code == 2 and err.startswith(f"{f}:3:1: error: SIFT found no keypoints") and "Traceback" not in err


@pytest.mark.parametrize("last, says", [
    ("Softsign", "bounds:     none (no bound for Softsign at node softsign): properties are searched, not proved"),
    ("Softmax", "bounds:     CROWN by default on the logits before its final softmax"),
    ("Sigmoid", "bounds:     CROWN by default; nonlinear layers: relu x1, sigmoid x1"),
])
def test_inspect_says_what_the_bound_engine_can_prove(cli, tmp_path, last, says):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "W2"], ["z"]), helper.make_node(last, ["z"], ["y"])]
    inits = [numpy_helper.from_array(rng.normal(size=(4, 6)).astype(np.float32), "W1"),
             numpy_helper.from_array(rng.normal(size=(6, 3)).astype(np.float32), "W2")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(tmp_path / "m.onnx"))
    code, out, _ = cli("inspect", tmp_path / "m.onnx")
    assert code == 0 and says in out, out
