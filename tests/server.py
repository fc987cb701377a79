"""Run ``python -m collab serve`` as a real subprocess on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from .wait import eventually_sync

__all__ = ["ROOT", "ServerProcess", "env_without_collab", "free_port"]

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """A collab server process; ``start``/``kill``/``stop`` it as often as needed.

    Port and data directory stay across restarts. Its output goes to
    ``output()`` (a log file next to the data directory).
    """

    def __init__(self, data_dir: Path, *args: str, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.args = args
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    http = url

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self, timeout: float = 15.0) -> ServerProcess:
        """Start the server and wait until ``/healthz`` answers."""
        command = [sys.executable, "-m", "collab", "serve", "--host", "127.0.0.1"]
        command += ["--port", str(self.port)]
        if "--redis-url" not in self.args:  # cluster mode keeps nothing on disk
            command += ["--data-dir", str(self.data_dir)]
        command += self.args
        with open(self.log_path, "ab") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env_without_collab()
            )
        try:
            eventually_sync(self._healthy, timeout)
        except AssertionError:
            raise TimeoutError(f"server not healthy within {timeout}s: {self.output()}") from None
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"server exited with {self.proc.returncode}: {self.output()}")
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no flushing, no goodbye."""
        assert self.proc is not None
        proc, self.proc = self.proc, None
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (graceful: flush, close sockets with 1001), wait, and check it exited 0."""
        if self.proc is None:
            return 0
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise
        assert proc.returncode == 0, f"server exited with {proc.returncode}: {self.output()}"
        return proc.returncode

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get(self, path: str) -> tuple[int, bytes]:
        """A GET request; returns (status, body), HTTP errors included."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as res:
                return res.status, res.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def request(self, method: str, path: str, body: bytes | None = None) -> int:
        req = urllib.request.Request(self.url + path, data=body, method=method)
        try:
            with urllib.request.urlopen(req, timeout=5) as res:
                return int(res.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def env_without_collab() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("COLLAB_")}
