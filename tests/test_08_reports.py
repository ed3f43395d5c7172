"""Reports render from serialised results: content, escaping, no external references, JUnit, and
`nnspec report` rebuilding a report from the JSON alone."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET


from nnspec.report.html import render_html
from nnspec.report.junit import render_junit
from nnspec.results.run import RunResult
from tests.conftest import ROOT


def _record(**over):
    base = dict(spec="a.nnspec", property="p", line=3, column=1, kind="robustness", norm="linf", radius=0.3,
                window=None, expression="s", requirements=["no violation"], model="m.onnx", input_id="d[0]",
                label=1, label_source="data", backend="mads", options={"budget": 10, "seed": 0},
                verdict="violated", passed=False, failures=["violation at distance 0.2"], s_centre=0.5,
                bounds={"estimate": 0.1, "upper": 0.2, "lower": None, "lower_method": None},
                witness={"file": None, "distance": 0.2, "s": -0.1, "output": [0.1, 0.9], "confirmed": True,
                         "x": [[[0.2] * 8] * 8], "centre": [[[0.0] * 8] * 8]},
                lipschitz=2.0, min_s=-0.1, value_range=None, queries=10, seconds=0.1, stop="budget",
                centre_output=[2.0, 1.0], notes=[], trace=[{"queries": 1, "min_s": 0.5, "estimate": 0.3, "upper": None},
                                                          {"queries": 10, "min_s": -0.1, "estimate": 0.1, "upper": 0.2}])
    base.update(over)
    return base


def _result(*records):
    return RunResult.from_json({"schema": "nnspec.results/1", "nnspec_version": "0.1.0", "created": "now",
                                "records": list(records), "models": [], "specs": []})


def test_html_shows_witness_images_bounds_and_plots():
    html = render_html(_result(_record()))
    assert "1 fail" in html or "0 of 1 checks pass" in html
    assert html.count("data:image/png;base64,") == 3  # original, witness, amplified perturbation
    assert "<svg" in html and "radius bounds over queries" in html
    assert "violation at distance 0.2" in html


def test_html_escapes_everything_from_specs():
    html = render_html(_result(_record(property="<script>alert(1)</script>", input_id="<b>x</b>")))
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<b>x</b>" not in html


def test_html_is_self_contained():
    html = render_html(_result(_record(), _record(property="q", witness=None, passed=True, verdict="no_violation_found",
                                                  failures=[])))
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", html)
    assert all(r.startswith("data:") or r.startswith("#") for r in refs), refs
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html
    assert "<link" not in html and "@import" not in html


def test_tabular_witness_shows_changed_features():
    rec = _record(witness={"file": None, "distance": 0.1, "s": -0.1, "output": [0.0, 1.0], "confirmed": True,
                           "x": [0.5, 0.1, 0.3], "centre": [0.5, 0.0, 0.3]})
    html = render_html(_result(rec))
    assert "data:image/png" not in html and "<th>feature</th>" in html


def test_junit_has_one_case_per_input_and_failures():
    xml = render_junit(_result(_record(), _record(input_id="d[1]", passed=True, failures=[], witness=None)))
    root = ET.fromstring(xml.split("?>", 1)[1])
    cases = root.findall(".//testcase")
    assert len(cases) == 2
    assert len(root.findall(".//failure")) == 1
    assert cases[0].get("file") == "a.nnspec" and cases[0].get("line") == "3"


def test_model_comparison_ranks_models(cli, tmp_path):
    models = ROOT / "specs" / "models"
    spec = tmp_path / "two.nnspec"  # (the demo MLP spec's first two properties; no bound: it costs the CNN time)
    spec.write_text(f'model "{models / "digits_mlp.onnx"}"\noutput logits\n'
                    f'inputs "{models / "digits_test.npz"}" key x labels key y first 8\ndomain [0, 1]\n'
                    "property robust_small: robustness within linf(0.01) using mads(budget=800, seed=0, bound=none)\n"
                    "property radius_large: robustness within linf(0.3) require estimate >= 0.01 "
                    "using mads(budget=1500, seed=0, bound=none)\n")
    code, out, err = cli("check", spec, "--model", models / "digits_mlp.onnx", "--model", models / "digits_cnn.onnx",
                         "--budget", "200", "--html", tmp_path / "c.html", "--json", tmp_path / "c.json")
    assert code in (0, 1), err
    html = (tmp_path / "c.html").read_text()
    assert "Model comparison" in html and "digits_cnn.onnx" in html and "digits_mlp.onnx" in html
    records = json.loads((tmp_path / "c.json").read_text())["records"]
    assert {r["model"].rsplit("/", 1)[-1] for r in records} == {"digits_mlp.onnx", "digits_cnn.onnx"}


def test_report_command_rebuilds_from_json(cli, tmp_path):
    (tmp_path / "r.json").write_text(json.dumps(_result(_record()).to_json()))
    code, out, _ = cli("report", tmp_path / "r.json", "--html", tmp_path / "x.html", "--junit", tmp_path / "x.xml")
    assert code == 0 and (tmp_path / "x.html").read_text().count("data:image/png") == 3
    assert (tmp_path / "x.xml").is_file()
    (tmp_path / "bad.json").write_text("{not json")
    code, _, err = cli("report", tmp_path / "bad.json", "--html", tmp_path / "y.html")
    assert code == 2 and "bad.json:1:2: not valid JSON" in err


def test_sweep_report_plots_the_quantity_against_the_radius():
    recs = [_record(radius=r, input_id=f"d[{i}]", verdict="violated" if r > 0.1 else "no_violation_found",
                    witness=None, bounds={"estimate": min(r, 0.15), "upper": 0.2 if r > 0.1 else None,
                                          "lower": None, "lower_method": None})
            for r in (0.05, 0.1, 0.2) for i in range(2)]
    html = render_html(_result(*recs))
    assert "balls swept over radii <code>0.05, 0.1, 0.2</code>" in html
    assert "inputs with a confirmed violation" in html and "radius bounds" in html


def test_no_model_comparison_when_each_property_has_one_model():
    html = render_html(_result(_record(model="a.onnx"), _record(property="q", model="b.onnx")))
    assert "Model comparison" not in html


def test_game_bounds_are_plotted_over_queries():
    rec = _record(kind="max_radius", trace=[{"queries": 1, "upper": None, "lower": 0.01},
                                            {"queries": 50, "upper": 0.4, "lower": 0.02},
                                            {"queries": 90, "upper": 0.3, "lower": 0.05}])
    html = render_html(_result(rec))
    assert "lower (grid game, A*)" in html and "upper (witness)" in html


def test_violations_found_along_the_way_are_shown_farthest_first_then_the_witness():
    far = {"distance": 0.5, "found_at": 12, "confirmed": True, "s": -0.01, "output": [], "file": None,
           "x": [[[0.9] * 8] * 8]}
    near = dict(far, distance=0.3, found_at=40)
    html = render_html(_result(_record(kind="max_radius", milestones=[near, far])))
    strip = html[html.index("Violations found along the way"):]
    captions = re.findall(r"<figcaption>distance ([0-9.]+)( after \d+ queries)?( \(the witness\))?</figcaption>", strip)
    assert captions == [("0.5", " after 12 queries", ""), ("0.3", " after 40 queries", ""), ("0.2", "", " (the witness)")]
    assert strip.count("data:image/png;base64") >= 3  # a picture for each, the witness included
    assert "Violations found along the way" not in render_html(_result(_record(milestones=[])))


def test_the_summary_counts_proven_checks():
    proven = _record(verdict="proven", passed=True, failures=[], witness=None,
                     bounds={"estimate": 0.3, "upper": None, "lower": 0.3, "lower_method": "interval bound propagation"})
    result = _result(proven, _record())
    assert result.summary()["proven"] == 1
    assert "1 confirmed violations &middot; 1 proven" in render_html(result)
