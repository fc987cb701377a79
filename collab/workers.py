"""``collab serve --workers N``: N server processes on one port, kept running.

Each worker is ``collab serve`` with the same arguments, binding the port with
``SO_REUSEPORT`` (the kernel spreads new connections over them); they share
documents through Redis (``--redis-url``). A worker that dies is started
again after a second; SIGTERM or SIGINT stops them all (each flushes its
documents and closes its clients with 1001), then this process exits.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

__all__ = ["WORKER_ENV", "supervise"]

log = logging.getLogger("collab")

WORKER_ENV = "COLLAB_WORKER"  # set in each worker: it serves instead of forking again
STOP_SECONDS = 20.0


def supervise(argv: Sequence[str], workers: int) -> int:
    """Run ``workers`` copies of ``collab <argv>`` until told to stop; return the status."""
    env = {**os.environ, WORKER_ENV: "1"}
    command = [sys.executable, "-m", "collab", *argv]
    stopping = False
    children: dict[int, subprocess.Popen[bytes]] = {}

    def start() -> None:
        child = subprocess.Popen(command, env=env)
        children[child.pid] = child

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for _ in range(workers):
        start()
    log.info("started %d workers: %s", workers, " ".join(str(pid) for pid in children))
    status = 0
    while children:
        try:
            pid, code = os.wait()
        except ChildProcessError:
            break
        child = children.pop(pid, None)
        if child is None:
            continue
        child.returncode = os.waitstatus_to_exitcode(code)
        if stopping:
            continue
        if child.returncode in (1, 2) and not children:
            log.error("every worker failed to start (status %d): stopping", child.returncode)
            return child.returncode
        log.warning("worker %d exited with %d: starting another", pid, child.returncode)
        time.sleep(1.0)
        if not stopping:
            start()
    return status
