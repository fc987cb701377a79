"""Interop with stock Yjs clients: npm ``yjs`` + ``y-websocket`` in node processes.

Each ``tests/js/peer.mjs`` process is one ``WebsocketProvider`` (over the
``ws`` package, BroadcastChannel off) that these tests drive through JSON
lines: concurrent random edits converge, awareness comes and goes (also when
a peer is SIGKILLed, so no close frame), late joiners get everything, JS and
Python clients share a document, and room names are spelled every which way.
Skipped without node or ``tests/js/node_modules``, failed instead when ``CI``
is set.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import quote

import pytest

from collab import Config
from tests.crdt import random_edits, state_vector
from tests.jsclient import JsPeer, JsPeers
from tests.wait import eventually
from tests.yclient import YClient

OPS = 300


@pytest.fixture
def server_url(http_server, port) -> str:
    """What a stock client is given: ``new WebsocketProvider(server_url, name, doc)``.

    Depends on ``http_server`` so the app is listening before node connects.
    """
    return f"ws://127.0.0.1:{port}/ws"


def _svs_agree(states: list[dict[str, Any]], client_ids: set[int]) -> bool:
    svs = [{int(k): v for k, v in s["sv"].items()} for s in states]
    assert all(set(sv) >= client_ids for sv in svs), f"not every edit arrived: {svs}"
    assert all(sv == svs[0] for sv in svs), f"state vectors differ: {svs}"
    assert all(s["text"] == states[0]["text"] for s in states), "texts differ"
    return True


async def _converged(peers: list[JsPeer], timeout: float = 15.0) -> dict[str, Any]:
    """Wait until every peer holds every edit and the same text; return a state."""
    client_ids = {peer.client_id for peer in peers}

    async def probe() -> dict[str, Any] | None:
        states = [await peer.state() for peer in peers]
        return states[0] if _svs_agree(states, client_ids) else None

    return await eventually(probe, timeout)


async def _api_text(client, name: str) -> str:
    response = await client.fetch(f"/api/docs/{quote(name, safe='')}/text")
    return response.body.decode()


async def test_three_providers_converge(server_url, http_server_client):
    name = "js converge"
    async with JsPeers() as js:
        peers = await asyncio.gather(*(js.peer(server_url, name, f"peer-{x}") for x in "abc"))
        results = await asyncio.gather(
            *(
                peer.request("edit", seed=7 + i, ops=OPS, label="abc"[i], timeout=30)
                for i, peer in enumerate(peers)
            )
        )
        during = [r["remoteDuring"] for r in results]
        assert all(n > 0 for n in during), f"edits did not interleave: {during}"

        final = await _converged(peers)
        assert len(final["text"]) > OPS  # the edits did not cancel out
        fresh = await js.peer(server_url, name, "fresh")
        assert (await fresh.state())["sv"] == final["sv"]
        assert (await fresh.state())["text"] == final["text"]
        assert await _api_text(http_server_client, name) == final["text"]


async def test_awareness_removed_when_socket_cut(server_url):
    async with JsPeers() as js:
        a, b, c = await asyncio.gather(*(js.peer(server_url, "presence", x) for x in "abc"))
        await a.request("awareness", state={"user": "alice"})
        await b.request("awareness", state={"user": "bob"})

        async def seen() -> bool:
            for peer in (b, c):
                present = (await peer.state())["awareness"]
                assert present.get(str(a.client_id)) == {"user": "alice"}, present
            assert (await a.state())["awareness"].get(str(b.client_id)) == {"user": "bob"}
            return True

        await eventually(seen, 5)

        a.kill()  # the OS closes the TCP connection: no WebSocket close frame
        killed = time.monotonic()
        assert await asyncio.wait_for(a.proc.wait(), 5) == -9

        async def removed() -> bool:
            for peer in (b, c):
                present = (await peer.state())["awareness"]
                assert str(a.client_id) not in present, f"{peer.name} still sees a: {present}"
            return True

        await eventually(removed, 5)
        assert time.monotonic() - killed < 5
        # bob's own state is untouched by alice's departure.
        assert (await c.state())["awareness"].get(str(b.client_id)) == {"user": "bob"}


async def test_late_joiner_receives_full_state(server_url, http_server_client):
    name = "late joiner"
    async with JsPeers() as js:
        first = await js.peer(server_url, name, "first")
        await first.request("insert", index=0, text="hello from the first peer")
        await first.request("set", key="title", value="Notes")
        await first.request("push", items=[1, "two", {"three": 3}])
        expected = await first.state()

        second = await js.peer(server_url, name, "second")  # first still connected
        state = await second.state()
        assert (state["text"], state["map"], state["array"]) == (
            expected["text"],
            expected["map"],
            expected["array"],
        )

        await first.request("quit")
        await second.request("quit")

        async def nobody_connected() -> bool:
            response = await http_server_client.fetch("/api/docs")
            docs = {d["name"]: d for d in json.loads(response.body)}
            return docs[name]["clients"] == 0

        await eventually(nobody_connected, 5)
        # Nobody else holds the document now: only the server can supply it.
        third = await js.peer(server_url, name, "third")
        state = await third.state()
        assert state["sv"] == expected["sv"]
        assert (state["text"], state["map"], state["array"]) == (
            expected["text"],
            expected["map"],
            expected["array"],
        )


async def test_js_and_python_clients_converge(server_url, ws_url, http_server_client):
    name = "mixed"
    async with JsPeers() as js:
        peer = await js.peer(server_url, name, "js")
        py = await YClient(ws_url(name)).connect()
        js_result, py_during = await asyncio.gather(
            peer.request("edit", seed=11, ops=OPS, label="j", timeout=30),
            random_edits(py, seed=12, ops=OPS, label="p", pace=0.002),  # as slow as node
        )
        assert js_result["remoteDuring"] > 0 and py_during > 0, "edits did not interleave"

        ids = {peer.client_id, py.doc.client_id}

        async def probe() -> dict[str, Any] | None:
            state = await peer.state()
            sv = {int(k): v for k, v in state["sv"].items()}
            assert set(sv) >= ids, f"not every edit arrived: {sv}"
            assert sv == state_vector(py.doc), "state vectors differ"
            assert state["text"] == str(py.text), "texts differ"
            return state

        final = await eventually(probe, 15)
        assert len(final["text"]) > OPS
        assert await _api_text(http_server_client, name) == final["text"]
        await py.close()


# Spellings of one name as a stock client sends them: y-websocket appends the
# room name to the URL unencoded (the URL parser then escapes spaces and
# non-ASCII), so the server must map raw and percent-encoded forms together.
SPELLINGS = [
    ("two words", "two%20words"),
    ("naïve ☃ 文档", quote("naïve ☃ 文档", safe="")),
    ("100%", "100%25"),
    ("a/b/c", "a%2Fb%2Fc"),
    ("50% off/été", quote("50% off/été", safe="")),
]
NAMES = [raw for raw, _ in SPELLINGS]
# URL path segments naming invalid documents (control characters, too long,
# not UTF-8); a raw control character would be escaped by the URL parser too.
INVALID = ["bad\x01name", "bad%00name", "del%7F", "x" * 201, "文" * 67, "%E6%96%87" * 67, "%FF"]
VALID_EDGE = ["y" * 200, "文" * 66 + "yy"]  # exactly 200 bytes


async def test_name_spellings_map_to_one_document(server_url, http_server_client):
    same = [[raw, encoded, f"token-{i}"] for i, (raw, encoded) in enumerate(SPELLINGS)]
    same += [[encoded, raw, f"back-{i}"] for i, (raw, encoded) in enumerate(SPELLINGS)]
    spec = json.dumps({"same": same, "upgrade": INVALID + VALID_EDGE})
    async with JsPeers() as js:
        script = await js.start("names.mjs", server_url, spec, name="names")
        results = [await script.event("result", timeout=40) for _ in same + INVALID + VALID_EDGE]

    for (_, _, token), result in zip(same, results[: len(same)], strict=True):
        assert "error" not in result, result
        assert token in result["text"], result

    for i, name in enumerate(NAMES):
        # Each name is its own document, whichever spelling wrote to it, and the
        # REST API finds it under the encoded and the (URL-legal) raw spelling.
        assert await _api_text(http_server_client, name) == f"token-{i}back-{i}"
        raw = await http_server_client.fetch(f"/api/docs/{quote(name, safe='/%')}/text")
        assert raw.body.decode() == f"token-{i}back-{i}"
    response = await http_server_client.fetch("/api/docs")
    listed = {d["name"] for d in json.loads(response.body)}
    assert set(NAMES) <= listed <= set(NAMES) | set(VALID_EDGE), listed

    statuses = {r["upgrade"]: r.get("status", r.get("error")) for r in results[len(same) :]}
    assert statuses == {**{s: 400 for s in INVALID}, **{s: 101 for s in VALID_EDGE}}
    for segment in INVALID:
        response = await http_server_client.fetch(
            f"/api/docs/{quote(segment, safe='%')}/text", raise_error=False
        )
        assert response.code == 400, (segment, response.code)


class _FreezableProxy:
    """A loopback TCP relay that can go silent without closing anything.

    Once frozen it forwards nothing in either direction but keeps both sockets
    open: to the server, the peer behind it is a half-open connection that only
    keep-alive pings can detect (no FIN, no close frame).
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.frozen = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._pipes: list[asyncio.Task[None]] = []

    async def start(self) -> _FreezableProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]
        self._pipes += [
            asyncio.ensure_future(self._pipe(reader, up_writer)),
            asyncio.ensure_future(self._pipe(up_reader, writer)),
        ]

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1 << 16):
            if not self.frozen:  # frozen: swallow, so neither side sees backpressure
                writer.write(data)

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        for pipe in self._pipes:
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)
        await self._server.wait_closed()


class TestKeepAlive:
    """A peer that goes silent (half-open TCP) is dropped by keep-alive pings."""

    PING = 1.0  # interval and timeout, seconds
    CLOSE_GRACE = 5.0  # Tornado waits this long for the close handshake, then aborts

    @pytest.fixture
    def config(self, tmp_path) -> Config:
        return Config(
            data_dir=str(tmp_path / "data"),
            ping_interval=self.PING,
            ping_timeout=self.PING,
        )

    async def test_silent_peer_awareness_removed(self, server_url, port):
        proxy = await _FreezableProxy(port).start()
        try:
            async with JsPeers() as js:
                ghost = await js.peer(f"ws://127.0.0.1:{proxy.port}/ws", "keepalive", "ghost")
                watcher = await js.peer(server_url, "keepalive", "watcher")
                await ghost.request("awareness", state={"user": "ghost"})

                async def seen() -> bool:
                    present = (await watcher.state())["awareness"]
                    return present.get(str(ghost.client_id)) == {"user": "ghost"}

                await eventually(seen, 5)
                proxy.frozen = True  # no FIN, no close frame, no pongs
                frozen = time.monotonic()

                async def removed() -> bool:
                    present = (await watcher.state())["awareness"]
                    assert str(ghost.client_id) not in present, present
                    return True

                bound = 2 * self.PING + self.CLOSE_GRACE + 2.0
                await eventually(removed, bound)
                elapsed = time.monotonic() - frozen
                assert elapsed >= self.PING  # it took keep-alive, not a socket close
        finally:
            await proxy.close()
