"""Upgrades answered off Tornado's pipeline (``collab.listen``) answer as the handler does.

The same requests go to two servers of the same configuration: one served by
``collab.listen`` (sync upgrades read and answered on the connection's own
transport, ``upgrade.FastUpgrades``) and one by a plain Tornado ``HTTPServer``
(every request through ``YjsHandler``). Status, the headers a client acts on,
and what a connection can then do must be the same; header limits must hold.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import tornado.httpserver
import tornado.httputil
import tornado.web
from pycrdt import Doc, Text

import collab
from collab.core import protocol
from collab.core.protocol import SyncStep1, Update
from collab.tornado.logs import log_request
from collab.tornado.upgrade import _Pace

from .server import free_port
from .wait import eventually
from .wire import client_frame, parse_frames, raw_connect
from .yclient import YClient

SECRET = "s" * 32


def token(docs: list[str]) -> str:
    return jwt.encode({"exp": time.time() + 600, "docs": docs}, SECRET, algorithm="HS256")


def head(path: str, *extra: str, key: str | None = None, method: str = "GET") -> bytes:
    key = key if key is not None else base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Version: 13",
    ]
    if key:
        lines.append(f"Sec-WebSocket-Key: {key}")
    return ("\r\n".join([*lines, *extra]) + "\r\n\r\n").encode()


async def exchange(port: int, data: bytes, timeout: float = 5) -> bytes:
    """Send ``data``; return what the server answered up to the end of its response head."""
    loop = asyncio.get_running_loop()
    with socket.socket() as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, data)
        got = b""
        while b"\r\n\r\n" not in got:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), timeout)
            if not chunk:
                break
            got += chunk
        return got


def summary(response: bytes) -> tuple[str, dict[str, str]]:
    """The status line, and the headers a client acts on."""
    lines = response.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    wanted = {"www-authenticate", "retry-after", "upgrade", "sec-websocket-extensions"}
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.lower() in wanted:
            headers[name.lower()] = value.strip()
    return lines[0], headers


@pytest.fixture
def servers(tmp_path: Path, io_loop: Any) -> Iterator[tuple[int, int, Any]]:
    """(fast port, Tornado-only port, the fast server), same settings, own data dirs."""
    made: list[Any] = []

    async def start() -> tuple[int, int, Any]:
        def config(name: str) -> collab.Config:
            return collab.Config(
                data_dir=str(tmp_path / name),
                port=0,
                jwt_secret=SECRET,
                max_connections_per_ip=3,
                header_timeout=1.0,
                max_header_bytes=4096,
            )

        fast_config = config("fast")
        fast_hub = collab.Hub(fast_config)
        fast = collab.listen(collab.make_app(fast_config, fast_hub), fast_config, fast_hub)
        assert fast.fast is not None  # the fast path is on
        plain_config = config("plain")
        plain_hub = collab.Hub(plain_config)
        plain = tornado.httpserver.HTTPServer(collab.make_app(plain_config, plain_hub))
        plain_port = free_port()
        plain.listen(plain_port, "127.0.0.1")
        made.extend([fast, (plain, plain_hub)])
        return fast.port, plain_port, fast

    yield io_loop.run_sync(start)

    async def stop() -> None:
        fast, (plain, plain_hub) = made
        await fast.close()
        plain.stop()
        await plain_hub.close()

    io_loop.run_sync(stop)


CASES = {
    "upgrade": head(f"/ws/doc?token={token(['*'])}"),
    "upgrade, deflate offered": head(
        f"/ws/doc?token={token(['*'])}",
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
    ),
    "bad name": head(f"/ws/a%00b?token={token(['*'])}"),
    "name not UTF-8": head(f"/ws/%ff?token={token(['*'])}"),
    "no token": head("/ws/doc"),
    "bad token": head("/ws/doc?token=nonsense"),
    "token for another document": head(f"/ws/doc?token={token(['other'])}"),
    "foreign origin": head(f"/ws/doc?token={token(['*'])}", "Origin: https://evil.example"),
    "loopback origin": head(f"/ws/doc?token={token(['*'])}", "Origin: http://localhost:3000"),
    "no key": head(f"/ws/doc?token={token(['*'])}", key=""),
    "bad key": head(f"/ws/doc?token={token(['*'])}", key="short"),
    "version 8": head(f"/ws/doc?token={token(['*'])}").replace(b"Version: 13", b"Version: 8"),
    "POST": head(f"/ws/doc?token={token(['*'])}", method="POST"),
    "with a body": head(f"/ws/doc?token={token(['*'])}", "Content-Length: 5") + b"hello",
    "HTTP/1.0": head(f"/ws/doc?token={token(['*'])}").replace(b"HTTP/1.1", b"HTTP/1.0", 1),
    "not a websocket": b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    "token in the Authorization header": head("/ws/doc", f"Authorization: Bearer {token(['*'])}"),
    "field names in any case, one repeated": head(f"/ws/doc?token={token(['*'])}")
    .replace(b"Connection: Upgrade", b"connection: keep-alive\r\nCONNECTION: Upgrade")
    .replace(b"Upgrade: websocket", b"upgrade:  WebSocket \t"),
    "percent-encoded name": head(f"/ws/caf%C3%A9?token={token(['*'])}"),
    "a folded field": head(f"/ws/doc?token={token(['*'])}", "X-Note: one\r\n two"),
    "a control character in a field": head(f"/ws/doc?token={token(['*'])}", "X-Note: a\x01b"),
    "the key twice": head(
        f"/ws/doc?token={token(['*'])}", "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA=="
    ),
}
ANSWERED_HERE = {
    "upgrade",
    "upgrade, deflate offered",
    "loopback origin",
    "token in the Authorization header",
    "field names in any case, one repeated",
    "percent-encoded name",
}


@pytest.mark.parametrize("case", CASES)
async def test_each_request_is_answered_as_the_handler_answers_it(servers, case: str) -> None:
    fast_port, plain_port, server = servers
    fast, plain = await exchange(fast_port, CASES[case]), await exchange(plain_port, CASES[case])
    assert summary(fast) == summary(plain)
    assert summary(fast)[0].startswith("HTTP/1.1 ")
    here = case in ANSWERED_HERE
    assert server.fast.answered == (1 if here else 0)  # the others: Tornado's


async def test_the_per_ip_cap_counts_fast_upgrades(servers) -> None:
    fast_port, _, fast = servers
    url = f"ws://127.0.0.1:{fast_port}/ws/capped?token={token(['*'])}"
    clients = [await YClient(url).connect() for _ in range(3)]
    assert fast.fast.answered == 3
    status, headers = summary(await exchange(fast_port, head(f"/ws/capped?token={token(['*'])}")))
    assert status.startswith("HTTP/1.1 429") and headers["retry-after"] == "5"
    await clients[0].close()

    async def admitted() -> bool:
        answer = await exchange(fast_port, head(f"/ws/capped?token={token(['*'])}"))
        return summary(answer)[0].startswith("HTTP/1.1 101")

    await eventually(admitted)  # the slot is given back when a socket goes
    clients[1].text += "still here"
    await eventually(lambda: fast.hub.document("capped").room.text == "still here")


async def test_frames_sent_with_the_head_and_http_keep_alive_work(servers) -> None:
    fast_port, _, fast = servers
    loop = asyncio.get_running_loop()
    step1 = client_frame(0x82, protocol.encode(SyncStep1(b"\x00")))
    with socket.socket() as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", fast_port))
        await loop.sock_sendall(sock, head(f"/ws/early?token={token(['*'])}") + step1)
        data = b""
        for _ in range(100):
            data += await asyncio.wait_for(loop.sock_recv(sock, 65536), 5)
            frames, _ = parse_frames(data.partition(b"\r\n\r\n")[2])
            if any(payload[:2] == b"\x00\x01" for _, payload in frames):  # our step 2
                break
        else:
            raise AssertionError("no step 2")
    assert fast.fast.answered == 1
    # Two HTTP requests on one connection, then an upgrade on it: Tornado's, and it works.
    with socket.socket() as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", fast_port))
        ping = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        await loop.sock_sendall(sock, ping + ping + head(f"/ws/kept?token={token(['*'])}"))
        data = b""
        while data.count(b"HTTP/1.1 ") < 3:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), 5)
            assert chunk
            data += chunk
        assert data.count(b"HTTP/1.1 200") == 2 and b"HTTP/1.1 101" in data
    assert fast.fast.answered == 1  # that one was Tornado's


async def test_header_limits_hold_before_the_upgrade(servers) -> None:
    fast_port, _, _ = servers
    loop = asyncio.get_running_loop()
    # A head past max_header_bytes: dropped unanswered, as Tornado does.
    huge = head(f"/ws/doc?token={token(['*'])}", "X-Pad: " + "p" * 5000)
    assert await exchange(fast_port, huge) == b""
    # A head that never ends: dropped after header_timeout.
    with socket.socket() as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", fast_port))
        await loop.sock_sendall(sock, b"GET /ws/doc HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        started = loop.time()
        assert await asyncio.wait_for(loop.sock_recv(sock, 100), 10) == b""
        assert loop.time() - started >= 0.5


async def test_a_hosts_authorize_hook_gets_tornados_request_on_the_fast_path(
    tmp_path: Path,
) -> None:
    seen: list[Any] = []

    def authorize(request: Any, name: str) -> collab.Permission:
        seen.append(request)
        return collab.Permission(user=request.headers.get("X-User"))

    config = collab.Config(data_dir=str(tmp_path), port=0)
    hub = collab.Hub(config)
    app = tornado.web.Application(collab.routes(hub, "", authorize), log_function=log_request)
    server = collab.listen(app, config, hub)
    try:
        answer = await exchange(server.port, head("/ws/doc?x=1&x=2", "X-User: ada"))
        assert summary(answer)[0] == "HTTP/1.1 101 Switching Protocols"
        assert server.fast is not None and server.fast.answered == 1
        (request,) = seen
        assert isinstance(request, tornado.httputil.HTTPServerRequest)
        assert request.headers["x-user"] == "ada" and request.remote_ip == "127.0.0.1"
        assert request.query_arguments == {"x": [b"1", b"2"]} and request.path == "/ws/doc"
        await eventually(lambda: hub.clients("doc") == 0)  # the test's socket closed
    finally:
        await server.close()


class LoadGate(collab.Extension):
    """Holds every document's load until ``opened`` is set."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()

    async def on_load(self, event: Any) -> None:
        await self.opened.wait()


def typed_updates(count: int, size: int) -> tuple[list[bytes], str]:
    """``count`` updates each appending ``size`` characters, and the text they make."""
    doc = Doc()
    text = doc.get("content", type=Text)
    updates, before = [], doc.get_state()
    for n in range(count):
        text += chr(ord("a") + n % 26) * size
        updates.append(doc.get_update(before))
        before = doc.get_state()
    return updates, str(text)


@pytest.mark.parametrize("path", ["fast", "tornado"])
async def test_what_a_client_sends_while_its_document_loads_is_taken_in_order_after_it(
    tmp_path: Path, path: str
) -> None:
    """Its updates count even though it has left by the time they are applied (the
    document is large enough that they queue behind its snapshot, in the CRDT thread)."""
    gate = LoadGate()
    config = collab.Config(data_dir=str(tmp_path / "data"), port=0)
    hub = collab.Hub(config, extensions=[gate])
    app = collab.make_app(config, hub)
    if path == "fast":
        server: Any = collab.listen(app, config, hub)
        port = server.port
    else:
        server, port = tornado.httpserver.HTTPServer(app), free_port()
        server.listen(port, "127.0.0.1")
    loop = asyncio.get_running_loop()
    updates, expected = typed_updates(24, 60_000)  # more than the join holds before pausing
    sock = await raw_connect(port, "/ws/loading", rcvbuf=1 << 20)
    try:
        answer = b""
        while b"\r\n\r\n" not in answer:  # the 101 comes while the document is still loading
            answer += await asyncio.wait_for(loop.sock_recv(sock, 65536), 5)
        assert answer.startswith(b"HTTP/1.1 101") and not gate.opened.is_set()
        frames = [client_frame(0x82, protocol.encode(SyncStep1(b"\x00")))]
        frames += [client_frame(0x82, protocol.encode(Update(u))) for u in updates]
        sending = asyncio.ensure_future(loop.sock_sendall(sock, b"".join(frames)))
        await asyncio.sleep(0.2)  # no condition to wait for: nothing may happen until the load
        assert hub.document("loading") is None
        gate.opened.set()
        await asyncio.wait_for(sending, 10)
        sock.shutdown(socket.SHUT_WR)  # the end of stream comes after the updates
        data = answer.partition(b"\r\n\r\n")[2]
        while chunk := await asyncio.wait_for(loop.sock_recv(sock, 1 << 16), 10):
            data += chunk
        replies = [payload[:2] for _, payload in parse_frames(data)[0]]
        assert b"\x00\x01" in replies  # our step 1 was answered
        assert await hub.get_text("loading") == expected
    finally:
        sock.close()
        if path == "fast":
            await server.close()
        else:
            server.stop()
        await hub.close()


async def test_the_101_and_the_first_messages_go_out_in_one_write(
    servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast_port, _, _ = servers
    writes: list[bytes] = []
    real_write = asyncio.selector_events._SelectorSocketTransport.write  # type: ignore[attr-defined]

    def write(transport: Any, data: bytes) -> None:
        writes.append(bytes(data))
        real_write(transport, data)

    monkeypatch.setattr(asyncio.selector_events._SelectorSocketTransport, "write", write)  # type: ignore[attr-defined]
    await YClient(f"ws://127.0.0.1:{fast_port}/ws/warm?token={token(['*'])}").connect()
    writes.clear()  # the document is loaded now: this join does not wait
    client = await YClient(f"ws://127.0.0.1:{fast_port}/ws/warm?token={token(['*'])}").connect()
    first = next(w for w in writes if w.startswith(b"HTTP/1.1 101"))
    frames, whole = parse_frames(first.partition(b"\r\n\r\n")[2])
    assert whole and [payload[:2] for _, payload in frames][:1] == [b"\x00\x00"]  # step 1
    await client.close()


class CountedHead:
    """Stands for a connection whose request head was read: records when it is taken."""

    def __init__(self, index: int, taken: list[tuple[int, int]], ticks: list[int]) -> None:
        self.index, self.taken, self.ticks = index, taken, ticks

    def take(self) -> None:
        self.taken.append((self.index, self.ticks[0]))


async def test_a_burst_of_heads_is_taken_in_order_over_loop_iterations() -> None:
    loop = asyncio.get_running_loop()
    ticks = [0]

    def tick() -> None:  # counts the loop's iterations
        ticks[0] += 1
        if ticks[0] < 1000:
            loop.call_soon(tick)

    loop.call_soon(tick)
    await asyncio.sleep(0)
    pace = _Pace(budget=-1.0)  # every iteration's share is one head
    taken: list[tuple[int, int]] = []
    for index in range(5):
        pace.take(CountedHead(index, taken, ticks))  # type: ignore[arg-type]
    assert [index for index, _ in taken] == [0]  # the first at once, the rest wait
    await eventually(lambda: len(taken) == 5)
    assert [index for index, _ in taken] == [0, 1, 2, 3, 4]
    iterations = [tick for _, tick in taken]
    assert len(set(iterations)) == 5  # one a turn: the loop ran in between
    later = CountedHead(5, taken, ticks)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    pace.take(later)  # nothing waits and this iteration has room: taken at once
    assert taken[-1][0] == 5
