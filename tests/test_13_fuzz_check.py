"""End-to-end fuzzing of `nnspec check`: every generated spec ends in a result or a positioned error
(exit 0, 1 or 2), never an internal error. A few dozen examples here; bench/fuzz_check.py runs
10,000 and more with the same strategy."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from tests.fuzz_specs import spec_files


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(spec_files())
def test_check_never_ends_in_an_internal_error(cli, tmp_path, text):
    path = tmp_path / "fuzz.nnspec"
    path.write_text(text, encoding="utf-8")
    code, out, err = cli("check", path, "--budget", "10", "--json", tmp_path / "r.json")
    assert code in (0, 1, 2), f"exit {code} on:\n{text}\n{err}"
    assert "Traceback" not in err and "internal error" not in err, f"on:\n{text}\n{err}"
