"""A large step 2 goes out in parts (``server.split``), plain on a fast link.

Cutting is pure (``core.pieces``); here: what the parts are, that a stock
client gets the whole document from them with "synced" only at the end, and
how the link's rate decides compression. The slow link (compressed parts
through a throttled proxy) is in test_bigdocs.py and test_bigdocs_page.py.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

from pycrdt import Doc

from collab.core import protocol
from collab.core.protocol import SyncStep1, SyncStep2, Update
from collab.server import split
from collab.server.split import FAST_LINK, JUDGED_AFTER, LinkRate

from .bigdoc import build, facts
from .wait import eventually
from .wire import FrameReader, client_frame, deflate_connect, frame_payload

SIZE = 12_000_000


def test_a_large_step_2_becomes_updates_then_a_final_step_2_that_rebuild_it() -> None:
    state, expected = build(5, SIZE)
    parts = split._parts(protocol.encode(SyncStep2(state)))
    messages = [protocol.decode(part) for part in parts]
    assert len(messages) >= SIZE // split.PIECE_BYTES
    assert all(isinstance(m, Update) for m in messages[:-1])
    assert isinstance(messages[-1], SyncStep2)
    doc: Doc[Any] = Doc()
    for message in messages:
        doc.apply_update(message.update)  # type: ignore[union-attr]
    assert facts(doc) == expected


def test_what_cannot_be_cut_goes_whole() -> None:
    small = protocol.encode(SyncStep2(build(6, 100_000)[0]))
    assert split._parts(small) == [small]
    not_a_step_2 = protocol.encode(Update(build(6, 100_000)[0]))
    assert split._parts(not_a_step_2) == [not_a_step_2]


def test_the_rate_says_nothing_at_first_then_tells_a_slow_link_from_a_fast_one() -> None:
    link = LinkRate(now=100.0)
    link.sent = 50_000_000
    assert not link.slow(100.0 + JUDGED_AFTER / 2, buffered=49_000_000)  # too early to say
    fast = 100.0 + 40_000_000 / FAST_LINK / 2  # 40 MB left in half the time FAST_LINK needs
    assert not link.slow(max(fast, 100.0 + JUDGED_AFTER), buffered=10_000_000)
    assert link.slow(101.0, buffered=49_000_000)  # 1 MB in a second


async def test_a_fresh_client_gets_the_document_in_parts_the_first_plain(port, hub) -> None:
    """Later parts are compressed only if this client (on this test's loop) read slowly."""
    state, expected = build(7, SIZE)
    writer, _ = await deflate_connect(port, "/ws/parts")
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(writer, client_frame(0x82, protocol.encode(Update(state))))

    async def stored() -> bool:
        return len(await hub.get_text("parts") or "") == expected.text_length

    await eventually(stored)
    sock, first = await deflate_connect(port, "/ws/parts")  # offers permessage-deflate
    try:
        await loop.sock_sendall(sock, client_frame(0x82, protocol.encode(SyncStep1(b"\x00"))))
        reader, doc, kinds, plain = FrameReader(sock, first), Doc(), [], []
        while not kinds or kinds[-1] != "step2":
            frame = await reader.frame()
            if frame[0] & 0x0F != 0x2:
                continue  # a ping, say
            if frame[0] & 0x40:  # compressed: inflate the whole message
                _, body = await reader.rest_of_message(frame)
                payload = zlib.decompressobj(-15).decompress(body + b"\x00\x00\xff\xff")
            else:
                payload = frame_payload(frame)
            if payload[0] != 0:
                continue  # awareness
            message = protocol.decode(payload)
            if isinstance(message, Update | SyncStep2):
                kinds.append("update" if isinstance(message, Update) else "step2")
                plain.append(not frame[0] & 0x40)
                doc.apply_update(message.update)
        assert kinds.count("step2") == 1 and len(kinds) > 2  # synced once it has it all
        assert plain[0]  # sent before the link could look slow
        assert facts(doc) == expected
    finally:
        sock.close()
        writer.close()
