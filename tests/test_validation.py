"""Malformed frames: each closes only its own connection, with the SPEC code and a reason."""

from __future__ import annotations

import asyncio
import struct

import pytest

from collab.core import protocol
from collab.core.protocol import AwarenessUpdate, SyncStep1, SyncStep2, Update
from tests.crdt import valid_update
from tests.wait import eventually
from tests.wire import client_frame, raw_connect, read_frames
from tests.yclient import YClient


def awareness_with(state: bytes) -> bytes:
    payload = b"\x01\x01\x01" + protocol._varbytes(state)
    return protocol.encode(AwarenessUpdate(payload))


BAD_FRAMES = {
    "empty": (b"", 1007, "truncated varuint"),
    "bad varint": (b"\xff" * 9, 1007, "varuint too long"),
    "varint over 2^53": (b"\xff" * 7 + b"\x7f", 1007, "varuint out of range"),
    "truncated varint": (b"\x00\x80", 1007, "truncated varuint"),
    "truncated payload": (b"\x00\x02\x05ab", 1007, "length past end"),
    "unknown type": (b"\x07", 1007, "unknown message type 7"),
    "unknown sync type": (b"\x00\x09\x00", 1007, "unknown sync message type 9"),
    "trailing bytes": (protocol.encode(Update(valid_update("sneaky"))) + b"\x00", 1007, "trailing"),
    "invalid update": (protocol.encode(Update(b"\x01\x02\x03")), 1007, "invalid Yjs update"),
    "invalid step 2": (protocol.encode(SyncStep2(b"\xff\xff")), 1007, "invalid Yjs update"),
    "invalid state vector": (protocol.encode(SyncStep1(b"\x05")), 1007, "invalid state vector"),
    "awareness truncated": (b"\x01\x03\x01\x01", 1007, "past end"),
    "awareness count lies": (protocol.encode(AwarenessUpdate(b"\x7f")), 1007, "awareness count"),
    "awareness not JSON": (awareness_with(b"{nope"), 1007, "not JSON"),
    "awareness not UTF-8": (awareness_with(b'"\xff"'), 1007, "not UTF-8"),
    "text frame": ("hello", 1003, "text frames not supported"),
}


@pytest.mark.parametrize("kind", BAD_FRAMES)
async def test_malformed_frame_closes_only_its_connection(ws_url, caplog, kind: str) -> None:
    frame, code, reason = BAD_FRAMES[kind]
    writer = await YClient(ws_url("doc"), client_id=1).connect()
    watcher = await YClient(ws_url("doc"), client_id=2).connect()
    writer.text += "before"
    await eventually(lambda: str(watcher.text) == "before")

    bad = await YClient(ws_url("doc"), client_id=3).connect()
    bad.set_awareness(3, 1, '{"user":"bad"}')
    await eventually(lambda: 3 in watcher.present())
    assert bad.ws is not None
    bad.ws.write_message(frame, binary=isinstance(frame, bytes))
    bad.ws.write_message(protocol.encode(Update(valid_update("sneaky"))), binary=True)
    await asyncio.wait_for(bad.closed.wait(), 10)
    assert bad.close_code == code
    assert reason in (bad.close_reason or "")
    assert any(
        f"({code})" in r.getMessage()
        and reason in r.getMessage()
        and "-@127.0.0.1" in r.getMessage()
        for r in caplog.records
    ), "a log line says who and why"

    await eventually(lambda: 3 not in watcher.present())  # its awareness is gone for everyone
    writer.text += " after"
    await eventually(lambda: str(watcher.text) == "before after")
    fresh = await YClient(ws_url("doc")).connect()
    assert str(fresh.text) == "before after"  # the frame after the bad one was ignored too
    assert writer.close_code is None and watcher.close_code is None


async def test_text_frame_that_is_not_utf8_is_refused_1003(ws_url) -> None:
    client = await YClient(ws_url("doc")).connect()
    assert client.ws is not None
    client.ws.protocol._write_frame(True, 0x1, b"\xff\xfe")  # Tornado's client only sends UTF-8
    await asyncio.wait_for(client.closed.wait(), 10)
    assert (client.close_code, client.close_reason) == (1003, "text frames not supported")


WIRE_VIOLATIONS = {
    "reserved bit set": client_frame(0xC2, b"\x00"),  # RSV1 without a negotiated extension
    "unmasked frame": client_frame(0x82, b"\x00", masked=False),
    "unknown opcode": client_frame(0x83, b""),
    "fragmented ping": client_frame(0x09, b""),
}


@pytest.mark.parametrize("kind", WIRE_VIOLATIONS)
async def test_websocket_protocol_violation_closes_1002(ws_url, port, caplog, kind: str) -> None:
    writer = await YClient(ws_url("doc")).connect()
    watcher = await YClient(ws_url("doc")).connect()
    bad = await raw_connect(port, "/ws/doc")
    await asyncio.get_running_loop().sock_sendall(bad, WIRE_VIOLATIONS[kind])
    opcode, payload = (await read_frames(bad))[-1]
    assert opcode == 0x8 and struct.unpack("!H", payload[:2])[0] == 1002
    assert len(payload) > 2  # with a reason
    await eventually(lambda: any("(1002)" in r.getMessage() for r in caplog.records))
    bad.close()
    writer.text += "still fine"
    await eventually(lambda: str(watcher.text) == "still fine")
    assert writer.close_code is None and watcher.close_code is None


async def test_frames_sent_right_after_the_handshake_are_applied(ws_url, port, hub) -> None:
    """A client may pipeline its first frames behind the upgrade request."""
    watcher = await YClient(ws_url("doc")).connect()
    update = protocol.encode(Update(valid_update("pipelined")))
    sock = await raw_connect(port, "/ws/doc", early=client_frame(0x82, update))  # one write
    await eventually(lambda: str(watcher.text) == "pipelined")
    sock.close()
