"""Inputs that are silently wrong: the rule for raw pixel data, clean accuracy, warnings, --strict."""

from __future__ import annotations

import gzip
import json

import numpy as np

from tests.conftest import ROOT

MODELS = ROOT / "specs" / "models"
HEAD = f'model "{MODELS / "digits_mlp.onnx"}"\n'


def _spec(tmp_path, inputs: str, body: str = "property p: robustness within linf(0.01) using mads(budget=40)"):
    path = tmp_path / "s.nnspec"
    path.write_text(HEAD + inputs + "\n" + body + "\n")
    return path


def _idx(path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_scale_on_pixel_files_is_refused_naming_the_line(cli, tmp_path):
    _idx(tmp_path / "x-idx3-ubyte.gz", np.full((4, 8, 8), 200))
    spec = _spec(tmp_path, f'inputs "{tmp_path / "x-idx3-ubyte.gz"}" labels [0, 1, 2, 3] scale 255')
    code, out, err = cli("check", spec)
    assert code == 2 and ":2:1" in err and "would divide them again" in err


def test_the_summary_reports_clean_accuracy_in_terminal_json_and_html(cli, tmp_path):
    spec = _spec(tmp_path, f'inputs "{MODELS / "digits_test.npz"}" key x labels key y first 8')
    code, out, err = cli("check", spec, "--json", tmp_path / "r.json", "--html", tmp_path / "r.html")
    assert "accuracy 8/8 (100.0%)" in out
    summary = json.loads((tmp_path / "r.json").read_text())["input_sets"][0]
    assert summary["correct"] == 8 and summary["count"] == 8 and summary["accuracy"] == 1.0
    assert summary["labels"] == {"0": 1, "1": 1, "2": 2, "4": 3, "9": 1}
    assert "clean accuracy <b>8/8</b>" in (tmp_path / "r.html").read_text()


def test_wrong_labels_warn_with_the_line_and_strict_stops(cli, tmp_path):
    spec = _spec(tmp_path, f'inputs "{MODELS / "digits_test.npz"}" key x labels [{", ".join(["5"] * 40)}] first 6')
    code, out, err = cli("check", spec, "--json", tmp_path / "r.json")
    assert code in (0, 1) and "s.nnspec:2:1: warning: the model classifies" in out
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["warnings"] and data["input_sets"][0]["correct"] <= 1
    assert any("misclassifies this input" in n for r in data["records"] for n in r["notes"])
    code, out, err = cli("check", spec, "--strict")
    assert code == 2 and "--strict makes warnings errors" in err


def test_a_double_scale_warns(cli, tmp_path):
    x = np.load(MODELS / "digits_test.npz")["x"][:6] / 255.0  # already in [0, 1], divided again
    np.save(tmp_path / "x.npy", x.astype(np.float32))
    spec = _spec(tmp_path, f'inputs "{tmp_path / "x.npy"}" labels predicted')
    code, out, err = cli("check", spec)
    assert "a double 'scale' or a missing one?" in out


def test_mnist_with_the_deepgame_model_shows_its_clean_accuracy(cli, tmp_path, data_root):
    mnist = data_root / "mnist"
    spec = tmp_path / "m.nnspec"
    spec.write_text(f'model "{data_root / "models" / "deepgame_mnist.onnx"}"\n'
                    f'inputs "{mnist / "t10k-images-idx3-ubyte.gz"}" labels "{mnist / "t10k-labels-idx1-ubyte.gz"}" '
                    f'select [{", ".join(str(i) for i in range(1000, 1060))}]\n'
                    "property p: robustness within linf(0.001) using mads(budget=20, bound=ibp)\n")
    code, out, err = cli("check", spec, "--json", tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["input_sets"][0]["correct"] == 59
    spec.write_text(spec.read_text().replace("select", "scale 255 select"))
    code, out, err = cli("check", spec)
    assert code == 2 and "would divide them again" in err and ":2:1" in err


def test_explain_shows_the_value_range_of_each_input_set(cli):
    code, out, err = cli("explain", ROOT / "specs" / "digits_mlp.nnspec")
    assert code == 0 and "values: 8 inputs of shape (1, 8, 8), in [0, 1]" in out


def test_data_outside_the_domain_and_a_wrong_layout_stop_with_the_line(cli, tmp_path):
    x = np.load(MODELS / "digits_test.npz")["x"][:4]
    np.save(tmp_path / "big.npy", (x * 255).astype(np.float32))  # raw bytes, no scale: outside [0, 1]
    code, out, err = cli("check", _spec(tmp_path, f'inputs "{tmp_path / "big.npy"}" labels predicted'))
    assert code == 2 and "lies outside the default domain [0, 1]" in err
    np.save(tmp_path / "hwc.npy", np.zeros((4, 8, 8, 3), np.float32))  # channels last, for a 1x8x8 model
    code, out, err = cli("check", _spec(tmp_path, f'inputs "{tmp_path / "hwc.npy"}" labels predicted'))
    assert code == 2 and "inputs have shape (8, 8, 3)" in err
