"""An asyncio transport over a Tornado ``IOStream``, for TLS that Tornado terminates.

A plain socket moves to asyncio's own transport after the upgrade. A TLS socket
cannot: its session lives in Tornado's ``SSLIOStream``. This adapter gives a
``WebSocket`` the same transport interface over that stream, with the same flow
control (``pause_writing`` past the high-water mark, ``resume_writing`` once the
stream has flushed).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import tornado.iostream

__all__ = ["IOStreamTransport"]

_READ_CHUNK = 64 * 1024


class IOStreamTransport(asyncio.Transport):
    """Drives ``protocol`` from ``stream``; calls ``connection_made`` at once."""

    def __init__(self, stream: tornado.iostream.IOStream, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self._stream = stream
        self._protocol = protocol
        self._high = 64 * 1024
        self._writing_paused = False
        self._reading = asyncio.Event()
        self._reading.set()
        self._closing = False
        self._lost = False
        stream.set_close_callback(self._on_close)
        protocol.connection_made(self)
        self._reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(tornado.iostream.StreamClosedError):
            while True:
                await self._reading.wait()
                data = await self._stream.read_bytes(_READ_CHUNK, partial=True)
                self._protocol.data_received(data)

    def _on_close(self) -> None:
        if not self._lost:
            self._lost = True
            self._closing = True
            self._reader.cancel()
            error = self._stream.error
            self._protocol.connection_lost(error if isinstance(error, Exception) else None)

    # -- asyncio.Transport ----------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self._stream.closed():
            return
        done = self._stream.write(bytes(data))
        if not self._writing_paused and self.get_write_buffer_size() > self._high:
            self._writing_paused = True
            self._protocol.pause_writing()
            done.add_done_callback(self._drained)

    def _drained(self, done: asyncio.Future[None]) -> None:
        if done.cancelled() or done.exception() is not None or self._lost:
            return
        self._writing_paused = False
        self._protocol.resume_writing()

    def get_write_buffer_size(self) -> int:
        return len(self._stream._write_buffer)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high = high if high is not None else 64 * 1024

    def close(self) -> None:
        """Close once what is buffered has been written."""
        if self._closing:
            return
        self._closing = True
        with contextlib.suppress(tornado.iostream.StreamClosedError):
            self._stream.write(b"").add_done_callback(lambda _: self._stream.close())

    def abort(self) -> None:
        self._closing = True
        self._stream.close()

    def is_closing(self) -> bool:
        return self._closing or self._stream.closed()

    def pause_reading(self) -> None:
        self._reading.clear()

    def resume_reading(self) -> None:
        self._reading.set()

    def is_reading(self) -> bool:
        return self._reading.is_set()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        sock = self._stream.socket
        if sock is None:
            return default
        if name == "socket":
            return sock
        if name == "peername":
            return sock.getpeername()
        if name == "sockname":
            return sock.getsockname()
        return default
