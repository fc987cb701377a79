"""A large message compressed once per window size, fragment by fragment, for every socket.

A fresh client's step 2 of a 50 MB document is compressed in the deflate
thread (``frames.deflated_fragments``). Each fragment goes to the loop as soon
as it is made, and every socket sending that message writes it as its
transport drains, so the client inflates the first fragments while the last
are still being made: the compression no longer adds its whole time to the
sync. The finished fragments of the last large messages (``KEPT_BYTES`` of
input in all) are kept, so the next fresh client of an unchanged document,
or the next part of a split step 2 (``split``), is not compressed again.

Readers (``WebSocket``) call ``Deflation.of`` to join the running or kept one,
read ``frames`` from their own index, and wait in ``readers`` for
``fragment_ready`` when they have caught up with a compression still running.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from typing import Protocol

from .frames import deflated_fragments
from .kept import Kept

__all__ = ["KEPT_BYTES", "Deflation", "Reader"]

log = logging.getLogger("collab.sockets")

KEPT_BYTES = 256 << 20


class Reader(Protocol):
    def fragment_ready(self) -> None:
        """Another fragment was made, or the compression ended."""


class Deflation:
    """``data`` compressed for ``window_bits``: ``frames`` so far, ``done`` once all are."""

    __slots__ = ("data", "done", "failed", "frames", "readers", "window_bits")

    def __init__(self, data: bytes, window_bits: int) -> None:
        self.data = data
        self.window_bits = window_bits
        self.frames: list[bytes] = []
        self.done = False
        self.failed = False  # nothing more comes; readers close their socket
        self.readers: set[Reader] = set()

    @classmethod
    def of(cls, data: bytes, window_bits: int, executor: concurrent.futures.Executor) -> Deflation:
        """The compression of ``data`` for ``window_bits``: the running or last one, else
        a new one started in ``executor``."""
        kept = _kept.get(data, window_bits)
        if kept is not None:
            return kept
        deflation = cls(data, window_bits)
        _kept.put(data, deflation, window_bits)
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(executor, deflation._make, loop)
        job.add_done_callback(deflation._made)
        return deflation

    def _make(self, loop: asyncio.AbstractEventLoop) -> None:
        """In the thread: hand each fragment to the loop as soon as it is made."""
        for frame in deflated_fragments(self.data, self.window_bits):
            loop.call_soon_threadsafe(self._add, frame)

    def _add(self, frame: bytes) -> None:
        self.frames.append(frame)
        self._wake()

    def _made(self, job: asyncio.Future[None]) -> None:
        if job.cancelled() or job.exception() is not None:
            log.error("compressing %d bytes failed: %r", len(self.data), job)
            self.failed = True
            _kept.discard(self.data, self.window_bits)  # the next one compresses it afresh
        self.done = True  # after every ``_add``: those were queued on the loop before this
        self._wake()

    def _wake(self) -> None:
        readers, self.readers = self.readers, set()
        for reader in readers:
            reader.fragment_ready()


_kept: Kept[Deflation] = Kept(KEPT_BYTES)  # by message and window bits
