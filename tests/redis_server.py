"""A real ``redis-server`` for tests: own loopback port, own temp dir, AOF ``always``.

Never the system instance. ``RedisServer.kill()``/``restart()`` for fault tests.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

from tests.needs import require

__all__ = ["RedisServer", "require_redis"]


def require_redis() -> None:
    require(shutil.which("redis-server") is not None, "redis-server is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """``redis-server`` with ``--appendonly yes --appendfsync always`` in ``dir``."""

    def __init__(self, dir: Path, *extra: str) -> None:
        self.dir = dir
        self.extra = extra
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        dir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        command = [
            "redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
            "--save", "", "--appendonly", "yes", "--appendfsync", "always",
            "--dir", str(self.dir), "--protected-mode", "yes", "--daemonize", "no",
            "--loglevel", "warning", "--logfile", str(self.dir / "redis.log"),
            *self.extra,
        ]  # fmt: skip
        self.process = subprocess.Popen(command)
        deadline = time.monotonic() + timeout
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = (
                        (self.dir / "redis.log").read_text()
                        if (self.dir / "redis.log").exists()
                        else ""
                    )
                    raise RuntimeError(f"redis-server did not start: {log[-2000:]}") from None
                time.sleep(0.02)
            finally:
                client.close()
        return self

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(10)

    def restart(self) -> None:
        self.kill(signal.SIGKILL)
        self.start()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            client = self.client()
            client.shutdown(nosave=True)
        except redis.RedisError:
            pass
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
