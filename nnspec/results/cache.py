"""The result cache: a task whose inputs have not changed is not run again.

A task's key is a SHA-256 over everything its records depend on: the property as lowered (its
spans left out, so that editing another property or adding a comment above it changes nothing),
the spec's model/inputs/domain/normalisation/output statements, the bytes of the model file and of
every input file, the backend and its options, the run options that change results (device,
float64, require-proven, cross-check, engine, seed, budget, bound time) and nnspec's version and
code (``code_version``).
Records come back exactly as they were stored, with their spec position updated and ``cached``
set; the report says so.

Layout: ``DIR/records/<k[:2]>/<key>.json`` (one task's records, witnesses inline) and
``DIR/models/<sha256>.json`` (a model's input shape and output count, so that a run served from
the cache plans without loading the model). Entries are written atomically; a corrupt or foreign
entry is a miss. The folder can be moved or deleted at any time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from nnspec import __version__

CACHE_ENV = "NNSPEC_CACHE"  # a folder, or "off"
DEFAULT_DIR = ".nnspec-cache"
_PROJECT_MARKERS = (".git", "pyproject.toml", DEFAULT_DIR, "nnspec.toml")


_CODE: str | None = None


def code_version() -> str:
    """nnspec's version and a hash of its own code (the package's .py files and the grammar):
    results from other code are never served, also between two commits of one version. A few ms,
    once per process."""
    global _CODE
    if _CODE is None:
        from nnspec import resources

        package = Path(__file__).resolve().parent.parent
        digest = hashlib.sha256()
        files = sorted(package.rglob("*.py")) + [resources.grammar_path()]
        for f in files:
            digest.update(str(f.relative_to(package) if f.is_relative_to(package) else f.name).encode())
            digest.update(f.read_bytes())
        _CODE = f"{__version__}+{digest.hexdigest()[:16]}"
    return _CODE


def default_dir(cwd: Path | None = None) -> Path | None:
    """``$NNSPEC_CACHE`` (``off`` turns it off), else ``.nnspec-cache`` in the current folder when
    it is a project folder (it has .git, pyproject.toml or already a .nnspec-cache), else none."""
    env = os.environ.get(CACHE_ENV)
    if env is not None:
        return None if env.strip().lower() in ("", "0", "off", "no", "false") else Path(env)
    cwd = cwd or Path.cwd()
    return cwd / DEFAULT_DIR if any((cwd / m).exists() for m in _PROJECT_MARKERS) else None


def fingerprint(value: Any) -> Any:
    """A JSON-able, position-free description of a lowered object: dataclasses field by field
    (spans and source text left out), arrays and tensors by the hash of their bytes."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"@": type(value).__name__, **{f.name: fingerprint(getattr(value, f.name))
                                              for f in dataclasses.fields(value) if f.name not in ("span", "source")}}
    if isinstance(value, (list, tuple)):
        return [fingerprint(v) for v in value]
    if isinstance(value, dict):
        return {str(k): fingerprint(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, float):
        return repr(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a tensor
        value = value.detach().cpu().numpy()
    if hasattr(value, "tobytes") and hasattr(value, "dtype"):
        return {"array": str(value.dtype), "shape": list(value.shape),
                "sha256": hashlib.sha256(value.tobytes()).hexdigest()}
    if hasattr(value, "__slots__") or hasattr(value, "__dict__"):  # a plain object: its state
        state = {k: getattr(value, k) for k in getattr(value, "__slots__", ()) if hasattr(value, k)}
        state.update(getattr(value, "__dict__", {}))
        return {"@": type(value).__name__, **{k: fingerprint(v) for k, v in sorted(state.items())
                                              if not callable(v) and k not in ("span", "source")}}
    return repr(value)


class ResultCache:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.hits = 0
        self.stored = 0
        self._file_hashes: dict[str, str] = {}

    # ------------------------------------------------------------------ keys

    def file_hash(self, path: str | Path) -> str:
        from nnspec.files import sha256_of

        key = str(Path(path).resolve())
        if key not in self._file_hashes:
            try:
                self._file_hashes[key] = sha256_of(Path(path))
            except OSError:
                self._file_hashes[key] = "missing"
        return self._file_hashes[key]

    def key(self, task, model_path: str, run_options: dict[str, Any]) -> str:
        module = task.module
        header = {f.name: fingerprint(getattr(module, f.name)) for f in dataclasses.fields(module)
                  if f.name not in ("file", "source", "properties", "parameters")}
        inputs = [self.file_hash(s.path) for s in module.input_sets]
        doc = {"nnspec": code_version(), "module": header, "inputs": inputs, "property": fingerprint(task.prop),
               "input_set": task.input_set, "backend": task.backend, "options": fingerprint(dict(task.options)),
               "model": self.file_hash(model_path), "run": fingerprint(run_options)}
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=repr).encode()).hexdigest()

    # ------------------------------------------------------------------ records

    def get(self, key: str, task) -> tuple[list, list] | None:
        """(records, input-set summaries) stored under key, or None."""
        from nnspec.results.run import TaskRecord

        path = self.folder / "records" / key[:2] / f"{key}.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("key") != key:
                return None
            records = [TaskRecord.from_json(r) for r in data["records"]]
            summaries = [(tuple(k), dict(sm), list(w)) for k, sm, w in data.get("summaries", [])]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
        for r in records:  # the property may have moved in its file
            r.spec, r.line, r.column, r.cached = task.module.file, task.prop.span.line, task.prop.span.column, True
        self.hits += 1
        return records, summaries

    def put(self, key: str, records: list, summaries: list | None = None) -> None:
        from nnspec.results.store import clean, write_atomic

        if any(r.verdict == "error" for r in records):
            return  # an internal error is not a result: the next run tries again
        records = [clean(r.to_json()) for r in records]
        for r in records:
            if r.get("witness"):
                r["witness"].pop("file", None)  # this run's witness file: the next run writes its own
        doc = {"key": key, "nnspec": code_version(), "records": records,
               "summaries": [[list(k), sm, w] for k, sm, w in (summaries or [])]}
        try:
            write_atomic(self.folder / "records" / key[:2] / f"{key}.json", json.dumps(doc, allow_nan=False))
            self.stored += 1
        except (OSError, ValueError):
            pass  # a cache that cannot be written is no cache, not an error

    # ------------------------------------------------------------------ model facts

    def model_info(self, path: str) -> dict | None:
        try:
            return json.loads((self.folder / "models" / f"{self.file_hash(path)}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def put_model_info(self, path: str, info: dict) -> None:
        from nnspec.results.store import write_atomic

        try:
            write_atomic(self.folder / "models" / f"{self.file_hash(path)}.json", json.dumps(info))
        except OSError:
            pass

    # ------------------------------------------------------------------ whole runs

    def run_key(self, files: list[Path], models: list[str], run_options: dict[str, Any]) -> str | None:
        """A key for a whole ``nnspec check`` over .nnspec files: their bytes, the bytes of every
        file that a quoted string in them names (models, inputs, boxes; relative to the spec or
        the current folder), the --model files and the run options. A hit skips lowering and
        loading altogether (no torch import); anything else falls back to the per-task cache."""
        import re

        if any(f.suffix != ".nnspec" for f in files):
            return None
        parts: list[Any] = [code_version(), fingerprint(run_options), [self.file_hash(m) for m in models]]
        for f in files:
            try:
                text = f.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                return None
            named = []
            for literal in sorted(set(re.findall(r'"((?:[^"\\\n]|\\.)*)"', text))):
                for base in (f.parent, Path.cwd()):
                    candidate = base / literal
                    try:
                        if literal and candidate.is_file():
                            named.append((literal, self.file_hash(candidate)))
                            break
                    except OSError:
                        continue
            parts.append([str(f), hashlib.sha256(text.encode()).hexdigest(), named])
        return hashlib.sha256(json.dumps(parts, sort_keys=True, default=repr).encode()).hexdigest()

    def get_run(self, key: str) -> dict | None:
        try:
            data = json.loads((self.folder / "runs" / f"{key}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("key") != key:
            return None
        self.hits += len(data.get("result", {}).get("records", []))
        return data["result"]

    def put_run(self, key: str, result_json: dict) -> None:
        from nnspec.results.store import clean, write_atomic

        try:
            write_atomic(self.folder / "runs" / f"{key}.json",
                         json.dumps({"key": key, "result": clean(result_json)}, allow_nan=False))
        except (OSError, ValueError):
            pass
