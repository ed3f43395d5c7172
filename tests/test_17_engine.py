"""The engine: failure isolation, the executors (in-process, process pool, Ray) giving the same
records, the result cache, concurrent runs on one results path, threads, evaluation backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nnspec.pipeline import CheckOptions, check

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "specs" / "models"

SPEC = f"""model "{MODELS / 'digits_mlp.onnx'}"
output logits
inputs "{MODELS / 'digits_test.npz'}" key x labels key y first 3
domain [0, 1]
default using mads(budget=200, seed=3)
property small: robustness within linf(0.01)
property large: robustness within linf(0.3)
property boom: robustness within linf(0.05)
"""


def _spec(tmp_path: Path, text: str = SPEC, name: str = "s.nnspec") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _essence(result) -> list[tuple]:
    """What every executor must agree on: verdicts, bounds, queries, witness distances."""
    return sorted((r.property, r.input_id, r.verdict, json.dumps(r.bounds, sort_keys=True), r.queries,
                   None if r.witness is None else round(r.witness["distance"], 9)) for r in result.records)


@pytest.fixture
def failing_backend(monkeypatch):
    """Property 'boom' hits an internal error inside its backend (a bug, as users would meet one)."""
    from nnspec.backends import registry

    create = registry.create

    def wrapped(name):
        backend = create(name)
        run = backend.run

        def run_or_fail(task, model):
            if task.prop.name == "boom":
                raise RuntimeError("simulated bug in a backend")
            return run(task, model)

        backend.run = run_or_fail
        return backend

    monkeypatch.setattr(registry, "create", wrapped)


# ---------------------------------------------------------------------- failure isolation


def test_an_internal_error_in_one_task_is_recorded_and_the_others_finish(tmp_path, failing_backend, cli):
    spec = _spec(tmp_path)
    code, out, err = cli("check", spec, "--json", tmp_path / "r.json", "--junit", tmp_path / "r.xml",
                         "--html", tmp_path / "r.html")
    assert code == 3, (out, err)
    data = json.loads((tmp_path / "r.json").read_text())
    by_prop = {}
    for r in data["records"]:
        by_prop.setdefault(r["property"], []).append(r)
    assert [r["verdict"] for r in by_prop["boom"]] == ["error"] * 3  # one per input, inputs known
    assert by_prop["boom"][0]["failures"] == ["internal error: RuntimeError: simulated bug in a backend"]
    assert all(r["verdict"] != "error" for p in ("small", "large") for r in by_prop[p])  # the others ran
    assert any(r["witness"] for r in by_prop["large"])  # ... to the end: 0.3 is far beyond these radii
    assert data["summary"]["errors"] == 3
    xml = (tmp_path / "r.xml").read_text()
    assert xml.count('<error message="internal error: RuntimeError: simulated bug') == 3
    assert 'errors="3"' in xml
    assert "simulated bug in a backend" in (tmp_path / "r.html").read_text()
    assert "3 internal errors" in out


def test_internal_errors_are_not_cached(tmp_path, failing_backend):
    spec = _spec(tmp_path)
    opts = CheckOptions(cache_dir=tmp_path / "cache")
    first = check([str(spec)], opts)
    assert first.exit_code() == 3
    again = check([str(spec)], opts)  # the run-level entry is not written for a run with errors
    assert {r.property for r in again.records if r.cached} == {"small", "large"}
    assert [r.cached for r in again.records if r.property == "boom"] == [False] * 3


# ---------------------------------------------------------------------- executors


def test_a_process_pool_gives_the_same_records_as_the_in_process_run(tmp_path):
    spec = _spec(tmp_path, SPEC.replace("property boom", "property medium"))
    inline = check([str(spec)], CheckOptions(cache=False))
    pooled = check([str(spec)], CheckOptions(cache=False, jobs=2, json_path=tmp_path / "p.json"))
    assert _essence(inline) == _essence(pooled)
    assert [(r.property, r.input_id) for r in pooled.records] == [(r.property, r.input_id) for r in inline.records]
    assert pooled.meta["executor"] == "process"
    lines = (tmp_path / "p.jsonl").read_text().splitlines()  # the same results path
    assert len(lines) == len(inline.records) == 9
    witnesses = [r for r in pooled.records if r.witness]
    assert witnesses and all(Path(r.witness["file"]).is_file() for r in witnesses)


def test_bad_jobs_threads_executor_engine_are_one_line_errors(cli, tmp_path):
    spec = _spec(tmp_path)
    for args, text in ((["--jobs", "0"], "--jobs 0: must be at least 1"),
                       (["--threads", "0"], "--threads 0: must be at least 1"),
                       (["--executor", "mpi"], "--executor 'mpi': use inline, process or ray"),
                       (["--engine", "tvm"], "--engine 'tvm': use auto, ort or torch"),
                       (["--address", "1.2.3.4:6379"], "--address needs --executor ray")):
        code, _, err = cli("check", spec, *args)
        assert code == 2 and text in err and "Traceback" not in err


def test_default_threads_divide_the_cores_among_workers(monkeypatch):
    from nnspec import execution

    monkeypatch.setattr(execution, "available_cores", lambda: 8)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.5, 0.5, 0.5))
    assert execution.default_threads(1) == 8 and execution.default_threads(2) == 4
    assert execution.default_threads(16) == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 9.0, 9.0))  # someone else uses the cores
    assert execution.default_threads(1) == 1


# ---------------------------------------------------------------------- the result cache


def test_an_unchanged_rerun_comes_from_the_cache_with_the_same_records(tmp_path):
    spec = _spec(tmp_path, SPEC.replace("property boom", "property medium"))
    opts = CheckOptions(cache_dir=tmp_path / "cache", json_path=tmp_path / "r.json")
    first = check([str(spec)], opts)
    assert not any(r.cached for r in first.records)
    again = check([str(spec)], opts)
    assert again.meta["executor"] == "cache" and all(r.cached for r in again.records)
    assert _essence(first) == _essence(again)
    assert again.meta.get("input_sets") == first.meta.get("input_sets")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["summary"]["cached"] == 9


def test_changing_one_property_reruns_exactly_its_tasks(tmp_path):
    spec = _spec(tmp_path, SPEC.replace("property boom", "property medium"))
    opts = CheckOptions(cache_dir=tmp_path / "cache")
    first = check([str(spec)], opts)
    # a comment above everything moves every property down a line: still cached, positions updated
    spec.write_text("# a comment\n" + spec.read_text().replace("linf(0.3)", "linf(0.25)"))
    again = check([str(spec)], opts)
    rerun = {r.property for r in again.records if not r.cached}
    assert rerun == {"large"}
    assert all(r.line == f.line + 1 for r, f in zip(again.records, first.records))


def test_changing_the_model_bytes_reruns_every_task(tmp_path):
    import shutil

    model = tmp_path / "m.onnx"
    shutil.copy(MODELS / "digits_mlp.onnx", model)
    spec = _spec(tmp_path, SPEC.replace(str(MODELS / "digits_mlp.onnx"), str(model))
                 .replace("property boom", "property medium"))
    opts = CheckOptions(cache_dir=tmp_path / "cache")
    check([str(spec)], opts)
    assert all(r.cached for r in check([str(spec)], opts).records)
    import onnx

    proto = onnx.load(str(model))
    proto.doc_string = "retrained"  # other bytes, the same network: the cache cannot know that
    onnx.save(proto, str(model))
    assert not any(r.cached for r in check([str(spec)], opts).records)


def test_no_cache_and_the_environment_switch(tmp_path, monkeypatch, cli):
    spec = _spec(tmp_path, SPEC.replace("property boom", "property medium"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pyproject.toml").write_text("")  # a project folder: the cache is on by default
    monkeypatch.delenv("NNSPEC_CACHE")
    cli("check", spec)
    assert (tmp_path / ".nnspec-cache" / "runs").is_dir()
    code, out, _ = cli("check", spec)
    assert "9 from the result cache" in out
    code, out, _ = cli("check", spec, "--no-cache")
    assert "from the result cache" not in out
    code, _, err = cli("check", spec, "--no-cache", "--cache", tmp_path / "c")
    assert code == 2 and "contradict" in err


# ---------------------------------------------------------------------- concurrent runs


def test_two_runs_writing_the_same_json_path_do_not_corrupt_it(tmp_path):
    spec = _spec(tmp_path, SPEC.replace("property boom", "property medium"))
    out = tmp_path / "r.json"
    env = {**os.environ, "NNSPEC_CACHE": "off"}
    procs = [subprocess.Popen([sys.executable, "-m", "nnspec", "check", str(spec), "--json", str(out)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=tmp_path)
             for _ in range(2)]
    for p in procs:
        p.wait(timeout=300)
        assert p.returncode in (0, 1), p.stderr.read()
    data = json.loads(out.read_text())
    assert len(data["records"]) == 9
    lines = [json.loads(line) for line in out.with_suffix(".jsonl").read_text().splitlines()]
    assert len(lines) == 9  # one run's lines, whole: not 18 interleaved
    assert not list(tmp_path.glob("*.partial.jsonl"))


# ---------------------------------------------------------------------- the warm server


@pytest.fixture
def server(tmp_path):
    """A warm server in a private socket folder (short: Unix socket paths are limited to ~100
    bytes), stopped at the end; yields the environment that commands use it with. Its idle time is
    long: on a loaded machine the commands of one test took more than the 120 s it had before, the
    server ended idle, and the next command ran without it (once, in a full run)."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="nns-"))
    env = {**os.environ, "NNSPEC_SERVER_DIR": str(folder / "run"), "NNSPEC_CACHE": "off"}
    env.pop("NNSPEC_SERVER", None)
    nnspec = [sys.executable, "-m", "nnspec"]
    started = subprocess.run(nnspec + ["server", "start", "--idle", "900"], env=env, capture_output=True, text=True,
                             timeout=120)
    assert started.returncode == 0, started.stderr
    try:
        yield env
    finally:
        subprocess.run(nnspec + ["server", "stop"], env=env, capture_output=True, timeout=60)
        shutil.rmtree(folder, ignore_errors=True)


def _served(env) -> list[str]:
    log = Path(env["NNSPEC_SERVER_DIR"]) / "server.log"
    return [line for line in log.read_text().splitlines() if ": nnspec " in line] if log.exists() else []


def test_the_warm_server_runs_commands_with_the_same_records_codes_and_errors(tmp_path, server):
    import time

    spec = _spec(tmp_path, SPEC.replace("property boom", "property medium"))
    nnspec = [sys.executable, "-m", "nnspec"]
    run = lambda args, env: subprocess.run(nnspec + args, env=env, cwd=tmp_path, capture_output=True,  # noqa: E731
                                           text=True, timeout=300)
    served = run(["check", spec.name, "--json", "a.json"], server)
    here = run(["check", spec.name, "--json", "b.json"], {**server, "NNSPEC_SERVER": "off"})
    assert served.returncode == here.returncode == 1, served.stderr  # 'large' is violated
    assert len(_served(server)) == 1 and "check s.nnspec --json a.json" in _served(server)[0]
    a, b = (json.loads((tmp_path / name).read_text()) for name in ("a.json", "b.json"))
    essence = lambda d: sorted((r["property"], r["input_id"], r["verdict"], json.dumps(r["bounds"], sort_keys=True),  # noqa: E731
                                r["queries"]) for r in d["records"])
    assert essence(a) == essence(b) and len(a["records"]) == 9
    assert served.stdout.splitlines()[-2] == here.stdout.splitlines()[-2]  # the same summary, on the client's stdout
    # bad input: the one-line error on the client's stderr, exit 2; after more idle seconds than
    # the server's accept timeout (5 s), which once ended it
    time.sleep(6)
    (tmp_path / "bad.nnspec").write_text("property p: robustness within linf(0.1\n")
    bad = run(["check", "bad.nnspec"], server)
    assert bad.returncode == 2 and bad.stderr.startswith("bad.nnspec:2:1: error: unexpected end of file")
    assert "Traceback" not in bad.stderr
    assert len(_served(server)) == 2


def test_the_server_exits_after_its_idle_time_and_removes_its_socket(tmp_path):
    import time

    env = {**os.environ, "NNSPEC_SERVER_DIR": str(Path(__import__("tempfile").mkdtemp(prefix="nns-")) / "run")}
    nnspec = [sys.executable, "-m", "nnspec", "server"]
    assert subprocess.run(nnspec + ["start", "--idle", "2"], env=env, capture_output=True, timeout=120).returncode == 0
    sockets = list(Path(env["NNSPEC_SERVER_DIR"]).glob("*.sock"))
    assert len(sockets) == 1
    until = time.monotonic() + 30
    while sockets[0].exists() and time.monotonic() < until:
        time.sleep(0.2)
    assert not sockets[0].exists()
    status = subprocess.run(nnspec + ["status"], env=env, capture_output=True, text=True, timeout=60)
    assert status.stdout.startswith("not running")


def test_ctrl_c_reaches_the_servers_process_and_keeps_what_finished(tmp_path, server):
    import signal
    import time

    spec = _spec(tmp_path, SPEC.replace("first 3", "first 50").replace("budget=200", "budget=500000")
                 .replace("digits_mlp", "digits_cnn"))
    proc = subprocess.Popen([sys.executable, "-m", "nnspec", "check", spec.name, "--json", "r.json"], env=server,
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    until = time.monotonic() + 60
    while not _served(server) and time.monotonic() < until:
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted; finished results were kept" in err
    assert (tmp_path / "r.json").exists()


def test_no_server_for_this_code_means_the_command_runs_in_process(tmp_path, monkeypatch):
    from nnspec.cli import server as srv

    monkeypatch.setenv("NNSPEC_SERVER_DIR", str(tmp_path / "run"))
    monkeypatch.delenv("NNSPEC_SERVER", raising=False)
    assert srv.forward(["version"]) is None  # nothing listening
    (tmp_path / "run").mkdir(mode=0o700)
    srv.socket_path().write_text("")  # a stale file where a socket was: refused, not fatal
    assert srv.forward(["version"]) is None
    (tmp_path / "run").chmod(0o755)  # a folder others may enter: never used
    assert not srv._ours(srv.socket_path())
    (tmp_path / "run").chmod(0o700)
    assert srv._ours(srv.socket_path())
    monkeypatch.setenv("NNSPEC_SERVER", "off")
    assert srv.forward(["version"]) is None
    key = srv.code_key()
    assert key == srv.code_key() and len(key) == 20


# ---------------------------------------------------------------------- Ray


def test_a_local_ray_cluster_gives_the_same_records_as_the_in_process_run(tmp_path, monkeypatch):
    """Two actors on a private local cluster; the model, input set and reference file travel by
    content into the actors' own folder, and nothing of that folder shows in the records."""
    pytest.importorskip("ray")
    monkeypatch.setenv("NNSPEC_RAY_FILES", str(tmp_path / "shipped"))
    specs = [str(_spec(tmp_path, SPEC.replace("property boom", "property medium"))),
             str(ROOT / "specs" / "uncertainty_reach.nnspec")]
    inline = check(specs, CheckOptions(cache=False))
    ray_run = check(specs, CheckOptions(cache=False, executor="ray", jobs=2, json_path=tmp_path / "r.json"))
    assert _essence(inline) == _essence(ray_run)
    assert [(r.spec, r.property, r.input_id, r.model) for r in ray_run.records] == \
        [(r.spec, r.property, r.input_id, r.model) for r in inline.records]
    assert ray_run.meta["executor"] == "ray"
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == len(inline.records) == 29
    shipped = sorted(p.name for p in (tmp_path / "shipped").glob("*/*"))
    assert shipped == ["digits_mean.npy", "digits_mlp.onnx", "digits_test.npz"]  # once each, by content
    assert "shipped" not in json.dumps(ray_run.to_json())


def test_shipped_folders_arrive_whole(tmp_path):
    from nnspec.distributed import materialise, pack

    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.png").write_bytes(b"\x89PNG first")
    (folder / "sub" / "b.png").write_bytes(b"second")
    digest, name, kind, payload = pack(str(folder))
    assert (name, kind) == ("images", "dir")
    where = Path(materialise(tmp_path / "root", digest, name, kind, payload, lambda p: p))
    assert where.name == "images" and (where / "a.png").read_bytes() == b"\x89PNG first"
    assert (where / "sub" / "b.png").read_bytes() == b"second"
    assert materialise(tmp_path / "root", digest, name, kind, None, None) == str(where)  # written once
    (folder / "a.png").write_bytes(b"changed")
    assert pack(str(folder))[0] != digest


def test_ray_missing_is_a_one_line_error(tmp_path, monkeypatch, cli):
    import builtins

    real = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    code, _, err = cli("check", _spec(tmp_path), "--executor", "ray", "--no-cache")
    assert code == 2 and "--executor ray needs Ray: pip install 'nnspec[ray]'" in err and "Traceback" not in err


# ---------------------------------------------------------------------- evaluation engines


@pytest.mark.parametrize("name", ["digits_mlp.onnx", "digits_cnn.onnx"])
def test_onnxruntime_and_torch_engines_give_the_same_outputs(name):
    from nnspec.models.loading import load_model

    on_ort = load_model(MODELS / name, engine="ort")
    on_torch = load_model(MODELS / name, engine="torch")
    auto = load_model(MODELS / name, engine="auto")
    assert (on_ort.engine, on_torch.engine, auto.engine) == ("ort", "torch", "ort")  # auto: a fixed rule
    x = torch.rand((300,) + tuple(on_ort.input_shape), generator=torch.Generator().manual_seed(1))
    assert torch.allclose(on_ort(x), on_torch(x), atol=1e-5)
    for model in (on_ort, on_torch):  # normalisation is applied on both engines alike
        model.set_normalization([0.1], [0.5])
    assert torch.allclose(on_ort(x), on_torch(x), atol=1e-5)
    assert not torch.allclose(on_ort(x), load_model(MODELS / name, engine="ort")(x), atol=1e-3)
    assert on_ort.calls == 3 and on_ort.queries == 900  # counted like torch evaluations


def test_float64_stays_on_torch_and_says_why():
    from nnspec.models.loading import load_model

    model = load_model(MODELS / "digits_mlp.onnx", engine="ort", dtype=torch.float64)
    assert model.engine == "torch" and "float64" in model.describe()["engine_note"]


def test_the_engine_option_reaches_the_models(tmp_path):
    spec = _spec(tmp_path, SPEC.replace("property boom", "property medium"))
    on_torch = check([str(spec)], CheckOptions(cache=False, engine="torch"))
    on_ort = check([str(spec)], CheckOptions(cache=False, engine="ort"))
    assert [m["engine"] for m in on_torch.meta["models"]] == ["torch"]
    assert [m["engine"] for m in on_ort.meta["models"]] == ["ort"]
    assert [r.verdict for r in on_torch.records] == [r.verdict for r in on_ort.records]


# ---------------------------------------------------------------------- shards


def test_large_input_sets_are_cut_into_the_same_shards_for_every_executor(tmp_path):
    import numpy as np

    from nnspec.pipeline import load_specs
    from nnspec.planning.plan import plan
    from nnspec.planning.shard import shard_tasks

    digits = np.load(MODELS / "digits_test.npz")
    np.savez(tmp_path / "many.npz", x=np.concatenate([digits["x"]] * 4)[:150],
             y=np.concatenate([digits["y"]] * 4)[:150])
    spec = _spec(tmp_path, f"""model "{MODELS / 'digits_mlp.onnx'}"
output logits
inputs "{tmp_path / 'many.npz'}" key x labels key y first 140
domain [0, 1]
property p: robustness within linf(0.05) using mads(budget=100, seed=2, bound=crown)
""")  # (bound=crown: the default's branch and bound on 18 of the balls costs time and tests nothing here)
    tasks = shard_tasks(list(plan(load_specs([spec], {})).tasks))
    assert [t.shard for t in tasks] == [(0, 3), (1, 3), (2, 3)]
    cuts = [t.module.input_sets[0].select for t in tasks]
    assert [len(c) for c in cuts] == [47, 47, 46] and sum(cuts, ()) == tuple(range(140))
    inline = check([str(spec)], CheckOptions(cache=False))
    pooled = check([str(spec)], CheckOptions(cache=False, jobs=2))
    assert _essence(inline) == _essence(pooled)
    assert [r.input_id for r in inline.records] == [f"many.npz[{i}]" for i in range(140)]
    for run in (inline, pooled):  # one summary of the whole set, merged from its shards
        (summary,) = run.meta["input_sets"]
        assert summary["count"] == 140 and sum(summary["labels"].values()) == 140
    assert inline.meta["input_sets"][0]["correct"] == pooled.meta["input_sets"][0]["correct"]


def test_merged_summaries_warn_as_the_whole_set_would():
    from nnspec.models.sanity import InputSummary, merge, warnings_for

    def part(count, correct):
        s = InputSummary(spec="s", line=1, source="x.npz", model="m", count=count, labels_from="data",
                         correct=correct, value_min=0.0, value_max=1.0, domain_min=0.0, domain_max=1.0,
                         labels={"1": count}, outputs=10, domain_width=1.0, where="s:1:1")
        s.warnings = warnings_for(s)
        return s.to_json()
    bad_part = part(10, 2)  # 20% alone would warn
    assert bad_part["warnings"]
    merged = merge(part(90, 88), bad_part)
    assert merged["count"] == 100 and merged["correct"] == 90 and merged["warnings"] == []
    assert merge(part(10, 1), part(10, 2))["warnings"]  # 15%: the whole set warns
