"""``--trusted-proxy``, live: a real reverse proxy in front of a real ``collab serve`` process.

The proxy below listens on 127.0.0.1, adds ``X-Forwarded-For: <fake client>``
to the request head and then forwards every byte both ways (the WebSocket
upgrade and the frames after it), as nginx does with ``proxy_set_header
X-Forwarded-For $proxy_add_x_forwarded_for``. Behind a trusted proxy each
forwarded address has its own per-IP cap; without ``--trusted-proxy`` the
header is ignored, so a client cannot escape the cap by sending one.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from tests.server import ServerProcess
from tests.wait import eventually
from tests.yclient import YClient

CAP = 2


class ForwardingProxy:
    """A reverse proxy for one upstream port that says every client is ``client_ip``.

    It rewrites only the first request head of a connection (one request per
    connection, like HTTP/1.0 to the upstream), then pipes bytes unchanged.
    """

    def __init__(self, upstream: int, client_ip: str) -> None:
        self.upstream = upstream
        self.client_ip = client_ip
        self.port = 0
        self.relayed = 0  # connections forwarded
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    async def start(self) -> ForwardingProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._pipes:
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, rest = head.split(b"\r\n", 1)
            forwarded = f"X-Forwarded-For: {self.client_ip}\r\n".encode()
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.upstream
            )
            upstream_writer.write(request_line + b"\r\n" + forwarded + rest)
            self.relayed += 1
            await asyncio.gather(
                self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer)
            )
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            for w in (writer, upstream_writer):
                if w is not None:
                    w.close()
            self._pipes.discard(task)

    @staticmethod
    async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        with contextlib.suppress(OSError, RuntimeError):
            sink.write_eof()


@contextlib.asynccontextmanager
async def proxies(upstream: int, *client_ips: str) -> AsyncIterator[list[ForwardingProxy]]:
    started = [await ForwardingProxy(upstream, ip).start() for ip in client_ips]
    try:
        yield started
    finally:
        for proxy in started:
            await proxy.close()


def serve(tmp_path: Path, *args: str) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path / "data", "--max-connections-per-ip", str(CAP), *args)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def trusting(tmp_path: Path) -> Iterator[ServerProcess]:
    yield from serve(tmp_path, "--trusted-proxy", "127.0.0.1/32")


@pytest.fixture
def untrusting(tmp_path: Path) -> Iterator[ServerProcess]:
    yield from serve(tmp_path)


async def connect(port: int, name: str, headers: dict[str, str] | None = None) -> YClient:
    return await YClient(f"ws://127.0.0.1:{port}/ws/{name}", headers=headers).connect()


async def refused(port: int, name: str, headers: dict[str, str] | None = None) -> int:
    with pytest.raises(HTTPClientError) as info:
        await connect(port, name, headers)
    return info.value.code


async def test_each_forwarded_address_has_its_own_cap(trusting: ServerProcess) -> None:
    async with proxies(trusting.port, "198.51.100.1", "198.51.100.2") as (ann, bob):
        clients = [await connect(ann.port, f"a{i}") for i in range(CAP)]
        clients += [await connect(bob.port, f"b{i}") for i in range(CAP)]
        # Four sockets from 127.0.0.1 (the proxies), two per forwarded client: all open.
        assert await refused(ann.port, "a-more") == 429
        assert await refused(bob.port, "b-more") == 429
        assert all(c.connected for c in clients)
        clients[0].text += "through the proxy"
        await eventually(lambda: trusting.get("/api/docs/a0/text") == (200, b"through the proxy"))
        await clients[0].close()  # Ann's slot comes back; Bob's are still taken
        await eventually(lambda: reconnects(ann.port, "a-again"))
        assert await refused(bob.port, "b-more") == 429
        listed = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{ann.port}/api/docs")
        assert listed.code == 200
        assert ann.relayed >= CAP + 3 and bob.relayed == CAP + 2
        for client in clients[1:]:
            await client.close()
    log = trusting.output()
    assert re.search(r"refused 198\.51\.100\.1 /ws/a-more: too many connections", log), log
    assert re.search(r"refused 198\.51\.100\.2 /ws/b-more: too many connections", log), log
    assert re.search(r"GET /api/docs \(198\.51\.100\.1\)", log), log  # the access log too


async def reconnects(port: int, name: str) -> bool:
    try:
        client = await connect(port, name)
    except HTTPClientError:
        return False
    await client.close()
    return True


async def test_without_trusted_proxy_the_headers_are_ignored(untrusting: ServerProcess) -> None:
    port = untrusting.port
    spoofed = [
        {"X-Forwarded-For": f"203.0.113.{i}", "X-Real-IP": f"203.0.113.{i}"} for i in range(4)
    ]
    clients = [await connect(port, f"d{i}", spoofed[i]) for i in range(CAP)]
    # A direct client naming yet another address is still 127.0.0.1, capped.
    assert await refused(port, "d-more", spoofed[CAP]) == 429
    assert await refused(port, "d-more", {"Forwarded": "for=203.0.113.99"}) == 429
    # Through the proxy too: its X-Forwarded-For is not believed, all is 127.0.0.1.
    async with proxies(port, "198.51.100.1") as (proxy,):
        assert await refused(proxy.port, "p") == 429
        assert proxy.relayed == 1
    for client in clients:
        await client.close()
    log = untrusting.output()
    assert "refused 127.0.0.1 /ws/d-more: too many connections" in log
    assert "198.51.100" not in log and "203.0.113" not in log
