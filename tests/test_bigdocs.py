"""Big documents sync: 50 MB to stock clients over a slow link, 20 MB of offline edits, bombs.

A 50 MB document (tests/bigdoc.py: text, a map and an array, seeded) is
imported into a data directory and served by a real ``collab serve``; a stock
y-websocket client (Node) syncs it (the editor page in Chromium: in
test_bigdocs_page.py) through a
proxy throttled to 1.5 MB/s (tests/throttle.py). As one plain message its
step 2 would take 33 s there, past the 30 s after which a stock client drops
a silent socket and starts over; it goes in parts (``server/split.py``), the
later ones compressed once the link shows it is slow (permessage-deflate,
which both offer), in about 13 s. The facts each client reports (text length
and SHA-256, map and array sizes) must be the document's, after one connection.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from collab.core import protocol
from collab.core.protocol import SyncStep1, Update

from .bigdoc import BIG, NAME, Facts, serving
from .jsclient import JsPeers
from .server import ServerProcess
from .throttle import Throttle
from .wait import eventually
from .wire import FrameReader, client_frame, deflate_connect, parse_frames, raw_connect

RATE = 1.5e6  # bytes per second each way: 33 s for the plain step 2, ~14 s compressed


@pytest.fixture(scope="module")
def big_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Facts]]:
    """A server holding the 50 MB document ``big``."""
    with serving(tmp_path_factory.mktemp("bigdoc")) as served:
        yield served


async def test_a_50mb_document_syncs_to_a_stock_client_over_a_slow_link(big_server) -> None:
    server, facts = big_server
    with Throttle(server.port, RATE) as proxy:
        async with JsPeers() as peers:
            peer = await peers.start("peer.mjs", f"ws://127.0.0.1:{proxy.port}/ws", NAME)
            await peer.event("ready")
            await peer.event("synced", timeout=55)
            digest = await peer.request("digest", timeout=30)
        assert {k: digest[k] for k in facts.as_dict()} == facts.as_dict()
        assert digest["connects"] == 1  # never dropped for silence and started over
        assert proxy.bytes_down < BIG * 0.6  # it came compressed


async def test_20mb_of_offline_edits_reconnect_and_merge_once(tmp_path: Path) -> None:
    """Default limits: a 20 MB step 2 on reconnect is accepted (not 1009) and relayed once."""
    server = ServerProcess(tmp_path / "data").start()
    try:
        with Throttle(server.port, 50e6) as link:
            async with JsPeers() as peers:
                offline = await peers.peer(f"ws://127.0.0.1:{link.port}/ws", "notes")
                watcher = await peers.peer(server.ws, "notes")
                await offline.request("insert", index=0, text="shared start ")

                async def same() -> bool:
                    a, b = await offline.request("digest"), await watcher.request("digest")
                    return a["text_sha256"] == b["text_sha256"] and a["map_size"] == b["map_size"]

                await eventually(same, timeout=10)
                before = (await watcher.request("digest"))["remote_updates"]
                link.cut()

                async def offline_now() -> bool:
                    return not (await offline.request("digest"))["connected"]

                await eventually(offline_now, timeout=10)
                made = await offline.request("bulk", seed=11, bytes=20_000_000, timeout=30)
                assert made["map_size"] > 300
                link.restore()
                await eventually(same, timeout=50, interval=0.5)
                seen = await watcher.request("digest")
                assert seen["remote_updates"] == before + 1  # merged once, relayed once
                mine = await offline.request("digest")
                assert mine["connects"] == 2 and mine["connected"]  # back once, and stays
        assert "(1009)" not in server.output()
    finally:
        server.stop()


# -- compression bombs: what the client sends is decompressed only up to the bound -------------


def _deflate(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    return body[:-4]  # RFC 7692: without the sync flush's 00 00 ff ff


def _compressed_frame(payload: bytes) -> bytes:
    """A masked client frame with RSV1 set (permessage-deflate) carrying ``payload`` deflated."""
    return client_frame(0xC2, _deflate(payload))


async def _frames_until_close(sock: socket.socket, first: bytes) -> list[tuple[int, bytes]]:
    loop = asyncio.get_running_loop()
    data = first.partition(b"\r\n\r\n")[2]
    for _ in range(1000):
        frames, _ = parse_frames(data)
        if frames and frames[-1][0] == 0x8:
            return frames
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 1 << 16), 10)
        if not chunk:
            return frames
        data += chunk
    raise AssertionError("no close frame")


async def test_the_server_negotiates_permessage_deflate_and_reads_compressed_messages(
    port, hub
) -> None:
    sock, first = await deflate_connect(port, "/ws/squeezed")
    try:
        head = first.partition(b"\r\n\r\n")[0].decode().lower()
        assert head.startswith("http/1.1 101")
        assert "sec-websocket-extensions: permessage-deflate" in head
        assert "server_no_context_takeover" in head and "client_no_context_takeover" in head
        from pycrdt import Doc, Text

        doc: Doc[Any] = Doc()
        doc.get("content", type=Text).insert(0, "squeezed " * 5000)
        update = protocol.encode(Update(doc.get_update()))
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(sock, _compressed_frame(update))
        await loop.sock_sendall(sock, client_frame(0x82, protocol.encode(SyncStep1(b"\x00"))))
        await eventually(
            lambda: (
                hub.document("squeezed") is not None
                and hub.document("squeezed").room.text == "squeezed " * 5000
            )
        )
    finally:
        sock.close()


async def test_a_compression_bomb_is_refused_with_1009(port, hub) -> None:
    """100 MB of zeros in 100 KB: past the default bound (64 MiB), refused before all of it."""
    bomb = bytes(100_000_000)
    frame = _compressed_frame(bomb)
    assert len(frame) < 200_000
    assert await _close_code_beside_an_honest_client(port, hub, "target", frame) == 1009


async def _close_code_beside_an_honest_client(port: int, hub: Any, name: str, frame: bytes) -> int:
    """Send ``frame`` on one connection to ``name``; return the code it is closed with,
    once another connection to that document has synced on (the server is fine)."""
    honest_sock, _ = await deflate_connect(port, f"/ws/{name}")
    sock, first = await deflate_connect(port, f"/ws/{name}")
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_sendall(sock, frame)
        frames = await _frames_until_close(sock, first)
        step1 = client_frame(0x82, protocol.encode(SyncStep1(b"\x00")))
        await loop.sock_sendall(honest_sock, step1)
        await eventually(lambda: hub.document(name) is not None)
        assert len(hub.document(name).sessions) == 1
        code: int = struct.unpack("!H", frames[-1][1][:2])[0]
        return code
    finally:
        sock.close()
        honest_sock.close()


async def _read_compressed_messages(
    sock: socket.socket, first: bytes, count: int
) -> list[tuple[list[bytes], bytes]]:
    """The first ``count`` compressed messages after the response head ``first``."""
    reader = FrameReader(sock, first)
    return [await reader.rest_of_message(await reader.compressed()) for _ in range(count)]


@pytest.mark.parametrize("size", [100_000, 600_000])  # compressed inline, and in the thread
async def test_a_large_relay_is_compressed_once_for_every_peer(
    port, hub, monkeypatch, size: int
) -> None:
    import random

    from pycrdt import Doc, Text

    from collab.server import frames

    calls: list[int] = []
    real = frames.compressor_for

    def counting(window_bits: int) -> Any:
        calls.append(window_bits)
        return real(window_bits)

    monkeypatch.setattr(frames, "compressor_for", counting)
    name = f"fan-{size}"
    peers = [await deflate_connect(port, f"/ws/{name}") for _ in range(3)]
    loop = asyncio.get_running_loop()
    try:
        await eventually(
            lambda: hub.document(name) is not None and len(hub.document(name).sessions) == 3
        )
        rng = random.Random(size)
        doc: Doc[Any] = Doc()
        words = " ".join(rng.choice(["alpha", "beta", "gamma", "delta"]) for _ in range(size // 6))
        doc.get("content", type=Text).insert(0, words)
        update = protocol.encode(Update(doc.get_update()))
        await loop.sock_sendall(peers[0][0], client_frame(0x82, update))
        got = [(await _read_compressed_messages(sock, first, 1))[0] for sock, first in peers[1:]]
        assert got[0] == got[1]  # the same bytes to both
        frames, body = got[0]
        assert len(body) < len(update) // 2
        assert zlib.decompressobj(-15).decompress(body + b"\x00\x00\xff\xff") == update
        assert len(calls) == 1  # compressed once for both peers
    finally:
        for sock, _ in peers:
            sock.close()


def _incompressible_text(size: int, seed: int) -> str:
    import base64
    import random

    return base64.b64encode(random.Random(seed).randbytes(size * 3 // 4)).decode()


@pytest.mark.parametrize("compressed", [False, True])
async def test_a_large_frame_and_the_one_behind_it_are_taken_in_order(
    port, hub, compressed: bool
) -> None:
    """A frame over LARGE_FRAME_BYTES is unmasked (and inflated) in a thread while reading
    pauses: the small update sent right behind it, in the same write, comes after it."""
    from pycrdt import Doc, Text

    from collab.server.sockets import LARGE_FRAME_BYTES

    name = f"large-{int(compressed)}"
    reader = await raw_connect(port, f"/ws/{name}", rcvbuf=1 << 20)
    sock, _ = await deflate_connect(port, f"/ws/{name}")
    loop = asyncio.get_running_loop()
    try:
        await eventually(
            lambda: hub.document(name) is not None and len(hub.document(name).sessions) == 2
        )
        doc: Doc[Any] = Doc()
        text = doc.get("content", type=Text)
        text.insert(0, _incompressible_text(2_000_000, 7))
        big = protocol.encode(Update(doc.get_update()))
        before = doc.get_state()
        text.insert(len(str(text)), "tail")
        small = protocol.encode(Update(doc.get_update(before)))
        frame = _compressed_frame(big) if compressed else client_frame(0x82, big)
        assert len(frame) > LARGE_FRAME_BYTES
        await loop.sock_sendall(sock, frame + client_frame(0x82, small))
        await eventually(lambda: hub.document(name).room.text == str(text))
        data = b""
        for _ in range(1000):  # bounded: until both relays arrived
            frames, _ = parse_frames(data.partition(b"\r\n\r\n")[2])
            relayed = [
                "big" if len(payload) > len(big) // 2 else "tail"
                for _, payload in frames
                if len(payload) > len(big) // 2 or b"tail" in payload
            ]
            if len(relayed) == 2:
                break
            data += await asyncio.wait_for(loop.sock_recv(reader, 1 << 20), 10)
        assert relayed == ["big", "tail"]
    finally:
        sock.close()
        reader.close()


@pytest.mark.parametrize(
    "payload, code",
    [
        (b"", 1009),  # incompressible bytes, then zeros inflating past the 64 MiB bound
        (b"garbage", 1002),  # not a deflate stream
    ],
)
async def test_a_large_compressed_frame_that_will_not_inflate_is_refused(
    port, hub, payload: bytes, code: int
) -> None:
    import random

    from collab.server.sockets import LARGE_FRAME_BYTES

    noise = random.Random(code).randbytes(LARGE_FRAME_BYTES + 100_000)
    body = noise if payload else _deflate(noise + bytes(80 << 20))
    frame = client_frame(0xC2, body)
    assert await _close_code_beside_an_honest_client(port, hub, "large-bad", frame) == code


class GatedCompressor:
    """The real compressor, stopped after its first piece until ``gate`` opens."""

    def __init__(self, inner: Any, gate: threading.Event) -> None:
        self.inner, self.gate, self.pieces = inner, gate, 0

    def compress(self, data: Any) -> bytes:
        self.pieces += 1
        if self.pieces == 3:  # the first two pieces' output is on its way by now
            assert self.gate.wait(20), "the test never opened the gate"
        return bytes(self.inner.compress(data))

    def flush(self, mode: int) -> bytes:
        return bytes(self.inner.flush(mode))


async def test_a_large_step_2_goes_out_compressed_while_it_is_still_being_compressed(
    port, hub, monkeypatch
) -> None:
    """Fragments reach both fresh clients before the compression ends; one compression."""
    import random

    from pycrdt import Doc, Text

    from collab.server import frames

    gate, made = threading.Event(), []
    real = frames.compressor_for

    def gated(window_bits: int) -> Any:
        made.append(GatedCompressor(real(window_bits), gate))
        return made[-1]

    monkeypatch.setattr(frames, "compressor_for", gated)
    rng = random.Random(7)
    doc: Doc[Any] = Doc()
    words = [rng.choice(["alpha", "beta", "gamma", "delta", "epsilon"]) for _ in range(600_000)]
    doc.get("content", type=Text).insert(0, " ".join(words))
    writer = await raw_connect(
        port, "/ws/streamed", early=client_frame(0x82, protocol.encode(Update(doc.get_update())))
    )
    loop = asyncio.get_running_loop()
    readers: list[tuple[socket.socket, bytes]] = []
    try:

        async def stored() -> bool:  # read once the room is quiet (it applies in a thread)
            return len(await hub.get_text("streamed") or "") > 3_000_000

        await eventually(stored)
        readers += [await deflate_connect(port, "/ws/streamed") for _ in range(2)]
        step1 = client_frame(0x82, protocol.encode(SyncStep1(b"\x00")))
        for sock, _ in readers:
            await loop.sock_sendall(sock, step1)
        streams = [FrameReader(sock, first) for sock, first in readers]
        try:
            early = [await stream.compressed() for stream in streams]
            assert not gate.is_set() and all(frame[0] == 0x42 for frame in early)  # no FIN yet
            gate.set()
            got = [
                await stream.rest_of_message(f) for stream, f in zip(streams, early, strict=True)
            ]
        finally:
            gate.set()
        assert got[0] == got[1] and len(got[0][0]) > 2  # the same fragments to both
        step2 = zlib.decompressobj(-15).decompress(got[0][1] + b"\x00\x00\xff\xff")
        assert step2[:2] == b"\x00\x01"
        fresh: Doc[Any] = Doc()
        fresh.apply_update(protocol.decode(step2).update)  # type: ignore[union-attr]
        assert str(fresh.get("content", type=Text)) == " ".join(words)
        assert len(made) == 1  # compressed once for both
    finally:
        writer.close()
        for sock, _ in readers:
            sock.close()
