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
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import forkserver
from typing import Any, TypeVar

from ..core.room import merged_state
from ..storage.pools import started_pool

__all__ = ["HEAVY_BYTES", "MERGE_BYTES", "SLOW_SECONDS", "Offload", "log_slow"]

HEAVY_BYTES = 1 << 20  # inputs this large run in the CRDT thread
MERGE_BYTES = 8 << 20  # a document this large merges its snapshots in another process
MERGE_NICE = 10  # that process's CPU priority below the server's: it must not slow the loop
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
        self._process: ProcessPoolExecutor | None = None

    async def __call__(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in the thread, whatever its size (pure work: diffs, fork edits)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor(), fn, *args)

    def start(self) -> None:
        """Start the thread now (else at the first heavy job), and the fork server
        that merge processes come from while this process is still small."""
        self._executor()
        forkserver.ensure_running()

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = started_pool(1, self.thread)
        return self._pool

    async def merge(self, name: str, updates: Sequence[bytes]) -> tuple[bytes, bytes]:
        """``room.merged_state(updates)`` in a process of its own (started at the first
        call): the state and state vector of the document they make. Only the bytes
        cross: copying them in and out holds the GIL a few ms per 10 MB."""
        if self._process is None:
            # A process per merge, forked from the fork server (started small, with
            # the hub): forking this process, hundreds of MB by then, would copy its
            # page tables on the loop; and the child's memory goes back when it ends.
            self._process = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("forkserver"),
                initializer=os.nice,
                initargs=(MERGE_NICE,),
                max_tasks_per_child=1,
            )
        start = time.perf_counter()
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(self._process, merged_state, updates)
        log_slow(name, "snapshot merge (other process)", sum(map(len, updates)), start)
        return result

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
        if self._process is not None:
            self._process.shutdown(wait=True)
            self._process = None


def log_slow(name: str, what: str, size: int, start: float, slow: float = SLOW_SECONDS) -> None:
    """Log ``what`` on document ``name`` if it took ``slow`` seconds or more since ``start``."""
    elapsed = time.perf_counter() - start
    if elapsed >= slow:
        log.warning("slow %s of %r: %.0f ms for %d bytes", what, name, elapsed * 1000, size)
