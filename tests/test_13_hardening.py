"""Hardening: every reproducer of the audit gives a one-line error with exit 2 (or the documented
behaviour), never a silent pass, a traceback or exit 3."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import ROOT

MODELS = ROOT / "specs" / "models"
HEAD = f'model "{MODELS / "digits_mlp.onnx"}"\n'
INPUTS = f'inputs "{MODELS / "digits_test.npz"}" key x labels key y first 2\n'


def _spec(tmp_path: Path, body: str, head: str = HEAD + INPUTS, name: str = "s.nnspec") -> Path:
    path = tmp_path / name
    path.write_text(head + body + "\n", encoding="utf-8")
    return path


def _one_line_error(err: str) -> str:
    assert "Traceback" not in err and "internal error" not in err, err
    return err.strip().splitlines()[0]


# ---------------------------------------------------------------- numbers: no nan, no inf, no overflow

@pytest.mark.parametrize("body, token, message", [
    ("property p: robustness within linf(1e999 - 1e999) using mads(budget=20)", "1e999", "too large"),
    ("property p: robustness within linf(1e308 * 10)", "1e308 * 10", "too large"),
    ("property p: robustness margin 1e999 within linf(0.1)", "1e999", "too large"),
    ("domain [0, 1e999]", "1e999", "too large"),
    ("property p: robustness within linf(0.1) using mads(time=1e999)", "1e999", "too large"),
    ("maximum safe radius within l0(3) using game(tau=1e999)", "1e999", "too large"),
    ("property p: robustness within linf(0.1) using mads(budget=1e29)", "1e29", "at most 1e+12"),
    ("let big = " + "9" * 400, "9" * 400, "400 digits"),
    ("let big = " + "9" * 5000, "9" * 5000, "5000 digits"),
    ("let a = " + "9" * 300 + " * 1e10", "9" * 300 + " * 1e10", "too large"),
])
def test_non_finite_and_huge_numbers_are_positioned_errors(cli, tmp_path, body, token, message):
    code, out, err = cli("check", _spec(tmp_path, body + "\nproperty q: robustness within linf(0.1)"))
    line = _one_line_error(err)
    assert code == 2 and f":3:{body.index(token) + 1}:" in line and message in line, err


@pytest.mark.parametrize("domain", ["[0, 1e308]", "[-1e39, 1]"])
def test_a_domain_past_the_inputs_float32_range_is_a_positioned_error(cli, tmp_path, domain):
    """Finite in the spec's float64, but no float32 input can hold it (found by bench.fuzz_check:
    an internal error before)."""
    code, out, err = cli("check", _spec(tmp_path, f"domain {domain}\nproperty q: robustness within linf(0.1)"))
    line = _one_line_error(err)
    assert code == 2 and ":3:8:" in line and "too large for the inputs' float32 values" in line, err


@pytest.mark.parametrize("value", ["inf", "nan", "-inf", "1e999", "NaN", "infinity", "9" * 400])
def test_set_rejects_non_finite_values_naming_them(cli, value):
    code, out, err = cli("check", ROOT / "specs" / "digits_mlp.nnspec", "--set", f"eps={value}")
    line = _one_line_error(err)
    assert code == 2 and line.startswith("error: --set eps=") and value[:40] in line, err


# ---------------------------------------------------------------- keywords as option names and values

def test_keywords_of_the_grammar_are_usable_as_option_names_and_values(cli, tmp_path):
    body = "property p: robustness within linf(0.01) using mads(budget=50, tolerance=1e-3, refine=no, ibp=yes)"
    code, out, err = cli("check", _spec(tmp_path, body), "--json", tmp_path / "r.json")
    assert code in (0, 1), err
    opts = json.loads((tmp_path / "r.json").read_text())["records"][0]["options"]
    assert opts["tolerance"] == 1e-3 and opts["refine"] is False and opts["ibp"] is True


# ---------------------------------------------------------------- --budget caps everything

def test_budget_flag_overrides_the_specs_budgets(cli, tmp_path):
    body = ("default using mads(budget=5000)\n"
            "property a: robustness within linf(0.01)\n"
            "property b: robustness within linf(0.01) using mads(budget=8000)")
    code, out, err = cli("check", _spec(tmp_path, body), "--budget", "40", "--json", tmp_path / "r.json")
    records = json.loads((tmp_path / "r.json").read_text())["records"]
    assert {r["options"]["budget"] for r in records} == {40}
    assert all(r["queries"] <= 40 + 8 for r in records)


def test_bound_time_flag_overrides_the_specs_proof_times(cli, tmp_path):
    """`--bound-time S` caps every task's proof time as `--budget` caps its queries (a smoke run's
    proofs, bound=auto's branch and bound included); a bad value is a one-line usage error."""
    body = ("default using mads(budget=50, bound_time=7)\n"
            "property a: robustness within linf(0.01)\n"
            "property b: maximum safe radius within linf(0.01) using game(budget=300, bound_time=9)")
    path = _spec(tmp_path, body)
    code, out, err = cli("check", path, "--bound-time", "0.5", "--json", tmp_path / "r.json")
    assert code in (0, 1), err
    result = json.loads((tmp_path / "r.json").read_text())
    assert {(r["property"].split(":")[0], r["options"]["bound_time"]) for r in result["records"]} == \
        {("a", 0.5), ("b", 0.5)}
    assert result["bound_time"] == 0.5
    for bad in ("-1", "nan", "inf"):
        code, out, err = cli("check", path, "--bound-time", bad)
        assert code == 2 and _one_line_error(err).startswith(f"error: --bound-time {float(bad)}: must be")


# ---------------------------------------------------------------- output paths checked first

@pytest.mark.parametrize("flag, target, message", [
    ("--html", "DIR", "is a folder"), ("--json", "DIR", "is a folder"),
    ("--json", "FILE/x.json", "is a file, not a folder"), ("--json", "", "give a file name"),
    ("--junit", "DIR", "is a folder"),
])
def test_unwritable_output_paths_fail_before_running(cli, tmp_path, flag, target, message):
    (tmp_path / "DIR").mkdir()
    (tmp_path / "FILE").write_text("x")
    path = "" if not target else str(tmp_path / target)
    code, out, err = cli("check", ROOT / "specs" / "digits_mlp.nnspec", flag, path)
    assert code == 2 and message in _one_line_error(err)
    assert "checks" not in out  # nothing ran


# ---------------------------------------------------------------- input data

@pytest.mark.parametrize("array, message", [
    (np.zeros((0, 64), np.float32), "no inputs (0 rows)"),
    (np.array(["a", "b"]), "holds strings"),
    (np.array(3.0), "a single number"),
    (np.ones((2, 64), np.complex64), "complex numbers"),
    (np.full((2, 64), np.nan, np.float32), "non-finite values"),
])
def test_bad_input_arrays_are_data_errors(cli, tmp_path, array, message):
    np.save(tmp_path / "x.npy", array)
    spec = _spec(tmp_path, "property p: robustness within linf(0.1)",
                 head=HEAD + f'inputs "{tmp_path / "x.npy"}" labels [0, 0]\n')
    code, out, err = cli("check", spec)
    line = _one_line_error(err)
    assert code == 2 and message in line and ":2:1" in line, err


def test_a_scale_that_overflows_names_the_scale(cli, tmp_path):
    spec = _spec(tmp_path, "property p: robustness within linf(0.1)",
                 head=HEAD + f'inputs "{MODELS / "digits_test.npz"}" key x labels key y first 2 scale 1e-300\n')
    code, out, err = cli("check", spec)
    assert code == 2 and "after 'scale 1e-300'" in _one_line_error(err)


@pytest.mark.parametrize("labels, message", [
    (np.array([0.5, 1.0]), "is not an integer"), (np.array([np.nan, 1.0]), "is not an integer"),
    (np.array([1e20, 1.0]), "out of range"),
])
def test_labels_are_never_truncated_or_overflowed(cli, tmp_path, labels, message):
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 64), np.float32), y=labels)
    spec = _spec(tmp_path, "property p: robustness within linf(0.1)",
                 head=HEAD + f'inputs "{tmp_path / "d.npz"}" key x labels key y\n')
    code, out, err = cli("check", spec)
    assert code == 2 and message in _one_line_error(err)


def test_a_huge_literal_label_is_a_positioned_error(cli, tmp_path):
    spec = _spec(tmp_path, "property p: robustness within linf(0.1)",
                 head=HEAD + f'inputs "{MODELS / "digits_test.npz"}" key x labels [99999999999999999999, 0] first 2\n')
    code, out, err = cli("check", spec)
    assert code == 2 and ":2:" in _one_line_error(err) and "out of range" in err


def test_a_normalisation_that_does_not_fit_the_channels_is_refused(cli, tmp_path):
    spec = _spec(tmp_path, "normalize mean [0.1, 0.2, 0.3] std [1, 1, 1]\nproperty p: robustness within linf(0.1)",
                 head=f'model "{MODELS / "digits_cnn.onnx"}"\n' + INPUTS)
    code, out, err = cli("check", spec)
    line = _one_line_error(err)
    assert code == 2 and ":3:1" in line and "3 values" in line and "1 channels" in line


# ---------------------------------------------------------------- a radius past the domain is the domain

def test_a_ball_larger_than_the_domain_runs_as_the_domain(cli, tmp_path):
    spec = _spec(tmp_path, "property p: robustness within linf(1e308) using mads(budget=400)")
    code, out, err = cli("check", spec, "--json", tmp_path / "r.json")
    assert code in (0, 1) and "internal" not in err
    rec = json.loads((tmp_path / "r.json").read_text())["records"][0]
    assert rec["radius"] == 1e308 and rec["bounds"]["estimate"] is not None and rec["bounds"]["estimate"] <= 1.0


# ---------------------------------------------------------------- the spec text itself

@pytest.mark.parametrize("expr", ["-" * 490 + "1", "[" * 490 + "1" + "]" * 490, "+".join(["1"] * 490)])
@pytest.mark.parametrize("command", ["check", "explain", "fmt"])
def test_deep_nesting_is_a_positioned_error_in_every_command(cli, tmp_path, expr, command):
    spec = _spec(tmp_path, f"let a = {expr}\nproperty p: robustness within linf(0.1)")
    code, out, err = cli(command, spec)
    assert code == 2 and "nested more than 100 levels" in _one_line_error(err)


def test_redundant_parentheses_add_no_depth(cli, tmp_path):
    spec = _spec(tmp_path, "let a = " + "(" * 490 + "1" + ")" * 490 + "\nproperty p: robustness within linf(0.1)")
    assert cli("explain", spec)[0] == 0 and cli("fmt", "--check", spec)[0] in (0, 1)


def test_a_byte_order_mark_is_accepted(cli, tmp_path):
    spec = tmp_path / "bom.nnspec"
    spec.write_bytes(b"\xef\xbb\xbf" + (HEAD + INPUTS + "property p: robustness within linf(0.001) using "
                                       "mads(budget=20)\n").encode())
    code, out, err = cli("explain", spec)
    assert code == 0, err


def test_an_empty_spec_is_no_pass(cli, tmp_path):
    (tmp_path / "empty.nnspec").write_text("# nothing here\n")
    code, out, err = cli("check", tmp_path / "empty.nnspec")
    assert code == 2 and "no property to check" in _one_line_error(err)


def test_an_oversized_spec_is_refused_at_once(cli, tmp_path):
    spec = tmp_path / "big.nnspec"
    spec.write_text("let a = " + "+".join(["1"] * 50) + "\n" + "# padding\n" * 500_000)
    code, out, err = cli("explain", spec)
    assert code == 2 and "specs are limited to 4 MB" in _one_line_error(err)


def test_a_model_path_too_long_for_the_file_system(cli, tmp_path):
    code, out, err = cli("check", ROOT / "specs" / "digits_mlp.nnspec", "--model", str(tmp_path / ("a" * 300 + ".onnx")))
    assert code == 2 and "cannot open the model file" in _one_line_error(err)


# ---------------------------------------------------------------- the terminal

def test_escape_sequences_never_reach_the_terminal(cli, tmp_path):
    spec = _spec(tmp_path, "property p: robustness within linf(0.1)",
                 head=HEAD + 'inputs "x\x1b[2J\x1b[Hall checks passed\x07.npz"\n')
    code, out, err = cli("check", spec)
    assert code == 2 and "\x1b" not in err + out and "\x07" not in err + out and "\\x1b[2J" in err


def test_printable_escapes_controls_and_bidi_but_keeps_text():
    from nnspec.text import plain, printable

    assert printable("a\x1bb\u202ec\r\nd\te") == "a\\x1bb\\u202ec\\x0d\nd e"
    assert printable("x\ny", newlines=False) == "x\\ny"
    assert plain("[red]x[/]") == "\\[red]x\\[/]"
    assert printable("Größe π") == "Größe π"


# ---------------------------------------------------------------- results files

@pytest.fixture(scope="module")
def results(tmp_path_factory):
    from nnspec.cli.main import main

    out = tmp_path_factory.mktemp("results")
    main(["check", str(ROOT / "tests" / "specs" / "fails.nnspec"), "--json", str(out / "r.json")])
    return out / "r.json"


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(records={"a": 1}), "'records' should be a list"),
    (lambda d: d["records"][0].pop("verdict"), "record 0: field 'verdict' is missing"),
    (lambda d: d["records"][0].update(bounds=[1, 2]), "record 0: field 'bounds' should be dict"),
    (lambda d: d["records"].insert(1, 7), "record 1: a record is a JSON object"),
])
def test_report_refuses_malformed_records_in_one_line(cli, tmp_path, results, edit, message):
    data = json.loads(results.read_text())
    edit(data)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    code, out, err = cli("report", bad, "--html", tmp_path / "r.html")
    assert code == 2 and message in _one_line_error(err)


def test_report_on_non_utf8_bytes(cli, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{"schema": "\xff\xfe"}')
    code, out, err = cli("report", bad, "--html", tmp_path / "r.html")
    assert code == 2 and "not UTF-8" in _one_line_error(err)


def test_a_torn_jsonl_tail_is_dropped_and_counted(cli, tmp_path, results):
    lines = results.with_suffix(".jsonl").read_text().splitlines()
    assert len(lines) >= 1
    torn = tmp_path / "torn.jsonl"
    torn.write_text("\n".join(lines) + "\n" + lines[0][: len(lines[0]) // 2])
    code, out, err = cli("report", torn, "--html", tmp_path / "r.html")
    assert code == 0 and "dropped a torn last line" in err and f"{len(lines)} complete records" in err
    torn.write_text(lines[0][:20] + "\n" + "\n".join(lines) + "\n")
    code, out, err = cli("report", torn, "--html", tmp_path / "r.html")
    assert code == 2 and f"{torn}:1: not valid JSON" in _one_line_error(err)


def test_a_witness_file_that_is_not_npy_gives_no_picture_and_no_crash(cli, tmp_path, results):
    data = json.loads(results.read_text())
    rec = next(r for r in data["records"] if r["witness"])
    fake = tmp_path / "w.npy"
    fake.write_text("not numpy")
    rec["witness"].pop("x", None)
    rec["witness"]["file"] = str(fake)
    (tmp_path / "w.json").write_text(json.dumps(data))
    code, out, err = cli("report", tmp_path / "w.json", "--html", tmp_path / "r.html")
    assert code == 0, err
    assert "cannot read" in (tmp_path / "r.html").read_text()


# ---------------------------------------------------------------- models

def _tiny_onnx(path: Path, weights: np.ndarray) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    g = helper.make_graph([helper.make_node("Gemm", ["x", "W"], ["y"], transB=1)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                          [numpy_helper.from_array(weights.astype(np.float32), "W")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(path))


def test_inspect_runs_the_model_and_refuses_nan_weights(cli, tmp_path):
    w = np.ones((3, 4))
    _tiny_onnx(tmp_path / "ok.onnx", w)
    assert cli("inspect", tmp_path / "ok.onnx")[0] == 0
    w[1, 2] = np.nan
    _tiny_onnx(tmp_path / "nan.onnx", w)
    code, out, err = cli("inspect", tmp_path / "nan.onnx")
    assert code == 2 and "non-finite output" in _one_line_error(err)


@pytest.mark.parametrize("conv_pad, pool_pad", [("SAME_UPPER", "SAME_LOWER"), ("SAME_LOWER", "SAME_UPPER"),
                                                ("VALID", "SAME_UPPER")])
def test_auto_pad_models_load_and_match_onnxruntime(tmp_path, conv_pad, pool_pad):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from nnspec.models.loading import load_model

    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 1, 3, 3)).astype(np.float32)
    # a 16x16 input, stride 2: SAME needs one pixel of padding, on one side only
    conv_out = 8 if conv_pad != "VALID" else 7
    pool_out = -(-conv_out // 2)
    w2 = rng.normal(size=(10, 4 * pool_out * pool_out)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], auto_pad=conv_pad, strides=[2, 2], name="conv1"),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[3, 3], strides=[2, 2], auto_pad=pool_pad),
             helper.make_node("Flatten", ["p"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "W2"], ["y"], transB=1)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
                          [numpy_helper.from_array(w, "W"), numpy_helper.from_array(w2, "W2")])
    path = tmp_path / "same.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    model = load_model(path)
    x = rng.random((3, 1, 16, 16)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ref = np.concatenate([session.run(None, {"x": x[i:i + 1]})[0] for i in range(3)])
    assert np.abs(model(torch.from_numpy(x)).numpy() - ref).max() < 1e-5


def test_conversion_errors_name_the_operator_and_node(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from nnspec.errors import ModelError
    from nnspec.models.loading import load_model

    g = helper.make_graph([helper.make_node("Softplus", ["x"], ["h"], name="soft1"),
                           helper.make_node("Hardmax", ["h"], ["y"], name="odd_node")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(tmp_path / "m.onnx"))
    with pytest.raises(ModelError, match=r"Hardmax.*odd_node"):
        load_model(tmp_path / "m.onnx")


# ---------------------------------------------------------------- interrupts

def test_ctrl_c_during_the_run_says_so_and_exits_130(cli, monkeypatch):
    import nnspec.pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(nnspec.pipeline, "check", interrupted)
    code, out, err = cli("check", ROOT / "specs" / "digits_mlp.nnspec")
    assert code == 130 and "interrupted" in err


def test_ctrl_c_after_the_json_was_written_marks_it_interrupted(cli, tmp_path, monkeypatch):
    import nnspec.report.terminal

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(nnspec.report.terminal, "print_summary", interrupted)
    spec = _spec(tmp_path, "property p: robustness within linf(0.01) using mads(budget=20)")
    code, out, err = cli("check", spec, "--json", tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert code == 130 and data["interrupted"] is True and len(data["records"]) == 2
