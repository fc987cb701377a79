"""A throttling TCP proxy on loopback, for tests of slow links.

``Throttle(target_port, rate)`` listens on a free loopback port and forwards
every connection to ``127.0.0.1:target_port``, at most ``rate`` bytes per
second in each direction of each connection (a token bucket with a burst of
one chunk), so a 50 MB step 2 takes as long as it would on a slow link. It
runs its own event loop in a thread, so sync tests (Playwright) and async
tests can both use it. ``cut()`` drops every connection and refuses new ones
(the link goes down) until ``restore()``. ``with Throttle(...) as proxy:``
stops it on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time

__all__ = ["Throttle"]

_CHUNK = 16 << 10


class Throttle:
    """Forwards ``127.0.0.1:port`` to ``127.0.0.1:target`` at ``rate`` bytes/s per direction."""

    def __init__(self, target: int, rate: float) -> None:
        self.target = target
        self.rate = rate
        self.port = 0
        self.up = True
        self.bytes_down = 0  # server to client, in all
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> Throttle:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        self._writers.update((writer, up_writer))
        for w in (writer, up_writer):
            sock = w.get_extra_info("socket")
            if sock is not None:  # small kernel buffers: the throttle, not them, sets the pace
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 10)
        try:
            await asyncio.gather(
                self._pipe(reader, up_writer, down=False),
                self._pipe(up_reader, writer, down=True),
            )
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, down: bool
    ) -> None:
        start, sent = time.monotonic(), 0
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while chunk := await reader.read(_CHUNK):
                sent += len(chunk)
                if down:
                    self.bytes_down += len(chunk)
                # The pace: ``sent`` bytes may have left by ``start + sent / rate``.
                delay = start + sent / self.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if writer.transport.is_closing():
                    break
                writer.write(chunk)
                await writer.drain()
        writer.transport.abort()

    def cut(self) -> None:
        """The link goes down: drop every connection, refuse new ones."""
        self._call(self._cut)

    def _cut(self) -> None:
        self.up = False
        for w in list(self._writers):
            w.transport.abort()

    def restore(self) -> None:
        """The link is back: new connections are forwarded again."""
        self.up = True

    def _call(self, fn: object) -> None:
        async def run() -> None:
            fn()  # type: ignore[operator]

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def stop(self) -> None:
        async def close() -> None:
            self._cut()
            if self._server is not None:
                self._server.close()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> Throttle:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
