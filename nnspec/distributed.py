"""The Ray executor: plan tasks on a Ray cluster (``--executor ray``; ``pip install 'nnspec[ray]'``).

Every actor holds one ``Worker`` (the same one the in-process and process-pool executors run), so
a task's records are the same whichever executor ran it. The files a task reads (its model, input
sets, label files, reference inputs) travel by content: the driver puts each file's bytes in Ray's
object store once, keyed by its SHA-256, and an actor writes them to a local folder
(``$TMPDIR/nnspec-ray-files/<hash>/<name>``) the first time it needs them, so workers on other
machines need no shared file system and an unchanged model is read once per machine.

Without ``--address`` a private local cluster is started on 127.0.0.1 and shut down at the end;
with one, nnspec connects to that cluster (``ray start --head`` on one machine, ``ray start
--address=...`` on the others) and leaves it running.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from collections import deque
from pathlib import Path
from typing import Iterator

from nnspec.errors import UsageError
from nnspec.execution import TaskOutcome, WorkItem, Worker, _one_line, error_records, item_files, relocate, \
    set_threads


def _ray():
    try:
        import ray
    except ImportError:
        raise UsageError("--executor ray needs Ray: pip install 'nnspec[ray]'") from None
    return ray


# ---------------------------------------------------------------------- files by content


def pack(path: str) -> tuple[str, str, str, bytes]:
    """(hash, name, kind, payload) of a file, or of a folder (kind "dir") as a tar archive."""
    p = Path(path)
    if p.is_dir():
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for child in sorted(p.rglob("*")):
                if child.is_file():
                    tar.add(child, arcname=str(child.relative_to(p)), recursive=False)
        payload, kind = buffer.getvalue(), "dir"
    else:
        payload, kind = p.read_bytes(), "file"
    digest = hashlib.sha256(kind.encode() + b"\0" + payload).hexdigest()[:32]
    return digest, p.name, kind, payload


def materialise(root: Path, digest: str, name: str, kind: str, payload_ref, get) -> str:
    """The local path of a shipped file or folder, written (atomically: concurrent actors on one
    machine see it whole or not at all) the first time."""
    target = root / digest / name
    if target.exists():
        return str(target)
    payload = get(payload_ref)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".incoming-"))
    try:
        incoming = staging / name
        if kind == "dir":
            incoming.mkdir()
            with tarfile.open(fileobj=io.BytesIO(payload), mode="r") as tar:
                tar.extractall(incoming, filter="data")
        else:
            incoming.write_bytes(payload)
        try:
            os.rename(incoming, target)
        except OSError:
            if not target.exists():  # another actor won the race otherwise
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(target)


def files_root() -> Path:
    return Path(os.environ.get("NNSPEC_RAY_FILES") or Path(tempfile.gettempdir()) / "nnspec-ray-files")


class _Actor:
    """One Ray actor: a Worker with its models, and the shipped files it has written locally."""

    def __init__(self, options, threads: int):
        set_threads(threads)
        self.worker = Worker(options)
        self.root = files_root()

    def run(self, item: WorkItem, shipped: dict[str, tuple[str, str, str, list]]) -> TaskOutcome:
        import ray

        paths = {original: materialise(self.root, digest, name, kind, ref[0], ray.get)
                 for original, (digest, name, kind, ref) in shipped.items()}
        return self.worker.run(relocate(item, paths))

    def ready(self) -> str:
        import socket

        return socket.gethostname()


class RayExecutor:
    """Tasks on Ray actors, one task per actor at a time, outcomes in completion order. A task
    whose actor dies (a crash in native code, a lost node) becomes an error record and the actor
    is replaced."""

    name = "ray"

    def __init__(self, options, jobs: int | None = None, threads: int | None = None, address: str | None = None):
        ray = _ray()
        self.ray = ray
        self.options = options
        self.owns_cluster = address is None and not ray.is_initialized()
        try:
            if self.owns_cluster:
                ray.init(num_cpus=max(1, int(jobs or 0)) if jobs and jobs > 1 else None,
                         _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False,
                         configure_logging=False, logging_level="error")
            elif not ray.is_initialized():
                ray.init(address=address, log_to_driver=False, configure_logging=False, logging_level="error")
        except Exception as err:
            where = f"--address {address}" if address else "a local Ray cluster"
            raise UsageError(f"cannot start {where}: {_one_line(err).removeprefix('internal error: ')}") from None
        resources = ray.cluster_resources()
        cpus = int(resources.get("CPU", 1)) or 1
        gpus = float(resources.get("GPU", 0))
        cuda = str(getattr(options, "device", "cpu")).startswith("cuda")
        if cuda and gpus <= 0:
            raise UsageError("--device cuda with --executor ray: the cluster has no GPU")
        # one actor per CPU by default (per GPU with --device cuda); each gets its share of the
        # cluster's CPUs as intra-op threads, and its share of a GPU
        self.n_actors = int(jobs) if jobs and jobs > 1 else (max(1, int(gpus)) if cuda else cpus)
        self.threads = int(threads or max(1, cpus // self.n_actors))
        needs = {"num_cpus": min(1.0, cpus / self.n_actors)}
        if cuda:
            needs["num_gpus"] = min(1.0, gpus / self.n_actors)
        self.actor_class = ray.remote(max_restarts=0, **needs)(_Actor)
        self.actors = [self._new_actor() for _ in range(self.n_actors)]
        self.shipped: dict[str, tuple[str, str, str, list]] = {}
        self.workers = {"actors": self.n_actors, "threads": self.threads, "cluster_cpus": cpus,
                        "cluster_gpus": gpus, "address": address or "local"}

    def _new_actor(self):
        return self.actor_class.remote(self.options, self.threads)

    def _ship(self, item: WorkItem) -> dict[str, tuple[str, str, str, list]]:
        out = {}
        for path in item_files(item):
            if path not in self.shipped:
                if not Path(path).exists():
                    continue  # the worker reports a missing file as the in-process run would
                digest, name, kind, payload = pack(path)
                # the reference sits inside a list so that Ray hands it to the actor unresolved
                self.shipped[path] = (digest, name, kind, [self.ray.put(payload)])
            out[path] = self.shipped[path]
        return out

    def run(self, items: list[WorkItem], on_start=None) -> Iterator[TaskOutcome]:
        ray = self.ray
        queue = deque(items)
        running: dict = {}  # object ref -> (item, actor)
        idle = list(self.actors)
        while queue or running:
            while queue and idle:
                item = queue.popleft()
                actor = idle.pop()
                running[actor.run.remote(item, self._ship(item))] = (item, actor)
            done, _ = ray.wait(list(running), num_returns=1)
            ref = done[0]
            item, actor = running.pop(ref)
            if on_start:
                on_start(item)
            try:
                outcome = ray.get(ref)
            except ray.exceptions.RayActorError as err:
                self.actors.remove(actor)
                actor = self._new_actor()
                self.actors.append(actor)
                outcome = self._failed(item, err)
            except ray.exceptions.RayError as err:
                outcome = self._failed(item, getattr(err, "cause", None) or err)
            idle.append(actor)
            yield outcome

    def _failed(self, item: WorkItem, err: BaseException) -> TaskOutcome:
        message = _one_line(err)
        return TaskOutcome(item.index, error_records(item.task, None, None, message, self.options.require_proven),
                           error=message)

    def close(self, abort: bool = False) -> None:
        for actor in self.actors:
            try:
                self.ray.kill(actor)
            except Exception:
                pass
        self.actors = []
        if self.owns_cluster:
            self.ray.shutdown()
