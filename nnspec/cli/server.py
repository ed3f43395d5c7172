"""A warm server for the command line: `nnspec server start`, then every `nnspec` command of
this user, this interpreter and this version of nnspec's code runs in a fork of it.

Importing torch takes about 2 s on a 2-core machine, longer than the rest of a small check; a
developer editing a spec and rerunning it, or a CI job that calls nnspec once per spec file,
pays it every time. The server imports torch, onnxruntime and nnspec once, then forks a child per
command: the child gets the client's standard streams (passed over a Unix socket), working
folder, environment and arguments, runs the command exactly as the client would have, and sends
back its exit code. Nothing is shared between commands: every child starts from the server's
state after the imports, which has run no model and started no threads (forking a process with
running thread pools is unsafe; the server checks it has one thread before it serves).

The client is this module's ``entry``: the console script and ``python -m nnspec``. It forwards
a command when a server for the same code is listening (``NNSPEC_SERVER=off`` never forwards), and
runs it in-process otherwise; Ctrl-C and termination signals are passed on to the child, which
also takes the client's umask and CPU affinity (not its resource limits or priority).
A server is found by a key over the interpreter, nnspec's version and its source files' sizes and
modification times, so a server started before an edit or an upgrade is never used (it exits
after its idle time). Sockets live in a folder only this user can enter (``$NNSPEC_SERVER_DIR``,
else ``$XDG_RUNTIME_DIR/nnspec``, else ``/tmp/nnspec-<uid>``), and the server serves only
connections from its own user.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import struct
import sys
import time
from pathlib import Path

SERVER_ENV = "NNSPEC_SERVER"  # "off": never forward a command to a server
DIR_ENV = "NNSPEC_SERVER_DIR"
IDLE = 1800.0  # seconds without a command after which a server exits
_HEADER = struct.Struct("!I")
_PACKAGE = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------- where


def server_dir() -> Path:
    if os.environ.get(DIR_ENV):
        return Path(os.environ[DIR_ENV])
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "nnspec"
    return Path("/tmp") / f"nnspec-{os.getuid()}"


def code_key() -> str:
    """What a server's code must match: the interpreter, nnspec's version and every source file's
    size and modification time (a server from before an edit or an upgrade is not used)."""
    from nnspec import __version__

    h = hashlib.sha256(f"{sys.executable}\0{sys.prefix}\0{__version__}".encode())
    for folder in (_PACKAGE, _PACKAGE.parent / "grammar"):
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if name.endswith((".py", ".lark", ".html", ".j2", ".css", ".js")):
                    st = os.stat(os.path.join(root, name))
                    h.update(f"{root}/{name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest()[:20]


def socket_path(key: str | None = None) -> Path:
    return server_dir() / f"{key or code_key()}.sock"


def _private_dir() -> Path:
    folder = server_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = folder.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise OSError(f"{folder}: not a private folder of this user (mode {oct(st.st_mode & 0o777)})")
    return folder


# ---------------------------------------------------------------------------------------------- client


def entry() -> None:  # pragma: no cover - the console script (its parts are tested)
    """The `nnspec` command: forwarded to a warm server where one serves this code, else run here."""
    argv = sys.argv[1:]
    if argv[:1] != ["server"]:
        code = forward(argv)
        if code is not None:
            sys.exit(code)
    from nnspec.cli.main import main

    sys.exit(main(argv))


def forward(argv: list[str]) -> int | None:
    """Run a command in a warm server's fork: its exit code, or None where no server takes it (none
    listening for this code, ``NNSPEC_SERVER=off``, standard streams that cannot be passed)."""
    started = time.perf_counter()
    if os.environ.get(SERVER_ENV, "").lower() in ("off", "0", "no", "false"):
        return None
    try:
        path = socket_path()
        if not path.exists() or not _ours(path):
            return None
        for fd in (0, 1, 2):
            os.fstat(fd)
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(5.0)
        conn.connect(str(path))
        # the streams and the environment go only to a server of this user
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        if struct.unpack("3i", creds)[1] != os.getuid():
            conn.close()
            return None
    except OSError:
        return None
    try:
        mask = os.umask(0o022)
        os.umask(mask)
        request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "started": started,
                              "encoding": [getattr(f, "encoding", None) or "utf-8" for f in (sys.stdout, sys.stderr)],
                              "umask": mask, "cpus": sorted(_affinity())})
        data = request.encode()
        message = _HEADER.pack(len(data)) + data
        sent = socket.send_fds(conn, [message], [0, 1, 2])
        conn.sendall(message[sent:])
        conn.settimeout(None)
        pid = struct.unpack("!q", _recv_exact(conn, 8))[0]
    except (OSError, ConnectionError, struct.error):
        conn.close()
        return None  # the server is going away: run here
    forwarded = {}

    def pass_on(signum, _frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        forwarded[sig] = signal.signal(sig, pass_on)
    try:
        while True:
            try:
                return struct.unpack("!i", _recv_exact(conn, 4))[0]
            except InterruptedError:
                continue
    except (OSError, ConnectionError, struct.error):
        print(f"nnspec: the server's process {pid} ended without an exit code", file=sys.stderr)
        return 3
    finally:
        for sig, old in forwarded.items():
            signal.signal(sig, old)
        conn.close()


def _affinity() -> set[int]:
    try:
        return os.sched_getaffinity(0)
    except (AttributeError, OSError):
        return set()


def _ours(path: Path) -> bool:
    """The socket and its folder belong to this user, and nobody else may enter the folder."""
    try:
        folder, sock = os.stat(path.parent), os.stat(path)
    except OSError:
        return False
    uid = os.getuid()
    return folder.st_uid == uid and not folder.st_mode & 0o077 and sock.st_uid == uid


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = conn.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed")
        out += chunk
    return out


# ---------------------------------------------------------------------------------------------- server


def preload() -> int:
    """Everything a command imports, so that no fork imports it again (onnx2torch alone takes
    ~2.5 s after torch); returns the threads started by something other than OpenBLAS. Imports
    only: no model is run and no thread pool started (a fork inherits them half-alive).
    numpy's and scipy's OpenBLAS start their pools at import and stop them around a fork
    (pthread_atfork), as every multiprocessing fork of a numpy program relies on; onnxruntime's
    import starts a thread of its own, so it is left to the forks (0.03 s)."""
    import numpy  # noqa: F401
    import scipy.optimize  # noqa: F401

    blas = _threads()
    import jinja2  # noqa: F401
    import onnx  # noqa: F401
    import torch  # noqa: F401

    import nnspec.backends.game  # noqa: F401
    import nnspec.backends.quant  # noqa: F401
    import nnspec.bounds  # noqa: F401
    import nnspec.cli.main  # noqa: F401
    import nnspec.models.loading  # noqa: F401
    import nnspec.pipeline  # noqa: F401
    import nnspec.report.html  # noqa: F401
    import nnspec.report.junit  # noqa: F401

    for optional in ("onnx2torch", "skimage.segmentation"):
        try:
            __import__(optional)
        except ImportError:
            pass
    return _threads() - blas


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 1


def serve(idle: float = IDLE, ready=None) -> None:
    """Listen until ``idle`` seconds pass without a command, or a stop request comes."""
    key = code_key()
    folder = _private_dir()
    started = preload()
    if started > 0:
        raise RuntimeError(f"the imports started {started} threads: forking would be unsafe")
    path = folder / f"{key}.sock"
    tmp = folder / f"{key}.{os.getpid()}.tmp"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    tmp.unlink(missing_ok=True)
    listener.bind(str(tmp))
    listener.listen(64)
    os.replace(tmp, path)  # appears only once it listens
    mine = os.stat(path).st_ino  # (a socket fd's own inode is not its file's)
    (folder / f"{key}.pid").write_text(str(os.getpid()))
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    if ready is not None:
        ready(path)
    last = time.monotonic()
    try:
        while not stop:
            listener.settimeout(min(5.0, max(0.05, idle - (time.monotonic() - last))))
            try:
                conn, _ = listener.accept()
            except (socket.timeout, InterruptedError):
                if time.monotonic() - last >= idle or not _owns(path, mine):
                    break
                continue
            last = time.monotonic()
            if _handle(conn, listener) == "stop":
                break
    finally:
        if _owns(path, mine):
            path.unlink(missing_ok=True)
            (folder / f"{key}.pid").unlink(missing_ok=True)
        listener.close()


def _owns(path: Path, inode: int) -> bool:
    """Whether ``path`` is still this server's socket (a second server may have replaced it)."""
    try:
        return os.stat(path).st_ino == inode
    except OSError:
        return False


def _handle(conn: socket.socket, listener: socket.socket) -> str | None:
    fds: list[int] = []
    data = b""
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        if struct.unpack("3i", creds)[1] != os.getuid():
            return None
        conn.settimeout(10.0)
        data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 16, 3)
        while len(data) < _HEADER.size:
            data += _recv_exact(conn, _HEADER.size - len(data))
        size = _HEADER.unpack(data[:_HEADER.size])[0]
        body = data[_HEADER.size:]
        body += _recv_exact(conn, size - len(body)) if size > len(body) else b""
        request = json.loads(body)
        if request.get("stop"):
            conn.sendall(b"ok")
            return "stop"
        if len(fds) != 3:
            return None
        # logged before the fork (flushed: the child must not inherit the buffer), so that the line
        # is there once the client has its exit code
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} command: nnspec {' '.join(request['argv'])} "
              f"(in {request['cwd']})", flush=True)
        if os.fork() == 0:
            _child(conn, listener, fds, request)  # never returns
    except (OSError, ValueError, ConnectionError, struct.error) as err:
        if data:  # (a connection closed before any request is `start`'s or `status`'s probe)
            print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} a request failed: {type(err).__name__}: {err}", flush=True)
        return None
    finally:
        for fd in fds:
            os.close(fd)
        conn.close()
    return None


def _child(conn: socket.socket, listener: socket.socket, fds: list[int], request: dict) -> None:
    """A forked command: the client's streams, folder, environment and arguments; the exit code
    back on the connection."""
    code = 3
    try:
        listener.close()
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for target, fd in zip((0, 1, 2), fds):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.umask(int(request.get("umask", 0o022)))
        if request.get("cpus") and hasattr(os, "sched_setaffinity"):  # (threads default to the client's cores)
            try:
                os.sched_setaffinity(0, request["cpus"])
            except OSError:
                pass
        out_enc, err_enc = request.get("encoding") or ("utf-8", "utf-8")
        sys.stdin = open(0, "r", closefd=False)  # noqa: SIM115
        sys.stdout = open(1, "w", encoding=out_enc, errors="backslashreplace", closefd=False,  # noqa: SIM115
                          buffering=1 if os.isatty(1) else -1)
        sys.stderr = open(2, "w", encoding=err_enc, errors="backslashreplace", closefd=False,  # noqa: SIM115
                          buffering=1)
        conn.sendall(struct.pack("!q", os.getpid()))
        from rich.console import Console

        import importlib

        cli = importlib.import_module("nnspec.cli.main")
        for module in (cli, importlib.import_module("nnspec.cli.interop")):  # this terminal's colours
            module.err_console = Console(stderr=True, highlight=False, soft_wrap=True)
        code = cli.main(request["argv"], started=request.get("started"))
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except KeyboardInterrupt:
        code = 130
    except BaseException as err:  # noqa: BLE001 - whatever happens, the client gets a code
        try:
            print(f"internal error in the server's process: {type(err).__name__}: {err}", file=sys.stderr)
        except Exception:  # noqa: BLE001
            pass
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:  # noqa: BLE001
            pass
        try:
            conn.sendall(struct.pack("!i", int(code)))
        except Exception:  # noqa: BLE001
            pass
        os._exit(int(code) & 0xFF)


# ---------------------------------------------------------------------------------------------- control


def start(idle: float = IDLE, wait: float = 60.0) -> Path:
    """Start a server in the background (a new session, no terminal) and wait until it listens."""
    import subprocess

    path = socket_path()
    if _alive(path):
        return path
    folder = _private_dir()
    log = open(folder / "server.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "nnspec", "server", "run", "--idle", str(idle)],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                            env={**os.environ, SERVER_ENV: "off"}, close_fds=True)
    log.close()
    until = time.monotonic() + wait
    while time.monotonic() < until:
        if _alive(path):
            return path
        if proc.poll() is not None:
            last = (folder / "server.log").read_text(errors="replace").strip().splitlines()[-1:] or [""]
            raise OSError(f"the server exited ({proc.returncode}): {last[0]}")
        time.sleep(0.05)
    raise TimeoutError(f"no server listening at {path} after {wait:g} s (see {folder / 'server.log'})")


def stop() -> bool:
    """Ask this code's server to exit; whether one was listening."""
    path = socket_path()
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(5.0)
        conn.connect(str(path))
        data = json.dumps({"stop": True}).encode()
        socket.send_fds(conn, [_HEADER.pack(len(data)) + data], [])
        conn.recv(2)
        conn.close()
    except OSError:
        return False
    until = time.monotonic() + 5.0
    while path.exists() and time.monotonic() < until:
        time.sleep(0.02)
    return True


def _alive(path: Path) -> bool:
    if not path.exists():
        return False
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(1.0)
        conn.connect(str(path))
        conn.close()
        return True
    except OSError:
        return False


def status() -> tuple[Path, bool, int | None]:
    path = socket_path()
    pid_file = path.with_suffix(".pid")
    pid = int(pid_file.read_text()) if pid_file.exists() and pid_file.read_text().strip().isdigit() else None
    return path, _alive(path), pid
