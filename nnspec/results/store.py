"""Writing results so that nothing computed is lost: one JSON line per finished task, flushed
and synced as it finishes, and the final JSON written atomically (temp file + rename).

Witness inputs are saved as ``.npy`` files beside the JSON (``<stem>.witnesses/``) and the record
names the file; the HTML report embeds them, so it stays self-contained.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from nnspec.errors import DataError
from nnspec.results.run import SCHEMA, RunResult, TaskRecord


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ResultStore:
    """Streams records as they finish; ``finish`` writes the whole JSON.

    Records stream to ``<stem>.<pid>.partial.jsonl``, which ``finish`` moves to ``<stem>.jsonl``;
    the JSON is written atomically. Two runs writing the same ``--json`` path therefore never mix
    their lines: each file is one run's, whole (the last run to finish wins). A run killed before
    ``finish`` leaves its partial file, which ``nnspec report`` reads like any JSONL."""

    def __init__(self, json_path: Path | None):
        self.json_path = json_path
        self.lines_path = json_path.with_suffix(".jsonl") if json_path else None
        self.partial_path = json_path.with_name(f"{json_path.stem}.{os.getpid()}.partial.jsonl") if json_path else None
        self.witness_dir = json_path.with_name(json_path.stem + ".witnesses") if json_path else None
        self._fh = None
        if self.partial_path:
            self.partial_path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.partial_path, "w", encoding="utf-8")

    def save_witness(self, record: TaskRecord, x: Any) -> None:
        if self.witness_dir is None or record.witness is None:
            return
        self.witness_dir.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{Path(record.spec).stem}.{record.property}.{record.input_id}."
                                                 f"{record.norm}_{record.radius:g}.{Path(record.model).stem}")
        path = self.witness_dir / f"{name}.npy"
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".npy", dir=self.witness_dir)
        with os.fdopen(fd, "wb") as fh:  # written whole, then moved: a concurrent run never sees half a file
            np.save(fh, np.asarray(x, dtype=np.float32))
        os.replace(tmp, path)
        record.witness["file"] = str(path)

    def add(self, record: TaskRecord) -> None:
        if self._fh is not None:
            self._fh.write(json.dumps(clean(record.to_json()), allow_nan=False, default=_default) + "\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def finish(self, result: RunResult) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
            os.replace(self.partial_path, self.lines_path)
        if self.json_path is not None:
            write_json(self.json_path, result)


def write_json(path: Path, result: RunResult) -> None:
    """The whole results document, written atomically: readers see the old file or the new one."""
    write_atomic(path, json.dumps(clean(result.to_json()), indent=1, allow_nan=False, default=_default))


def clean(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become null (JSON has no inf or nan)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return clean(value.item())
    return value


def _default(value: Any) -> Any:
    raise TypeError(f"not serialisable: {type(value).__name__}")


def load_results(path: Path) -> RunResult:
    """Read a results JSON, or a .jsonl of records from an interrupted run.

    A JSONL written by a run that was killed may end in a torn line: every complete line is kept,
    the torn tail is dropped and counted (``meta["dropped_lines"]``). A bad line before the last is
    an error naming its line number; so is any record that is not a record.
    """
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise DataError(f"{path}: cannot read results ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.start}); not an nnspec results file") from None
    if path.suffix == ".jsonl":
        return _load_lines(path, text)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}:{err.colno}: not valid JSON ({err.msg})") from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise DataError(f"{path}: not an nnspec results file (schema {SCHEMA} expected)")
    try:
        return RunResult.from_json(data)
    except ValueError as err:
        raise DataError(f"{path}: {err}") from None


def _load_lines(path: Path, text: str) -> RunResult:
    lines = text.split("\n")
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    records, dropped = [], 0
    for k, (number, line) in enumerate(numbered):
        try:
            data = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as err:
            if k == len(numbered) - 1 and not text.endswith("\n"):  # a torn last line: the run was killed
                dropped = 1
                break
            raise DataError(f"{path}:{number}: not valid JSON ({getattr(err, 'msg', 'nested too deeply')})") from None
        try:
            records.append(TaskRecord.from_json(data))
        except ValueError as err:
            raise DataError(f"{path}:{number}: {err}") from None
    result = RunResult(records, {"dropped_lines": dropped} if dropped else {}, interrupted=True)
    return result
