"""The Tornado WebSocket handler: thin glue between a socket and the hub.

Mount it at any prefix, e.g. ``(r"/ws/(.+)", YjsHandler, {"hub": hub})``; the
captured group is the document name (Tornado percent-decodes it, so raw and
encoded names reach the same document).

Before the upgrade: the name is checked (400), the client's IP is counted
(429 past ``max_connections_per_ip``), ``authorize`` runs (401/403), and no
request body is accepted, so an unauthenticated client can make the server
hold nothing but its headers. After it: every message is charged to the
connection's rate limits (1008), checked and handed to the hub; a slow reader's
output waits in an ``Outbox`` where updates merge, and is closed (1013) past
``max_pending_bytes``. Every refusal logs who and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, cast

import tornado.iostream
import tornado.web
import tornado.websocket

from . import limits, names, protocol
from .auth import Authorize, Permission, allow_all, origin_allowed, permit
from .errors import (
    CollabError,
    Forbidden,
    PolicyViolation,
    SlowConsumer,
    Unauthorized,
    UnsupportedData,
)
from .frames import FrameWriter, binary_frame
from .hub import Hub
from .logs import TokenSafeLogs
from .room import Room

__all__ = ["YjsHandler"]

log = logging.getLogger("collab.handler")
_TEXT = 0x1


class _Protocol(tornado.websocket.WebSocketProtocol13):
    """Tornado's protocol, except that any text frame is refused with 1003.

    Tornado aborts on a text frame that is not UTF-8 without a close code; a
    y-websocket client never sends text, so every text frame is refused alike.
    """

    def _handle_message(self, opcode: int, data: bytes) -> asyncio.Future[None] | None:
        if opcode == _TEXT and not self.client_terminated:
            cast(YjsHandler, self.handler)._refuse(UnsupportedData("text frames not supported"))
            return None
        return super()._handle_message(opcode, data)


@tornado.web.stream_request_body
class YjsHandler(TokenSafeLogs, tornado.websocket.WebSocketHandler):
    """A y-websocket endpoint: one connection to one document.

    Args (``initialize``):
        hub: the ``Hub`` owning the documents; its ``config`` holds the limits.
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
        self.allow_origins = {o.rstrip("/").lower() for o in allow_origins}
        self.room: Room | None = None
        self.permission = Permission()
        self._expiry: asyncio.TimerHandle | None = None
        self._ip: str | None = None
        self._writer: FrameWriter | None = None
        config = hub.config
        now = time.monotonic()
        self._messages = limits.TokenBucket(config.rate_messages, config.rate_messages_burst, now)
        burst = max(config.rate_bytes_burst, config.max_message_bytes)
        self._bytes = limits.TokenBucket(config.rate_bytes, burst, now)

    def prepare(self) -> None:
        # A handshake has no body: refuse any, so nothing is buffered before auth.
        self.request.connection.set_max_body_size(0)  # type: ignore[union-attr]

    def data_received(self, chunk: bytes) -> None:  # pragma: no cover - body size is 0
        pass

    async def get(self, *args: Any, **kwargs: Any) -> None:
        try:
            try:
                name = names.validate(args[0])
                origin = self.request.headers.get("Origin")
                if origin is not None and not self.check_origin(origin):
                    raise Forbidden(f"origin not allowed: {origin[:100]}")
                self._ip_counter().acquire(self.request.remote_ip)
                self._ip = self.request.remote_ip
                self.permission = await permit(self.authorize, self.request, name)
            except CollabError as exc:
                log.info("refused %s %s: %s", self.request.remote_ip, self.request.path, exc.reason)
                self.set_status(exc.http_status)
                if isinstance(exc, Unauthorized):
                    self.set_header("WWW-Authenticate", "Bearer")
                self.finish(exc.reason)
                return
            await super().get(name)  # returns when the connection ends
        finally:
            self._release_ip()

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

    def get_websocket_protocol(self) -> tornado.websocket.WebSocketProtocol | None:
        base = super().get_websocket_protocol()
        if isinstance(base, tornado.websocket.WebSocketProtocol13):
            return _Protocol(self, False, base.params)
        return base

    def check_origin(self, origin: str) -> bool:
        return origin_allowed(origin, self.request.headers.get("Host"), self.allow_origins)

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

    def on_message(self, message: str | bytes) -> None:
        conn = self.ws_connection
        if self.room is None or conn is None or conn.is_closing():
            return  # refused already: frames still in flight are ignored
        try:
            if isinstance(message, str):
                raise UnsupportedData("text frames not supported")
            self._charge(len(message))
            cap = self.hub.config.max_awareness_clients
            limits.check_awareness(message, self.hub.config.max_awareness_bytes, cap)
            self.hub.receive(self, self.room, message, self.permission.writable)
            if self.room is not None and 0 < cap < len(self.room.peers.get(self, ())):
                raise PolicyViolation(f"too many awareness clients (limit {cap})")
        except CollabError as exc:
            self._refuse(exc)
        except Exception:
            log.exception("error handling a message for %r", self.room.name)
            self._refuse(CollabError("internal error"))

    def on_close(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        self._leave()
        self._release_ip()

    # -- what the hub calls ---------------------------------------------------------

    def send(self, data: bytes) -> None:
        conn = self.ws_connection
        if conn is None or conn.is_closing():
            return
        if self._writer is None:
            bound = self.hub.config.max_pending_bytes
            self._writer = FrameWriter(conn.stream, bound, self._overflow)  # type: ignore[attr-defined]
        self._writer.send(data)

    def close(self, code: int | None = None, reason: str | None = None) -> None:
        if reason is not None:
            reason = reason.encode()[:120].decode(errors="ignore")
        super().close(code, reason)

    # -- internals --------------------------------------------------------------------

    def _overflow(self) -> None:
        bound = self.hub.config.max_pending_bytes
        self._refuse(SlowConsumer(f"too far behind: over {bound} bytes waiting"))

    def _charge(self, size: int) -> None:
        config, now = self.hub.config, time.monotonic()
        if not self._messages.take(1, now):
            raise PolicyViolation(f"rate limit: over {config.rate_messages:g} messages/s")
        if not self._bytes.take(size, now):
            raise PolicyViolation(f"rate limit: over {config.rate_bytes:g} bytes/s")

    def _refuse(self, exc: CollabError) -> None:
        """Close with ``exc``'s code and reason, once; log who and why."""
        conn = self.ws_connection
        if conn is None or conn.is_closing():
            return
        who = f"{self.permission.user or '-'}@{self.request.remote_ip}"
        room = self.room.name if self.room else "-"
        log.warning("closing %s on %r: %s (%d)", who, room, exc.reason, exc.close_code)
        self.hub.metrics.errors.labels(str(exc.close_code)).inc()
        if isinstance(exc, Unauthorized | Forbidden):
            # y-websocket reconnects on any close; the auth message says why.
            auth = protocol.encode(protocol.Auth(exc.reason))
            with contextlib.suppress(tornado.iostream.StreamClosedError):
                conn.stream.write(binary_frame(auth))  # type: ignore[attr-defined]
        self._leave()
        self.close(exc.close_code, exc.reason)

    def _leave(self) -> None:
        if self.room is not None:
            self.hub.leave(self, self.room)
            self.room = None
        self._writer = None

    def _ip_counter(self) -> limits.Counter:
        settings = self.application.settings
        if "collab_connections_per_ip" not in settings:
            cap = self.hub.config.max_connections_per_ip
            settings["collab_connections_per_ip"] = limits.Counter(cap)
        return cast(limits.Counter, settings["collab_connections_per_ip"])

    def _release_ip(self) -> None:
        if self._ip is not None:
            self._ip_counter().release(self._ip)
            self._ip = None
