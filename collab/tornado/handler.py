"""The Tornado request handler of the sync endpoint: checks, then the WebSocket upgrade.

Mount it at any prefix, e.g. ``(r"/ws/(.+)", YjsHandler, {"hub": hub})``; the
captured group is the document name (Tornado percent-decodes it, so raw and
encoded names reach the same document).

Before the upgrade: the name is checked (400), the client's IP is counted
(429 past ``max_connections_per_ip``; behind a ``--trusted-proxy`` the
forwarded address counts, see ``clients``), ``authorize`` runs (401/403), and no
request body is accepted, so an unauthenticated client can make the server
hold nothing but its headers. The handshake itself is checked and answered by
the websockets library (its sans-I/O server protocol). Then the socket leaves
Tornado: ``connection.WebSocket`` runs it on an asyncio transport for as long as
it lives. Every refusal logs who and why.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

import tornado.iostream
import tornado.web
from websockets.datastructures import Headers
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.http11 import Request
from websockets.server import ServerProtocol

from ..core import limits, names
from ..core.auth import Authorize, Permission, allow_all, origin_allowed
from ..core.errors import CollabError, Forbidden, Unauthorized
from ..server.hub import Hub
from ..server.sockets import WebSocket, wire_log
from ..server.tokens import checked
from .clients import client_ip
from .logs import TokenSafeLogs
from .stream_transport import IOStreamTransport

__all__ = ["DEFLATE", "YjsHandler", "admit"]

log = logging.getLogger("collab.handler")

# permessage-deflate as the server offers it (RFC 7692): no context takeover on
# either side, so each compressed message stands alone (one compressed frame
# serves every peer with the same window) and no zlib state lives per idle
# connection; what a client sends is decompressed up to the message bound.
DEFLATE = ServerPerMessageDeflateFactory(
    server_no_context_takeover=True, client_no_context_takeover=True
)

# Response headers of a refused handshake worth passing on (Tornado sets the rest).
_HANDSHAKE_HEADERS = {"sec-websocket-version", "upgrade"}


async def admit(
    hub: Hub,
    authorize: Authorize,
    origin_ok: Callable[[str], bool],
    request: Any,
    raw_name: str,
    ip: str,
) -> tuple[str, Permission]:
    """The checks before an upgrade, in order: name, origin, per-IP cap, token, store.

    Both ways in run exactly these (``YjsHandler.get`` and ``upgrade.FastUpgrades``,
    which calls ``admit_now`` and, if the hook waits, ``admitted``).

    Returns:
        The document name and the connection's permission; ``ip`` is counted
        in ``hub.ips`` (the caller releases it when the connection goes).

    Raises:
        CollabError: refused (its ``http_status`` says how); nothing is counted.
    """
    name, result = admit_now(hub, authorize, origin_ok, request, raw_name, ip)
    if inspect.isawaitable(result):
        return name, await admitted(hub, ip, result)
    return name, result


def admit_now(
    hub: Hub,
    authorize: Authorize,
    origin_ok: Callable[[str], bool],
    request: Any,
    raw_name: str,
    ip: str,
) -> tuple[str, Permission | Awaitable[Permission]]:
    """``admit`` without waiting: the name, and the permission or, if the
    ``authorize`` hook returned an awaitable, that (``admitted`` finishes)."""
    name = names.validate(raw_name)
    origin = request.headers.get("Origin")
    if origin is not None and not origin_ok(origin):
        raise Forbidden(f"origin not allowed: {origin[:100]}")
    hub.ips.acquire(ip)
    try:
        result = authorize(request, name)
        if inspect.isawaitable(result):
            return name, result
        permission = checked(result)
        hub.check_store()
    except BaseException:
        hub.ips.release(ip)
        raise
    return name, permission


async def admitted(hub: Hub, ip: str, pending: Awaitable[Permission]) -> Permission:
    """The rest of ``admit`` once the hook's ``pending`` answer is awaited."""
    try:
        permission = checked(await pending)
        hub.check_store()
    except BaseException:
        hub.ips.release(ip)
        raise
    return permission


@tornado.web.stream_request_body
class YjsHandler(TokenSafeLogs, tornado.web.RequestHandler):
    """A y-websocket endpoint: one connection to one document.

    Args (``initialize``):
        hub: the ``Hub`` owning the documents; its ``config`` holds the limits.
        authorize: ``authorize(request, name) -> Permission`` (or awaitable),
            raising ``Unauthorized``/``Forbidden``; default allows everyone.
        allow_origins: browser origins allowed besides same-origin and
            loopback; ``"*"`` allows any.

    Keep-alive and the message size limit come from the hub's config unless
    the host application set Tornado's ``websocket_ping_interval``,
    ``websocket_ping_timeout`` or ``websocket_max_message_size``.
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
        self.permission = Permission()
        self._ip: str | None = None

    def prepare(self) -> None:
        # A handshake has no body: refuse any, so nothing is buffered before auth.
        self.request.connection.set_max_body_size(0)  # type: ignore[union-attr]

    def data_received(self, chunk: bytes) -> None:  # pragma: no cover - body size is 0
        pass

    async def get(self, *args: Any, **kwargs: Any) -> None:
        try:
            try:
                ip = client_ip(self)
                name, self.permission = await admit(
                    self.hub, self.authorize, self.check_origin, self.request, args[0], ip
                )
                self._ip = ip
            except CollabError as exc:
                fields = {"event": "connection_refused", **self.log_fields()}
                fields.update(status=exc.http_status, reason=exc.reason)
                ip, path = client_ip(self), self.request.path
                log.info("refused %s %s: %s", ip, path, exc.reason, extra=fields)
                self.set_status(exc.http_status)
                if isinstance(exc, Unauthorized):
                    self.set_header("WWW-Authenticate", "Bearer")
                if exc.retry_after is not None:  # connection caps (429, 503)
                    self.set_header("Retry-After", str(max(1, round(exc.retry_after))))
                self.finish(exc.reason)
                return
            await self._upgrade(name)
        finally:
            self._release_ip()

    @property
    def ping_interval(self) -> float | None:
        return self.settings.get("websocket_ping_interval", self.hub.config.ping_interval or None)

    @property
    def ping_timeout(self) -> float | None:
        return self.settings.get("websocket_ping_timeout", self.hub.config.ping_timeout or None)

    @property
    def max_message_size(self) -> int:
        size = self.settings.get("websocket_max_message_size")
        return int(size if size is not None else limits.message_bound(self.hub.config))

    def check_origin(self, origin: str) -> bool:
        return origin_allowed(origin, self.request.headers.get("Host"), self.allow_origins)

    async def _upgrade(self, name: str) -> None:
        """Answer the handshake, then hand the socket to a ``WebSocket``."""
        compression = self.hub.config.compression
        server = ServerProtocol(logger=wire_log, extensions=[DEFLATE] if compression else None)
        headers = Headers(self.request.headers.get_all())
        response = server.accept(Request(self.request.path, headers))
        if response.status_code != 101:
            self.set_status(response.status_code)
            for key, value in response.headers.raw_items():
                if key.lower() in _HANDSHAKE_HEADERS:
                    self.set_header(key, value)
            self.finish(bytes(response.body))
            return
        server.send_response(response)
        greeting = b"".join(server.data_to_send())
        self.set_status(101)
        self.application.log_request(self)
        stream = self.detach()
        if stream.closed() or stream.socket is None:
            return  # the client went away during the handshake
        ip, counter = cast(str, self._ip), self._ip_counter()
        self._ip = None  # released by the socket when it goes
        size = self.max_message_size or None
        release = functools.partial(counter.release, ip)
        self.hub.sockets.configure(self.ping_interval, self.ping_timeout)
        ws = WebSocket(self.hub.gateway, self.permission, ip, size, release, server.extensions)
        early = b""
        if isinstance(stream, tornado.iostream.SSLIOStream):
            # TLS stays with Tornado, which cannot read an end of stream apart from the
            # close: nothing is read until the join is done.
            IOStreamTransport(stream, ws).pause_reading()
        else:
            early = bytes(stream._read_buffer[: stream._read_buffer_size])  # after the headers
            sock = stream.socket
            stream.io_loop.remove_handler(sock)
            try:
                await asyncio.get_running_loop().connect_accepted_socket(lambda: ws, sock)
            except Exception as exc:
                log.info("lost %s during the upgrade: %s", ip, exc)
                counter.release(ip)
                sock.close()
                return
        await ws.start(name, greeting, early)

    def _ip_counter(self) -> limits.Counter:
        return self.hub.ips

    def _release_ip(self) -> None:
        if self._ip is not None:
            self._ip_counter().release(self._ip)
            self._ip = None
