"""Limits: rates, caps, frame size, slow readers and what an unauthenticated client may send."""

from __future__ import annotations

import asyncio
import random
import socket
import string
import struct
import time

import jwt
import pytest
from pycrdt import Doc, Text
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from collab import Config
from collab.core import protocol
from collab.core.errors import PolicyViolation
from collab.core.limits import Counter, Outbox, TokenBucket, coalesce
from collab.core.protocol import AwarenessEntry, AwarenessUpdate, QueryAwareness, SyncStep1, Update
from tests.crdt import typed_updates
from tests.wire import parse_frames as _parse_frames
from tests.wire import raw_connect, read_frames
from tests.yclient import YClient, eventually

# -- the pure rules --------------------------------------------------------------------------


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    assert all(bucket.take(1, 0.0) for _ in range(5))
    assert not bucket.take(1, 0.0)
    assert bucket.take(1, 0.1)  # 0.1 s at 10/s refills one
    assert not bucket.take(1, 0.1)
    assert bucket.take(5, 100.0) and not bucket.take(1, 100.0)  # never more than the burst
    assert not bucket.take(1, 50.0)  # a clock going backwards refills nothing
    unlimited = TokenBucket(rate=0, burst=0, now=0.0)
    assert all(unlimited.take(10**9, 0.0) for _ in range(3))


def test_counter_caps_each_key_and_forgets_released_ones() -> None:
    counter = Counter(cap=2)
    counter.acquire("a")
    counter.acquire("a")
    counter.acquire("b")
    with pytest.raises(PolicyViolation, match="too many connections"):
        counter.acquire("a")
    counter.release("a")
    counter.acquire("a")
    for _ in range(3):
        counter.release("a")
    counter.release("b")
    assert counter.counts == {}
    uncapped = Counter(cap=0)
    for _ in range(100):
        uncapped.acquire("x")


def awareness(*entries: tuple[int, int, str]) -> bytes:
    payload = protocol.encode_awareness([AwarenessEntry(*e) for e in entries])
    return protocol.encode(AwarenessUpdate(payload))


def test_coalesce_merges_updates_and_keeps_newest_awareness() -> None:
    _, updates = typed_updates("hello world")
    step1 = protocol.encode(SyncStep1(b"\x00"))
    frames = [step1, awareness((5, 1, '"a"'))]
    frames += [protocol.encode(Update(u)) for u in updates]
    frames += [awareness((5, 3, '"c"'), (6, 1, '"z"')), awareness((5, 2, '"b"'))]
    merged = coalesce(frames)
    assert merged[0] == step1
    assert len(merged) == 3
    assert sum(map(len, merged)) < sum(map(len, frames)) / 2
    replica: Doc = Doc()
    message = protocol.decode(merged[1])
    assert isinstance(message, Update)
    replica.apply_update(message.update)
    assert str(replica.get("content", type=Text)) == "hello world"
    last = protocol.decode(merged[2])
    assert isinstance(last, AwarenessUpdate)
    states = {e.client_id: e.state for e in protocol.decode_awareness(last.payload)}
    assert states == {5: '"c"', 6: '"z"'}


def test_coalesce_breaks_clock_ties_as_clients_do() -> None:
    # Equal clocks: a removal replaces a present state, another state does not
    # (the room's rule, awareness.newer): a client applying the frames one by
    # one keeps "first" in the first case and nothing in the second.
    (kept,) = coalesce([awareness((5, 3, '"first"')), awareness((5, 3, '"second"'))])
    message = protocol.decode(kept)
    assert isinstance(message, AwarenessUpdate)
    assert protocol.decode_awareness(message.payload) == [AwarenessEntry(5, 3, '"first"')]
    (kept,) = coalesce([awareness((5, 3, '"first"')), awareness((5, 3, "null"))])
    message = protocol.decode(kept)
    assert isinstance(message, AwarenessUpdate)
    assert protocol.decode_awareness(message.payload) == [AwarenessEntry(5, 3, "null")]


def test_outbox_merges_before_refusing_and_refuses_past_its_bound() -> None:
    _, updates = typed_updates("x" * 200)
    outbox = Outbox(bound=2000)
    # about 2.8 KB of frames, about 1.2 KB once merged
    assert all(outbox.put(protocol.encode(Update(u))) for u in updates)
    assert outbox.size <= 2000
    (_merged,) = outbox.take()
    assert outbox.size == 0 and outbox.frames == []
    _, noise = typed_updates("".join(random.choices(string.ascii_letters, k=3000)), 8)
    big = Outbox(bound=2000)
    assert not all(big.put(protocol.encode(Update(u))) for u in noise)  # 3 KB can't shrink


def test_outbox_holds_one_message_larger_than_its_bound_and_the_bound_beyond_it() -> None:
    pasted: Doc = Doc(client_id=5000)
    pasted.get("content", type=Text).insert(
        0, "".join(random.choices(string.ascii_letters, k=5000))
    )
    paste = pasted.get_update()
    outbox = Outbox(bound=2000)
    assert outbox.put(protocol.encode(Update(paste)))  # 5 KB: a paste the document took
    _, typing = typed_updates("y" * 40)
    assert all(outbox.put(protocol.encode(Update(u))) for u in typing)  # and what follows
    _, noise = typed_updates("".join(random.choices(string.ascii_letters, k=3000)), 8)
    assert not all(outbox.put(protocol.encode(Update(u))) for u in noise)  # 3 KB more: no


# -- a live server -------------------------------------------------------------------------


@pytest.fixture
def config(request, tmp_path) -> Config:
    overrides = getattr(request, "param", {})
    return Config(data_dir=str(tmp_path / "data"), **overrides)


def limits(**overrides: object):
    return pytest.mark.parametrize("config", [overrides], indirect=True, ids=[""])


async def closed_with(client: YClient) -> tuple[int | None, str | None]:
    await asyncio.wait_for(client.closed.wait(), 10)
    return client.close_code, client.close_reason


def logged(caplog, *parts: str) -> bool:
    return any(all(p in r.getMessage() for p in parts) for r in caplog.records)


@limits(max_document_bytes=1024)
async def test_a_message_past_max_document_bytes_closes_1009(config, ws_url) -> None:
    honest = await YClient(ws_url("doc")).connect()
    honest.text += "kept"
    big = await YClient(ws_url("doc")).connect()
    big.send(protocol.encode(AwarenessUpdate(b"\x00" * 1100)))
    assert (await closed_with(big))[0] == 1009
    honest.text += " and more"
    other = await YClient(ws_url("doc")).connect()
    await eventually(lambda: str(other.text) == "kept and more")
    assert honest.close_code is None


@limits(max_document_bytes=0, max_message_bytes=1024)
async def test_without_a_document_bound_max_message_bytes_bounds_messages(config, ws_url) -> None:
    big = await YClient(ws_url("doc")).connect()
    big.send(protocol.encode(AwarenessUpdate(b"\x00" * 1100)))
    assert (await closed_with(big))[0] == 1009


@limits(rate_messages=5, rate_messages_burst=5)
async def test_message_rate_closes_1008(config, ws_url, caplog) -> None:
    client = await YClient(ws_url("doc")).connect()  # step 1 and step 2: two messages
    for _ in range(10):
        client.send(protocol.encode(QueryAwareness()))
    assert await closed_with(client) == (1008, "rate limit: over 5 messages/s")
    assert logged(caplog, "rate limit", "(1008)", "127.0.0.1")


@limits(rate_bytes=1000, rate_bytes_burst=1000, max_document_bytes=1000)
async def test_byte_rate_closes_1008(config, ws_url) -> None:
    client = await YClient(ws_url("doc")).connect()
    for clock in range(3):
        client.set_awareness(1, clock, '"' + "x" * 800 + '"')
    assert await closed_with(client) == (1008, "rate limit: over 1000 bytes/s")


@limits(max_connections_per_ip=2)
async def test_connections_per_ip(config, ws_url, hub) -> None:
    first = await YClient(ws_url("a")).connect()
    second = await YClient(ws_url("b")).connect()
    with pytest.raises(HTTPClientError) as info:
        await YClient(ws_url("c")).connect()
    assert info.value.code == 429
    await first.close()

    async def reconnects() -> bool:
        try:
            await YClient(ws_url("c")).connect()
        except HTTPClientError:
            return False
        return True

    await eventually(reconnects, timeout=10)  # the slot is free once the server saw the close
    assert second.close_code is None


@limits(max_connections_per_doc=2)
async def test_connections_per_document(config, ws_url, caplog) -> None:
    clients = [await YClient(ws_url("doc")).connect() for _ in range(2)]
    third = await YClient(ws_url("doc")).connect(wait_synced=False)
    assert await closed_with(third) == (1008, "too many connections to this document (limit 2)")
    assert logged(caplog, "too many connections", "(1008)")
    await YClient(ws_url("another")).connect()
    clients[0].text += "still fine"
    await eventually(lambda: str(clients[1].text) == "still fine")


@limits(max_documents=2)
async def test_documents_loaded_at_once(config, ws_url, port, hub) -> None:
    a = await YClient(ws_url("a")).connect()
    await YClient(ws_url("b")).connect()
    c = await YClient(ws_url("c")).connect(wait_synced=False)
    assert await closed_with(c) == (1013, "too many documents open (limit 2)")
    put = await AsyncHTTPClient().fetch(
        f"http://127.0.0.1:{port}/api/docs/c/text", method="PUT", body="x", raise_error=False
    )
    assert put.code == 503
    await a.close()  # "a" is idle now: unloaded to make room
    await eventually(lambda: not hub.document("a").room.peers)
    await YClient(ws_url("c")).connect()
    assert sorted(hub.registry.documents) == ["b", "c"]


# -- slow readers ---------------------------------------------------------------------------


def server_side(hub, name: str, client: socket.socket):
    """The server's end (a ``WebSocket``) of the raw socket ``client``."""
    port = client.getsockname()[1]
    for peer in hub.document(name).room.peers:
        if peer.transport.get_extra_info("peername")[1] == port:
            return peer
    return None


async def slow_reader(hub, port: int, name: str):
    """A client that never reads, and the server's end of it.

    Loopback send buffers grow to megabytes; a small one on the server's side
    of this socket stands for a slow network, so its output backs up at once.
    """
    sock = await raw_connect(port, f"/ws/{name}")
    await eventually(lambda: server_side(hub, name, sock) is not None)
    ws = server_side(hub, name, sock)
    ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    return sock, ws


def noise(n: int) -> str:
    return "".join(random.choices(string.ascii_letters, k=n))


@limits(max_pending_bytes=64 << 10)
async def test_slow_reader_is_closed_1013_while_others_keep_up(
    config, ws_url, port, hub, caplog
) -> None:
    writer = await YClient(ws_url("doc")).connect()
    reader = await YClient(ws_url("doc")).connect()
    slow, ws = await slow_reader(hub, port, "doc")
    for _ in range(400):  # 2 KB of incompressible text each: merging cannot save it
        writer.text += noise(2048)
        await asyncio.sleep(0)
        if ws.transport is None or ws.transport.is_closing() or ws.session is None:
            break
    await eventually(lambda: logged(caplog, "too far behind", "(1013)"))
    writer.text += "after"
    await eventually(lambda: str(reader.text) == str(writer.text))
    assert str(reader.text).endswith("after") and reader.close_code is None

    frames = await read_frames(slow)  # now read: the close frame comes last
    opcode, payload = frames[-1]
    assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1013
    assert b"too far behind" in payload
    slow.close()


@limits(max_pending_bytes=64 << 10, rate_messages=0)
async def test_lagging_reader_gets_updates_merged(config, ws_url, port, hub) -> None:
    writer = await YClient(ws_url("doc")).connect()
    lagging, ws = await slow_reader(hub, port, "doc")
    while ws.outbox is None:  # fill until held back
        writer.text += noise(1024)
        await asyncio.sleep(0.001)
    typed = 3000
    for _ in range(typed):  # one message per character, as an editor sends them
        writer.text += "y"
    await eventually(lambda: str(hub.document("doc").room.text) == str(writer.text))
    outbox = ws.outbox
    assert outbox is not None and outbox.size <= 64 << 10
    assert ws.session is not None and not ws.transport.is_closing()

    replica: Doc = Doc()
    loop = asyncio.get_running_loop()
    buffer = bytearray()
    sent = []

    def apply_all() -> bool:
        _, _, rest = bytes(buffer).partition(b"\r\n\r\n")
        frames, _ = _parse_frames(rest)
        sent[:] = frames
        for _, payload in frames:
            message = protocol.decode(payload)
            if isinstance(message, Update | protocol.SyncStep2):
                replica.apply_update(message.update)
        return str(replica.get("content", type=Text)) == str(writer.text)

    deadline = time.monotonic() + 10
    while not apply_all():
        assert time.monotonic() < deadline
        buffer += await asyncio.wait_for(loop.sock_recv(lagging, 1 << 16), 10)
    assert len(sent) < typed / 2  # the typed characters arrived merged
    lagging.close()


# -- what a client may send before it is authenticated -------------------------------------


async def raw_request(port: int, head: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.encode())
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 10)  # until the server closes
    writer.close()
    return response


async def test_websocket_handshake_with_a_body_is_refused_unread(port) -> None:
    head = (
        f"GET /ws/doc HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\nContent-Length: 100000000\r\n\r\n"
    )
    assert (await raw_request(port, head)).startswith(b"HTTP/1.1 400")


SECRET = "k" * 32


@limits(jwt_secret=SECRET, max_message_bytes=1000)
async def test_api_reads_no_body_before_authorizing(config, port) -> None:
    head = (
        f"PUT /api/docs/doc/text HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Length: 100000000\r\n\r\n"
    )
    started = time.monotonic()
    response = await raw_request(port, head)  # no body sent: a read would hang
    assert response.startswith(b"HTTP/1.1 401") and time.monotonic() - started < 5
    tok = jwt.encode({"exp": time.time() + 60}, SECRET, algorithm="HS256")
    big = await raw_request(
        port, head.replace("\r\n\r\n", f"\r\nAuthorization: Bearer {tok}\r\n\r\n")
    )
    assert big.startswith(b"HTTP/1.1 400")  # authorized, but over max_message_bytes
    client = AsyncHTTPClient()
    ok = await client.fetch(
        f"http://127.0.0.1:{port}/api/docs/doc/text",
        method="PUT",
        body="fits",
        headers={"Authorization": f"Bearer {tok}"},
    )
    assert ok.code == 204


@limits(max_awareness_bytes=100)
async def test_oversized_awareness_state_closes_1009(config, ws_url, caplog) -> None:
    watcher = await YClient(ws_url("doc")).connect()
    client = await YClient(ws_url("doc")).connect()
    client.set_awareness(9, 1, '"' + "x" * 200 + '"')
    assert await closed_with(client) == (1009, "awareness state of 202 bytes (limit 100)")
    assert logged(caplog, "awareness state", "(1009)")
    assert 9 not in watcher.present()


@limits(max_awareness_clients=4)
async def test_awareness_clients_per_connection(config, ws_url, caplog) -> None:
    watcher = await YClient(ws_url("doc")).connect()
    one_frame = await YClient(ws_url("doc")).connect()
    one_frame.send(awareness(*((100 + i, 1, "{}") for i in range(5))))
    assert await closed_with(one_frame) == (1008, "too many awareness clients (limit 4)")
    over_time = await YClient(ws_url("doc")).connect()
    for i in range(4):
        over_time.set_awareness(200 + i, 1, '{"n":1}')
    await eventually(lambda: len(watcher.present()) == 4)  # up to the limit: fine
    over_time.set_awareness(204, 1, '{"n":1}')
    assert await closed_with(over_time) == (1008, "too many awareness clients (limit 4)")
    await eventually(lambda: watcher.present() == {})  # its states are removed for everyone
    assert watcher.close_code is None
