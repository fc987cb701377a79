"""Incoming frames: the socket's own parser for small binary frames and websockets' for the rest.

Whatever way the bytes are cut into reads, both parsers must meet at frame
boundaries: small binary messages, pings, fragmented messages, 16-bit and
64-bit lengths and text frames interleave in one stream, sent in chunks of
every size from 1 byte, and each is handled as a whole (pongs answered,
fragments joined, a bad frame refused with its code).
"""

from __future__ import annotations

import asyncio
import socket
import struct
from typing import Any

import pytest
from pycrdt import Doc, Text

from collab.core import protocol
from collab.core.protocol import SyncStep1, Update

from .wait import eventually
from .wire import client_frame, parse_frames, raw_connect


def _update(doc: Doc[Any], text: str) -> bytes:
    before = doc.get_state()
    doc.get("content", type=Text).insert(len(str(doc.get("content", type=Text))), text)
    return protocol.encode(Update(doc.get_update(before)))


def _stream() -> tuple[bytes, str]:
    """Frames of every kind, and the text the document holds once all are taken."""
    doc: Doc[Any] = Doc()
    frames = [client_frame(0x82, protocol.encode(SyncStep1(b"\x00")))]
    frames.append(client_frame(0x82, _update(doc, "a")))  # 7-bit length
    frames.append(client_frame(0x89, b"ping-1"))  # a ping between data frames
    big = _update(doc, "b" * 300)  # 16-bit length
    frames.append(client_frame(0x82, big))
    split = _update(doc, "c" * 50)  # a fragmented message with a ping inside
    frames.append(client_frame(0x02, split[:10]))
    frames.append(client_frame(0x89, b"ping-2"))
    frames.append(client_frame(0x80, split[10:]))
    frames.append(client_frame(0x82, _update(doc, "d" * 70_000)))  # 64-bit length
    frames.append(client_frame(0x82, _update(doc, "e")))
    return b"".join(frames), str(doc.get("content", type=Text))


async def _read_until(
    sock: socket.socket, done: Any, timeout: float = 10
) -> list[tuple[int, bytes]]:
    loop = asyncio.get_running_loop()
    data = b""
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        _, sep, rest = data.partition(b"\r\n\r\n")
        if sep:
            frames, _ = parse_frames(rest)
            if done(frames):
                return frames
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 1 << 16), timeout)
        if not chunk:
            return parse_frames(data.partition(b"\r\n\r\n")[2])[0]
        data += chunk
    raise AssertionError("timed out")


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 4096, 1 << 20])
async def test_frames_cut_at_any_byte_are_parsed_whole(port, hub, chunk: int) -> None:
    stream, text = _stream()
    name = f"cut-{chunk}"
    sock = await raw_connect(port, f"/ws/{name}", rcvbuf=1 << 20)
    loop = asyncio.get_running_loop()
    try:
        for i in range(0, len(stream), chunk):
            await loop.sock_sendall(sock, stream[i : i + chunk])
            if chunk < 8 and i % 64 == 0:
                await asyncio.sleep(0)  # let the server read the pieces one at a time
        await eventually(lambda: hub.document(name) and hub.document(name).room.text == text)
        pongs = await _read_until(sock, lambda fs: sum(op == 0xA for op, _ in fs) >= 2)
        assert [data for op, data in pongs if op == 0xA] == [b"ping-1", b"ping-2"]
    finally:
        sock.close()


@pytest.mark.parametrize(
    "bad, code",
    [
        (client_frame(0x82, b"\x00\x00", masked=False), 1002),  # unmasked
        (client_frame(0xA2, b"\x00\x00"), 1002),  # RSV2 without an extension
        (client_frame(0x83, b"\x00"), 1002),  # unknown opcode
        (client_frame(0x80, b"\x00"), 1002),  # a continuation without a start
        (client_frame(0x81, b"hello"), 1003),  # text
        (struct.pack("!BBQ", 0x82, 0xFF, 1 << 40) + b"\x01\x02\x03\x04", 1009),  # too large
    ],
)
async def test_a_bad_frame_after_good_ones_closes_with_its_code(
    port, hub, bad: bytes, code: int
) -> None:
    doc: Doc[Any] = Doc()
    good = client_frame(0x82, _update(doc, "kept"))
    sock = await raw_connect(port, "/ws/bad", rcvbuf=1 << 20)
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_sendall(sock, good + bad + good)
        frames = await _read_until(sock, lambda fs: bool(fs) and fs[-1][0] == 0x8)
        assert struct.unpack("!H", frames[-1][1][:2])[0] == code
        await eventually(lambda: hub.document("bad") and hub.document("bad").room.text == "kept")
    finally:
        sock.close()
