"""Browser-test helpers: Debian's Chromium through Playwright, and a collab server process.

Playwright cannot download its own browsers here, so the tests drive the system
Chromium (``apt-get install chromium``). Without it they skip, except in CI
(``CI`` set), where a missing browser must fail loudly rather than pass quietly.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .needs import require

__all__ = [
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "ROOT",
    "ServerProcess",
    "launch_chromium",
    "require",
    "wait_until",
]

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = os.environ.get("COLLAB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def launch_chromium(playwright: Any) -> Any:
    """Launch headless system Chromium, or skip (fail in CI) when it is missing."""
    require(
        Path(CHROMIUM).is_file() or shutil.which(CHROMIUM) is not None,
        f"Chromium not found at {CHROMIUM}: apt-get install chromium",
    )
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


def wait_until(check: Callable[[], object], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll ``check()`` until it returns something truthy; return it.

    Raises:
        AssertionError: the last AssertionError from ``check``, or a timeout.
    """
    deadline = time.monotonic() + timeout
    while True:
        error: AssertionError | None = None
        try:
            result = check()
            if result:
                return result
        except AssertionError as exc:
            error = exc
        if time.monotonic() > deadline:
            raise error or AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)  # a polling interval, not a wait for something to happen


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """``python -m collab serve`` on a free loopback port; ``stop``/``start`` keep port and data."""

    def __init__(self, data_dir: Path, *extra: str) -> None:
        self.data_dir = data_dir
        self.port = _free_port()
        self.extra = extra
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> None:
        """Start the server and wait until ``/healthz`` answers."""
        cmd = [sys.executable, "-m", "collab", "serve", "--host", "127.0.0.1"]
        cmd += ["--port", str(self.port), "--data-dir", str(self.data_dir)]
        cmd += ["--log-level", "warning", *self.extra]
        self.proc = subprocess.Popen(cmd, cwd=ROOT)
        wait_until(self._healthy, timeout)

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"collab serve exited with {self.proc.returncode}")
        try:
            with urllib.request.urlopen(self.url + "/healthz", timeout=1) as res:
                return bool(res.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (graceful: flush, close sockets with 1001), then wait for exit 0."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise
        assert proc.returncode == 0, f"collab serve exited with {proc.returncode}"

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
