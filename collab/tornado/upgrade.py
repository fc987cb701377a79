"""WebSocket upgrades without Tornado's request pipeline: ``FastUpgrades``.

Profiling 5,000 handshakes showed most of the server's time per connection in
Tornado's HTTP machinery (an ``IOStream``, header reading with timeouts, the
routing delegates, a ``RequestHandler`` with its output transforms) and in
moving the socket to a second transport afterwards. ``listen`` therefore
accepts plain (non-TLS) connections on asyncio transports of its own and reads
each request head itself. A head that is an ordinary upgrade to the sync
endpoint (``GET``, HTTP/1.1, the route of an unsubclassed ``YjsHandler``, the
WebSocket headers valid, no body) is checked by the same ``handler.admit`` the
handler runs (name, origin, per-IP cap, ``authorize``, the store) and answered
on the same transport, which then carries the ``WebSocket`` for its life.

Anything else, and every refusal, goes to Tornado: the socket is handed to the
``HTTPServer`` with the bytes already read, and Tornado serves it exactly as
before (a refused upgrade is checked again there, so its status, headers and
log line are the handler's own). Header limits hold on both paths: the head
may be at most ``max_header_bytes`` and must arrive within ``header_timeout``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import functools
import hashlib
import inspect
import logging
import os
import re
import socket
import time
import urllib.parse
from collections.abc import Awaitable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import tornado.escape
import tornado.httpserver
import tornado.httputil
import tornado.iostream
import tornado.routing
import tornado.web
from websockets.exceptions import InvalidHeader, NegotiationError
from websockets.extensions.base import Extension
from websockets.headers import build_extension, parse_extension

from ..core import limits
from ..core.auth import Permission, allow_all, origin_allowed, redact
from ..core.config import Config
from ..server.hub import Hub
from ..server.sockets import WebSocket
from ..server.tokens import JwtAuthorizer
from .clients import trusted_proxies
from .handler import DEFLATE, YjsHandler, admit_now, admitted
from .logs import access_log, log_request

__all__ = ["FastUpgrades"]

log = logging.getLogger("collab.handler")

HEADS_SECONDS = 0.005  # of request heads per loop iteration at most (see ``_Pace``)
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_REQUEST_LINE = re.compile(rb"GET ([^ \r\n]+) HTTP/1\.1\r\n")
# One header field: a token, a colon, a value without control characters (a tab
# is fine), the blank around the value dropped. Anything else goes to Tornado.
_FIELD = re.compile(
    rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*?)[ \t]*\r\n"
)


class _Fields(Mapping[str, str]):
    """A request head's fields, by name in any case; a repeated field's values
    are joined with ``,`` (as Tornado's ``HTTPHeaders.get``); ``get_list`` has them apart."""

    __slots__ = ("_lists",)

    def __init__(self, lists: dict[str, list[str]]) -> None:
        self._lists = lists  # by lower-case name

    def __getitem__(self, name: str) -> str:
        values = self._lists[name.lower()]
        return values[0] if len(values) == 1 else ",".join(values)

    def __iter__(self) -> Iterator[str]:
        return iter(self._lists)

    def __len__(self) -> int:
        return len(self._lists)

    def get_list(self, name: str) -> list[str]:
        return self._lists.get(name.lower(), [])


@dataclass(slots=True)
class _Request:
    """What collab's own authorizers read of an upgrade request (``core.auth.Request``).

    A host's ``authorize`` gets Tornado's ``HTTPServerRequest`` (``tornado_request``).
    """

    uri: str
    headers: _Fields
    remote_ip: str = ""
    started: float = field(default_factory=time.time)
    _query: dict[str, list[bytes]] | None = None

    @property
    def path(self) -> str:
        return self.uri.partition("?")[0]

    @property
    def query_arguments(self) -> dict[str, list[bytes]]:
        if self._query is None:
            query = self.uri.partition("?")[2]
            self._query = tornado.escape.parse_qs_bytes(query, keep_blank_values=True)
        return self._query

    def tornado_request(self) -> tornado.httputil.HTTPServerRequest:
        """The same request as Tornado's ``HTTPServerRequest``."""
        headers = tornado.httputil.HTTPHeaders()
        for name in self.headers:
            for value in self.headers.get_list(name):
                headers.add(name, value)
        request = tornado.httputil.HTTPServerRequest(
            start_line=tornado.httputil.RequestStartLine("GET", self.uri, "HTTP/1.1"),
            headers=headers,
        )
        request.remote_ip = self.remote_ip
        request._start_time = self.started
        return request

    def request_time(self) -> float:
        return time.time() - self.started


@dataclass(frozen=True, slots=True)
class _Route:
    hub: Hub
    authorize: Any
    origins: frozenset[str]

    @property
    def ours(self) -> bool:
        """Does ``authorize`` read only what ``_Request`` has (collab's own)?"""
        return self.authorize is allow_all or type(self.authorize) is JwtAuthorizer


@dataclass(slots=True)
class _Plan:
    """A head fit for the fast path: what the upgrade needs."""

    request: _Request
    route: _Route
    raw_name: str
    key: bytes
    extensions: list[Extension]
    extension_header: bytes


class FastUpgrades:
    """Serves ``listening`` sockets: sync upgrades here, everything else by ``http``."""

    def __init__(
        self, app: tornado.web.Application, http: tornado.httpserver.HTTPServer, config: Config
    ) -> None:
        self.app = app
        self.http = http
        self.max_header_bytes = config.max_header_bytes or 64 << 10
        self.header_timeout = config.header_timeout or None
        self.rules = self._rules(app)
        self.servers: list[asyncio.AbstractServer] = []
        self.answered = 0  # upgrades answered here (the rest went to Tornado)
        self.pace = _Pace(HEADS_SECONDS)
        self._starting: list[asyncio.Task[asyncio.AbstractServer]] = []

    @staticmethod
    def _rules(app: tornado.web.Application) -> list[tuple[re.Pattern[str], _Route | None]]:
        """The application's path rules, with the sync endpoint's settings where it is one.

        Empty (no fast path) when routing is anything but one list of path
        patterns: host-specific handlers, nested routers.
        """
        if len(app.default_router.rules) != 1:
            return []
        if app.settings.get("log_function", log_request) is not log_request:
            return []  # the host writes its own access log: Tornado calls it
        rules: list[tuple[re.Pattern[str], _Route | None]] = []
        for rule in app.wildcard_router.rules:
            if not isinstance(rule.matcher, tornado.routing.PathMatches):
                return []
            kwargs = rule.target_kwargs
            if rule.target is YjsHandler and isinstance(kwargs.get("hub"), Hub):
                origins = frozenset(o.rstrip("/").lower() for o in kwargs.get("allow_origins", ()))
                route = _Route(kwargs["hub"], kwargs.get("authorize", allow_all), origins)
                rules.append((rule.matcher.regex, route))
            else:
                rules.append((rule.matcher.regex, None))
        return rules if any(route is not None for _, route in rules) else []

    def start(self, listening: list[socket.socket], backlog: int) -> None:
        """Start accepting on ``listening`` (on the running loop; serving begins at once)."""
        loop = asyncio.get_running_loop()
        for sock in listening:
            self._starting.append(
                loop.create_task(
                    loop.create_server(lambda: _Head(self), sock=sock, backlog=backlog)
                )
            )

    async def close(self) -> None:
        """Stop accepting; connections already served live on."""
        for task in self._starting:
            with contextlib.suppress(Exception):
                self.servers.append(await task)
        self._starting.clear()
        for server in self.servers:
            server.close()

    # -- one request head ------------------------------------------------------------------

    def plan(self, head: bytes) -> _Plan | None:
        """What to do with a request head (without its blank line); None: Tornado serves it."""
        head += b"\r\n"
        start = _REQUEST_LINE.match(head)
        if start is None:
            return None
        lists: dict[str, list[str]] = {}
        pos, end = start.end(), len(head)
        while pos < end:
            found = _FIELD.match(head, pos)
            if found is None:
                return None  # folded, malformed or odd: Tornado decides
            pos = found.end()
            name, value = found[1].decode("latin-1").lower(), found[2].decode("latin-1")
            if name in lists:
                lists[name].append(value)
            else:
                lists[name] = [value]
        headers = _Fields(lists)
        if "content-length" in lists or "transfer-encoding" in lists or "host" not in lists:
            return None
        if headers.get("Upgrade", "").lower() != "websocket":
            return None
        connection = {t.strip().lower() for t in headers.get("Connection", "").split(",")}
        if "upgrade" not in connection or headers.get("Sec-WebSocket-Version") != "13":
            return None
        key = headers.get_list("Sec-WebSocket-Key")
        try:
            if len(key) != 1 or len(base64.b64decode(key[0], validate=True)) != 16:
                return None
        except binascii.Error:
            return None
        request = _Request(start[1].decode("latin-1"), headers)
        for regex, route in self.rules:  # as Tornado's ``PathMatches`` match them
            found_path = regex.match(request.path)
            if found_path is None:
                continue
            if route is None or regex.groupindex or regex.groups != 1:
                return None
            arg = found_path.group(1)
            if arg is None:
                return None
            try:
                raw = urllib.parse.unquote_to_bytes(arg).decode("utf-8")
            except UnicodeDecodeError:
                return None  # Tornado's 400
            break
        else:
            return None
        extensions: list[Extension] = []
        header = b""
        offers = headers.get_list("Sec-WebSocket-Extensions")
        if offers and route.hub.config.compression:
            try:
                parsed = [ext for value in offers for ext in parse_extension(value)]
            except InvalidHeader:
                return None
            for ext_name, params in parsed:
                if ext_name != DEFLATE.name:
                    continue
                try:
                    answer, extension = DEFLATE.process_request_params(params, [])
                except NegotiationError:
                    continue
                extensions.append(extension)
                answered = build_extension([(ext_name, answer)])
                header = f"Sec-WebSocket-Extensions: {answered}\r\n".encode()
                break
        return _Plan(request, route, raw, key[0].encode(), extensions, header)

    def upgrade(self, transport: asyncio.Transport, plan: _Plan, reader: _Head) -> None:
        """Admit and answer the upgrade of ``plan``, or give it to Tornado: at once,
        unless a host's ``authorize`` hook or the document's load has to be waited for.

        ``reader`` holds the request and what the client sent after it.
        """
        route, light = plan.route, plan.request
        hub = route.hub
        peer = transport.get_extra_info("peername")
        ip = light.remote_ip = peer[0] if isinstance(peer, tuple) else ""
        cidrs = hub.config.trusted_proxies
        if cidrs:
            ip = trusted_proxies(cidrs).client_address(ip, light.headers)
        host, origins = light.headers.get("Host"), route.origins
        request = light if route.ours else light.tornado_request()  # what a host's hook knows

        def origin_ok(origin: str) -> bool:
            return origin_allowed(origin, host, origins)

        try:
            name, result = admit_now(hub, route.authorize, origin_ok, request, plan.raw_name, ip)
        except Exception as exc:
            self._refused(transport, reader, exc)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(self._admit(transport, plan, reader, name, result, ip))
            task.add_done_callback(_log_failure)
            return
        self._answer(transport, plan, reader, name, result, ip)

    async def _admit(
        self,
        transport: asyncio.Transport,
        plan: _Plan,
        reader: _Head,
        name: str,
        pending: Awaitable[Permission],
        ip: str,
    ) -> None:
        try:
            permission = await admitted(plan.route.hub, ip, pending)
        except Exception as exc:
            self._refused(transport, reader, exc)
            return
        self._answer(transport, plan, reader, name, permission, ip)

    def _refused(self, transport: asyncio.Transport, reader: _Head, exc: Exception) -> None:
        log.debug("upgrade refused here, handed to the handler: %r", exc)
        self.handoff(transport, reader.buffer)  # the handler says so, and logs it

    def _answer(
        self,
        transport: asyncio.Transport,
        plan: _Plan,
        reader: _Head,
        name: str,
        permission: Permission,
        ip: str,
    ) -> None:
        """Send the 101 and hand the connection to a ``WebSocket``, which joins ``name``."""
        hub = plan.route.hub
        if transport.is_closing():
            hub.ips.release(ip)
            return
        accept = base64.b64encode(hashlib.sha1(plan.key + _GUID).digest())
        greeting = (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n" + plan.extension_header + b"\r\n"
        )
        self._log(plan.request, name, permission, ip)
        self.answered += 1
        settings = self.app.settings
        hub.sockets.configure(
            settings.get("websocket_ping_interval", hub.config.ping_interval or None),
            settings.get("websocket_ping_timeout", hub.config.ping_timeout or None),
        )
        size = settings.get("websocket_max_message_size")
        size = int(size if size is not None else limits.message_bound(hub.config)) or None
        release = functools.partial(hub.ips.release, ip)
        ws = WebSocket(hub.gateway, permission, ip, size, release, plan.extensions)
        transport.set_protocol(ws)
        ws.connection_made(transport)
        joining = ws.begin(name, greeting, reader.buffer[reader.head_bytes :])
        if joining is not None:
            joining.add_done_callback(_log_failure)

    @staticmethod
    def _log(request: _Request, name: str, permission: Permission, ip: str) -> None:
        """The access log line ``log_request`` writes for a 101."""
        if not access_log.isEnabledFor(logging.INFO):
            return
        duration = 1000.0 * request.request_time()
        fields: dict[str, Any] = {
            "method": "GET",
            "path": redact(request.path),
            "remote": ip,
            "document": name[:200],
        }
        if permission.user is not None:
            fields["sub"] = permission.user
        fields.update(event="request", status=101, duration_ms=round(duration, 2))
        summary = f"GET {redact(request.uri)} ({ip})"
        access_log.info("%d %s %.2fms", 101, summary, duration, extra=fields)

    def handoff(self, transport: asyncio.Transport, data: bytes) -> None:
        """Give the connection to Tornado's ``HTTPServer``, with what was read of it."""
        sock = transport.get_extra_info("socket")
        address = transport.get_extra_info("peername")
        if sock is None or transport.is_closing():
            transport.abort()
            return
        try:
            fd = os.dup(sock.fileno())
        except OSError:
            transport.abort()
            return
        transport.abort()  # closes only asyncio's descriptor: the connection lives on in ``fd``
        own = socket.socket(fileno=fd)
        own.setblocking(False)
        http = self.http
        stream = tornado.iostream.IOStream(
            own, max_buffer_size=http.max_buffer_size, read_chunk_size=http.read_chunk_size
        )
        if data:
            stream._read_buffer += data
            stream._read_buffer_size += len(data)
        http.handle_stream(stream, address)


class _Pace:
    """Spreads a burst of request heads over iterations of the event loop.

    Past ``budget`` seconds of heads in one iteration, the rest wait, in order,
    for the next ones. What the first ones wait for (a document's load, done in
    a thread) then comes back in between, and the other connections' messages
    are not held up behind hundreds of handshakes. Without it, 300 clients
    joining one new document had their load finish only after every head was
    read (one iteration of 60 ms); ``HEADS_SECONDS`` is 5 ms because 2 ms gave
    a higher handshake p99 over 5,000 connections.
    """

    __slots__ = ("_since", "_waiting", "budget")

    def __init__(self, budget: float) -> None:
        self.budget = budget
        self._since: float | None = None  # when this iteration's first head was taken
        self._waiting: collections.deque[_Head] = collections.deque()

    def take(self, head: _Head) -> None:
        """``head.take()`` now, or in a later iteration after those that wait."""
        if not self._waiting and not self._spent():
            head.take()
            return
        if not self._waiting:
            asyncio.get_running_loop().call_soon(self._drain)
        self._waiting.append(head)

    def _spent(self) -> bool:
        now = time.perf_counter()
        if self._since is None:
            self._since = now
            asyncio.get_running_loop().call_soon(self._reset)  # early in the next iteration
            return False
        return now - self._since > self.budget

    def _reset(self) -> None:
        self._since = None

    def _drain(self) -> None:
        waiting = self._waiting
        while waiting and not self._spent():
            waiting.popleft().take()
        if waiting:
            asyncio.get_running_loop().call_soon(self._drain)


class _Head(asyncio.Protocol):
    """A new connection until its request head is read."""

    __slots__ = ("buffer", "fast", "head_bytes", "started", "timer", "transport")

    def __init__(self, fast: FastUpgrades) -> None:
        self.fast = fast
        self.buffer = b""  # the request head, and once it is read what follows it
        self.head_bytes = 0  # the head's length with its blank line, once it is read
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.started = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.fast.header_timeout:
            loop = asyncio.get_running_loop()
            self.timer = loop.call_later(self.fast.header_timeout, transport.abort)

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        if self.head_bytes:  # being upgraded: kept for the WebSocket or for Tornado
            self.buffer += data
            if len(self.buffer) > self.fast.max_header_bytes + self.head_bytes:
                transport.pause_reading()  # the WebSocket reads on once it has joined
            return
        buffer = self.buffer + data if self.buffer else data
        end = buffer.find(b"\r\n\r\n")
        if end < 0 or end + 4 > self.fast.max_header_bytes:
            if end >= 0 or len(buffer) > self.fast.max_header_bytes:
                self._done()
                self.fast.handoff(transport, buffer)  # Tornado refuses it as it always did
            else:
                self.buffer = buffer
            return
        self._done()
        self.buffer, self.head_bytes = buffer, end + 4
        self.fast.pace.take(self)

    def take(self) -> None:
        """Plan and answer the head that was read, or hand it to Tornado."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        try:
            plan = self.fast.plan(self.buffer[: self.head_bytes - 4])
        except Exception:
            log.exception("reading a request head")
            plan = None
        if plan is None:
            self.fast.handoff(transport, self.buffer)
            return
        try:
            self.fast.upgrade(transport, plan, self)
        except Exception:
            log.exception("upgrade failed")
            transport.abort()

    def _done(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("upgrade failed", exc_info=task.exception())
