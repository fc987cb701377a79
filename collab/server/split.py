"""A large sync step 2 sent as several messages, each arriving in time, and compressed
only where the link is slow.

Why: a stock y-websocket client drops a socket on which no message has arrived
for 30 s, so a 50 MB step 2 in one message reconnect-loops forever on a slow
link (below ~1.7 MB/s plain, ~0.7 MB/s compressed); and on a link as fast as
the same host's, inflating a compressed 50 MB message costs the client more
than the wire saves.

``Split.of`` cuts a step 2 of at least ``SPLIT_MIN_BYTES`` once (in the deflate
thread: ``core.pieces.split_update``, pieces of about ``PIECE_BYTES`` that
each apply without a later one; 1 MiB pieces made the editor page 2.4x slower
to apply them) into updates and a final step 2, so a client is told it is
synced only once it has everything. A message that cannot be
cut is sent whole. The socket sends the parts in order, and ``LinkRate``
says, at each part, whether what it has sent so far left fast enough to go
on plain; once it did not, the rest goes compressed (permessage-deflate, when
negotiated).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging

from ..core import protocol
from ..core.pieces import split_update
from ..core.protocol import SyncStep2, Update
from .deflation import Reader
from .kept import Kept

__all__ = ["FAST_LINK", "PIECE_BYTES", "SPLIT_MIN_BYTES", "LinkRate", "Split"]

log = logging.getLogger("collab.sockets")

SPLIT_MIN_BYTES = 4 << 20  # a step 2 at least this large goes out in parts
PIECE_BYTES = 4 << 20  # at 60 KB/s a compressed part still arrives within 30 s
KEPT_BYTES = 256 << 20  # the splits kept for the next fresh clients, in all
# Bytes/s above which a large message goes plain: faster than a client inflates.
FAST_LINK = 200e6
JUDGED_AFTER = 0.02  # seconds of sending before the rate says anything


class Split:
    """``data`` (an encoded sync step 2) as ``parts``, once ``done``."""

    __slots__ = ("data", "done", "parts", "readers")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.parts: list[bytes] = []
        self.done = False
        self.readers: set[Reader] = set()

    @classmethod
    def of(cls, data: bytes, executor: concurrent.futures.Executor) -> Split:
        """The split of ``data``: a kept or running one, else one started in ``executor``."""
        kept = _kept.get(data)
        if kept is not None:
            return kept
        split = cls(data)
        _kept.put(data, split)
        job = asyncio.get_running_loop().run_in_executor(executor, _parts, data)
        job.add_done_callback(split._made)
        return split

    def _made(self, job: asyncio.Future[list[bytes]]) -> None:
        if job.cancelled() or job.exception() is not None:
            log.error("cutting a step 2 of %d bytes failed: %r", len(self.data), job)
            self.parts = [self.data]
        else:
            self.parts = job.result()
        self.done = True
        readers, self.readers = self.readers, set()
        for reader in readers:
            reader.fragment_ready()


def _parts(data: bytes) -> list[bytes]:
    """In the thread: the messages ``data`` goes out as (itself, if it cannot be cut)."""
    message = protocol.decode(data)
    if not isinstance(message, SyncStep2):
        return [data]
    pieces = split_update(message.update, PIECE_BYTES)
    if pieces is None or len(pieces.parts) < 2:
        return [data]
    *first, last = pieces.parts
    return [*(protocol.encode(Update(part)) for part in first), protocol.encode(SyncStep2(last))]


_kept: Kept[Split] = Kept(KEPT_BYTES)


class LinkRate:
    """How fast one socket's bytes leave, judged from when it started a large message."""

    __slots__ = ("sent", "started")

    def __init__(self, now: float) -> None:
        self.started = now
        self.sent = 0  # bytes written to the transport since ``started``

    def slow(self, now: float, buffered: int) -> bool:
        """Has less than ``FAST_LINK`` left so far (``buffered``: still in the transport)?"""
        elapsed = now - self.started
        return elapsed >= JUDGED_AFTER and (self.sent - buffered) / elapsed < FAST_LINK
