"""Heavy CRDT work off the event loop, and a log line for any slow operation.

All rooms share one event loop, so one document's large load must not stall
every other document's relays. ``Offload.run`` runs a call inline when its
input is small (a thread hop costs more than a keystroke's apply) and in the
CRDT thread when it is at least ``heavy_bytes``. The CRDT thread is its own
pool, apart from the file store's disk threads and the history diff thread,
so a stalled disk never holds back a load, nor a huge load a flush.

Only work on a document nothing else can touch meanwhile goes to the thread
(a document while it loads: every caller waits in ``Document.settled``); a
pycrdt ``Doc`` is never used from two threads at once.

pycrdt holds the GIL for the whole of ``apply_update``, ``get_update`` and
``merge_updates`` (``tests/bench/gil_probe.py``): the loop runs between the
pycrdt calls of a heavy job, not during one, so another document waits for
the longest single call instead of the whole job. README "Large documents"
has the figures.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from ..storage.pools import started_pool

__all__ = ["HEAVY_BYTES", "SLOW_SECONDS", "Offload", "log_slow"]

HEAVY_BYTES = 1 << 20  # inputs this large run in the CRDT thread
SLOW_SECONDS = 0.1  # an operation taking longer is logged, per document

T = TypeVar("T")

log = logging.getLogger("collab.slow")


class Offload:
    """One worker thread of its own (``thread``), and the slow-operation log line."""

    def __init__(
        self,
        thread: str = "collab-crdt",
        heavy_bytes: int = HEAVY_BYTES,
        slow_seconds: float = SLOW_SECONDS,
    ) -> None:
        self.thread = thread
        self.heavy_bytes = heavy_bytes
        self.slow_seconds = slow_seconds
        self._pool: ThreadPoolExecutor | None = None

    async def __call__(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the thread, whatever its size (pure work: diffs, fork edits)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor(), fn, *args)

    def start(self) -> None:
        """Start the thread now (else at the first heavy job)."""
        self._executor()

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = started_pool(1, self.thread)
        return self._pool

    async def run(self, name: str, what: str, size: int, fn: Callable[[], T]) -> T:
        """``fn()``, in the CRDT thread if ``size`` is heavy; logged if it was slow."""
        start = time.perf_counter()
        if size >= self.heavy_bytes:
            result = await asyncio.get_running_loop().run_in_executor(self._executor(), fn)
        else:
            result = fn()
        log_slow(name, what, size, start, self.slow_seconds)
        return result

    def close(self) -> None:
        """Wait for the work in the thread to end, and release the thread."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


def log_slow(name: str, what: str, size: int, start: float, slow: float = SLOW_SECONDS) -> None:
    """Log ``what`` on document ``name`` if it took ``slow`` seconds or more since ``start``."""
    elapsed = time.perf_counter() - start
    if elapsed >= slow:
        log.warning("slow %s of %r: %.0f ms for %d bytes", what, name, elapsed * 1000, size)
