"""Writing messages to a Tornado WebSocket stream: framed once, sent directly, bounded.

A relayed message is framed once and the same bytes go to every connection. A
frame goes straight to the socket while nothing is queued (no future, no buffer
bookkeeping: the fan-out hot path). A reader whose unsent output passes a
quarter of the bound gets what follows held in an ``Outbox``, merged, until its
socket drains; past the bound ``on_overflow`` is called (the handler closes 1013).
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable

import tornado.iostream

from .limits import Outbox

__all__ = ["FrameWriter", "binary_frame"]

_cache: tuple[bytes, bytes] = (b"", b"")


def binary_frame(data: bytes) -> bytes:
    """The server-to-client WebSocket frame of ``data`` (cached for the last message)."""
    global _cache
    if _cache[0] is data:
        return _cache[1]
    n = len(data)
    if n < 126:
        head = struct.pack("!BB", 0x82, n)
    elif n <= 0xFFFF:
        head = struct.pack("!BBH", 0x82, 126, n)
    else:
        head = struct.pack("!BBQ", 0x82, 127, n)
    _cache = (data, head + data)
    return _cache[1]


class FrameWriter:
    """Sends binary messages on one connection's stream."""

    __slots__ = ("bound", "on_overflow", "outbox", "stream")

    def __init__(
        self, stream: tornado.iostream.IOStream, bound: int, on_overflow: Callable[[], None]
    ) -> None:
        self.stream = stream
        self.bound = bound
        self.on_overflow = on_overflow
        self.outbox: Outbox | None = None

    def send(self, data: bytes) -> None:
        if self.outbox is not None:
            if not self.outbox.put(data):
                self.outbox = None
                self.on_overflow()
            return
        stream, frame = self.stream, binary_frame(data)
        if not stream._write_buffer and type(stream) is tornado.iostream.IOStream:
            try:
                sent = stream.socket.send(frame)  # type: ignore[union-attr]
            except OSError:  # would block, or broken: IOStream.write sorts it out
                sent = 0
            if sent == len(frame):
                return
            frame = frame[sent:]
        with contextlib.suppress(tornado.iostream.StreamClosedError):
            if self.bound > 0 and len(stream._write_buffer) > self.bound // 4:
                self.outbox = Outbox(self.bound)
                self.outbox.put(data)
                stream.write(b"").add_done_callback(self._drain)
                return
            stream.write(frame)

    def write_now(self, data: bytes) -> None:
        """Queue ``data`` behind everything else (for a last word before closing)."""
        with contextlib.suppress(tornado.iostream.StreamClosedError):
            self.stream.write(binary_frame(data))

    def _drain(self, _written: object) -> None:
        outbox, self.outbox = self.outbox, None
        if outbox is not None:
            for frame in outbox.take():
                self.send(frame)
