"""The Tornado WebSocket handler: thin glue between a socket and the hub.

Mount it at any prefix, e.g. ``(r"/ws/(.+)", YjsHandler, {"hub": hub})``; the
captured group is the document name (Tornado percent-decodes it, so raw and
encoded names reach the same document).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import struct
from typing import Any
from urllib.parse import urlsplit

import tornado.iostream
import tornado.web
import tornado.websocket

from . import names
from .auth import Authorize, Permission, allow_all
from .errors import CollabError, Unauthorized, UnsupportedData
from .hub import Hub
from .room import Room

__all__ = ["YjsHandler"]

log = logging.getLogger("collab.handler")
_LOOPBACK = {"localhost", "127.0.0.1", "::1", "[::1]"}
_frame_cache: tuple[bytes, bytes] = (b"", b"")


def _binary_frame(data: bytes) -> bytes:
    """A server-to-client WebSocket frame, built once per relayed message."""
    global _frame_cache
    if _frame_cache[0] is data:
        return _frame_cache[1]
    n = len(data)
    if n < 126:
        head = struct.pack("!BB", 0x82, n)
    elif n <= 0xFFFF:
        head = struct.pack("!BBH", 0x82, 126, n)
    else:
        head = struct.pack("!BBQ", 0x82, 127, n)
    _frame_cache = (data, head + data)
    return _frame_cache[1]


class YjsHandler(tornado.websocket.WebSocketHandler):
    """A y-websocket endpoint: one connection to one document.

    Args (``initialize``):
        hub: the ``Hub`` owning the documents.
        authorize: ``authorize(request, name) -> Permission`` (or awaitable),
            raising ``Unauthorized``/``Forbidden``; default allows everyone.
        allow_origins: browser origins allowed besides same-origin and
            loopback; ``"*"`` allows any.
    """

    def initialize(
        self,
        hub: Hub,
        authorize: Authorize = allow_all,
        allow_origins: tuple[str, ...] = (),
    ) -> None:
        self.hub = hub
        self.authorize = authorize
        self.allow_origins = allow_origins
        self.room: Room | None = None
        self.permission = Permission()
        self._expiry: asyncio.TimerHandle | None = None

    async def get(self, *args: Any, **kwargs: Any) -> None:
        try:
            name = names.validate(args[0])
            result = self.authorize(self.request, name)
            self.permission = await result if inspect.isawaitable(result) else result
        except CollabError as exc:
            log.info("refused %s %s: %s", self.request.remote_ip, self.request.path, exc.reason)
            self.set_status(exc.http_status)
            self.finish(exc.reason)
            return
        await super().get(name)

    # Keep-alive and size limits come from the hub's config unless the host
    # application set Tornado's own websocket_* settings.
    @property
    def ping_interval(self) -> float | None:
        return self.settings.get("websocket_ping_interval", self.hub.config.ping_interval or None)

    @property
    def ping_timeout(self) -> float | None:
        return self.settings.get("websocket_ping_timeout", self.hub.config.ping_timeout or None)

    @property
    def max_message_size(self) -> int:
        return self.settings.get("websocket_max_message_size", self.hub.config.max_message_bytes)

    def check_origin(self, origin: str) -> bool:
        host = urlsplit(origin).hostname or ""
        if "*" in self.allow_origins or origin in self.allow_origins or host in _LOOPBACK:
            return True
        return super().check_origin(origin)

    async def open(self, *args: Any, **kwargs: Any) -> None:
        self.set_nodelay(True)
        try:
            self.room = await self.hub.join(args[0], self)
        except CollabError as exc:
            self._refuse(exc)
            return
        if self.permission.expires is not None:
            delay = max(0.0, self.permission.expires - self.hub.clock())
            self._expiry = asyncio.get_running_loop().call_later(
                delay, self._refuse, Unauthorized("token expired")
            )

    async def on_message(self, message: str | bytes) -> None:
        if self.room is None:
            return
        try:
            if isinstance(message, str):
                raise UnsupportedData("text frames are not supported")
            await self.hub.receive(self, self.room, message, self.permission.writable)
        except CollabError as exc:
            self._refuse(exc)
        except Exception:
            log.exception("error handling a message for %r", self.room.name)
            self.close(1011, "internal error")

    def on_close(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        if self.room is not None:
            self.hub.leave(self, self.room)
            self.room = None

    # -- what the hub calls ---------------------------------------------------------

    def send(self, data: bytes) -> None:
        conn = self.ws_connection
        if conn is None or conn.is_closing():
            return
        with contextlib.suppress(tornado.iostream.StreamClosedError):
            conn.stream.write(_binary_frame(data))  # type: ignore[attr-defined]

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        if reason is not None:
            reason = reason.encode()[:120].decode(errors="ignore")
        super().close(code, reason)

    def _refuse(self, exc: CollabError) -> None:
        who = self.permission.user or self.request.remote_ip
        room = self.room.name if self.room else "-"
        log.warning("closing %s on %r: %s (%d)", who, room, exc.reason, exc.close_code)
        self.hub.metrics.errors.labels(str(exc.close_code)).inc()
        self.close(exc.close_code, exc.reason)
