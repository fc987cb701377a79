"""The servers `make bench` compares, and how each is started, pinned and stopped.

Every server runs as its own process pinned to one core (``taskset -c 0``), in
its own session, with ``PR_SET_PDEATHSIG`` so it dies with the benchmark even
if the benchmark is killed; ``stop_all()`` stops what is still running (the
benchmark calls it on every exit path, Ctrl-C included).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SERVER_CORE = "0"
GEN_CORE = "1"
NODE = shutil.which("node") or "node"
YJS_SERVER = HERE / "node_modules" / "@y" / "websocket-server" / "src" / "server.js"

__all__ = ["PEERS", "Peer", "Server", "free_port", "stop_all"]


# The other servers have no abuse limits; collab's are switched off (0 = off),
# through the environment so that an older collab without one of them still starts.
_NO_LIMITS = {
    f"COLLAB_{name}": "0"
    for name in (
        "RATE_MESSAGES",
        "RATE_BYTES",
        "MAX_CONNECTIONS_PER_IP",
        "MAX_CONNECTIONS_PER_DOC",
        "MAX_DOCUMENTS",
    )
}
# The big-document scenario uploads a 50 MB state in one update: room for it (2x, see StateBudget).
_NO_LIMITS["COLLAB_MAX_DOCUMENT_BYTES"] = str(512 << 20)


@dataclass(frozen=True)
class Peer:
    """One server configuration in the comparison."""

    key: str
    label: str
    crdt: bool  # answers y-protocols sync (the relay does not)
    kind: str  # collab | pycrdt | yjs | relay
    collab_args: tuple[str, ...] = ()
    persistent: bool = False

    def command(self, port: int, data_dir: str | None) -> tuple[list[str], dict[str, str]]:
        env = dict(os.environ)
        if self.kind == "collab":
            cmd = [sys.executable, "-m", "collab", "serve", "--host", "127.0.0.1"]
            cmd += ["--port", str(port), *self.collab_args]
            if self.persistent:
                assert data_dir is not None
                cmd += ["--data-dir", data_dir]
            env["PYTHONPATH"] = str(ROOT)
            env.update(_NO_LIMITS)  # one client IP opens thousands of sockets at full speed
        elif self.kind == "pycrdt":
            cmd = [sys.executable, str(HERE / "pycrdt_server.py"), "--port", str(port)]
        elif self.kind == "yjs":
            cmd = [NODE, str(YJS_SERVER)]
            env.update(HOST="127.0.0.1", PORT=str(port))
        else:
            cmd = [sys.executable, str(HERE / "relay.py"), "--port", str(port)]
        return ["taskset", "-c", SERVER_CORE, *cmd], env


def _collab(key: str, label: str, *args: str, persistent: bool = True) -> Peer:
    return Peer(key, label, True, "collab", args, persistent)


def _hung_listener() -> int:
    """A loopback port that accepts connections (the kernel's backlog) and never answers."""
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(4096)
    _keep.append(hung)  # open as long as the benchmark runs
    return int(hung.getsockname()[1])


_keep: list[socket.socket] = []
_WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
_ALL_EVENTS = "document.created,document.changed,document.deleted,version.created," \
    "document.restored,connection.opened,connection.closed"  # fmt: skip


def _webhooks_to_nowhere() -> tuple[str, ...]:
    """Every event to a receiver that hangs and to a port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        refused = int(s.getsockname()[1])
    return (
        "--webhook", f"http://127.0.0.1:{_hung_listener()}/hook",
        "--webhook", f"http://127.0.0.1:{refused}/hook",
        "--webhook-secret", _WEBHOOK_SECRET, "--webhook-events", _ALL_EVENTS,
    )  # fmt: skip


PEERS = {
    p.key: p
    for p in [
        _collab("collab", "collab (fsync interval)", "--fsync", "interval"),
        _collab("collab-mem", "collab --memory", "--memory", persistent=False),
        Peer("pycrdt-ws", "pycrdt-websocket", True, "pycrdt"),
        Peer("yjs-ref", "y-websocket-server (Node)", True, "yjs"),
        Peer("relay", "relay (no CRDT)", False, "relay"),
        _collab("collab-always", "collab --fsync always", "--fsync", "always"),
        _collab("collab-never", "collab --fsync never", "--fsync", "never"),
        _collab("collab-webhooks", "collab, webhooks: hung + refused", *_webhooks_to_nowhere()),
    ]
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


_running: list[subprocess.Popen[bytes]] = []


def spawn(
    cmd: list[str], env: dict[str, str] | None, log: Path, **kw: object
) -> subprocess.Popen[bytes]:
    """Start a child in its own session that dies with us; track it for ``stop_all``."""
    out = open(log, "ab")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=kw.pop("stdout", out),  # type: ignore[arg-type]
        stderr=out,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_die_with_parent,
        **kw,  # type: ignore[arg-type]
    )
    out.close()
    _running.append(proc)
    return proc


def terminate(proc: subprocess.Popen[bytes], grace: float = 15.0) -> int | None:
    """SIGTERM, wait ``grace`` seconds, then SIGKILL. Returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    if proc in _running:
        _running.remove(proc)
    return proc.returncode


def stop_all() -> None:
    for proc in list(_running):
        terminate(proc, grace=5.0)


@dataclass
class Server:
    """A running server of one peer; a context manager that always stops it."""

    peer: Peer
    workdir: Path
    data_dir: str | None = None
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    ps: psutil.Process | None = None
    startup_rss: int = 0
    log: Path = field(default_factory=Path)

    def __post_init__(self) -> None:
        if self.peer.persistent and self.data_dir is None:
            self.data_dir = tempfile.mkdtemp(prefix="data-", dir=self.workdir)

    @property
    def base(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> Server:
        self.port = free_port()
        cmd, env = self.peer.command(self.port, self.data_dir)
        self.log = self.workdir / f"{self.peer.key}.log"
        self.proc = spawn(cmd, env, self.log)
        self._wait_ready()
        self.ps = psutil.Process(self.proc.pid)
        time.sleep(0.3)
        self.startup_rss = self.ps.memory_info().rss
        return self

    def _wait_ready(self, timeout: float = 30.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.peer.key} exited: {self.tail()}")
            try:
                if self.peer.kind == "collab":
                    url = f"http://127.0.0.1:{self.port}/healthz"
                    with urllib.request.urlopen(url, timeout=1) as r:
                        if r.status == 200:
                            return
                else:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.peer.key} did not start in {timeout}s: {self.tail()}")

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        code = terminate(self.proc)
        self.proc = None
        return code

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
