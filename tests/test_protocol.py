"""The y-protocols codec, checked against golden bytes in both directions."""

from __future__ import annotations

import pytest

from collab.core import protocol
from collab.core.errors import ProtocolError
from collab.core.protocol import (
    Auth,
    AwarenessEntry,
    AwarenessUpdate,
    Generation,
    QueryAwareness,
    Save,
    SyncStep1,
    SyncStep2,
    Update,
)

GOLDEN = [
    (SyncStep1(b"\x00"), b"\x00\x00\x01\x00"),
    (SyncStep2(b"\x00\x00"), b"\x00\x01\x02\x00\x00"),
    (Update(b"\x01\x02\x03"), b"\x00\x02\x03\x01\x02\x03"),
    (AwarenessUpdate(b"\x00"), b"\x01\x01\x00"),
    (Auth("no"), b"\x02\x00\x02no"),
    (QueryAwareness(), b"\x03"),
    (Update(b"x" * 200), b"\x00\x02\xc8\x01" + b"x" * 200),  # two-byte varuint length
    (Save(b"\x07"), b"\x66\x01\x07"),  # collab's own: 102, the page's token varuint 7
    (Save(b""), b"\x66\x00"),
    (Generation("12"), b"\x67\x0212"),  # collab's own: 103
    (Generation(""), b"\x67\x00"),
]


@pytest.mark.parametrize(("message", "wire"), GOLDEN)
def test_encode_gives_golden_bytes(message, wire):
    assert protocol.encode(message) == wire


@pytest.mark.parametrize(("message", "wire"), GOLDEN)
def test_decode_gives_golden_message(message, wire):
    assert protocol.decode(wire) == message


def test_awareness_payload_round_trips():
    entries = [AwarenessEntry(1, 3, '{"user":{"name":"ann"}}'), AwarenessEntry(300, 0, "null")]
    payload = protocol.encode_awareness(entries)
    assert payload[:4] == b"\x02\x01\x03\x17"
    assert protocol.decode_awareness(payload) == entries
    assert entries[1].removed and not entries[0].removed


@pytest.mark.parametrize(
    ("wire", "why"),
    [
        (b"", "truncated varuint"),
        (b"\x00", "truncated varuint"),
        (b"\x00\x05\x00", "unknown sync message type"),
        (b"\x07", "unknown message type"),
        (b"\x00\x02\x05ab", "length past end"),
        (b"\x80" * 9, "varuint too long"),
        (b"\xff\xff\xff\xff\xff\xff\xff\x7f", "out of range"),
        (b"\x03\x00", "trailing bytes"),
        (b"\x02\x00\x02\xff\xfe", "not UTF-8"),
        (b"\x66\x21" + b"x" * 33, "save token over 32 bytes"),
        (b"\x66", "truncated varuint"),
        (b"\x66\x01\x07\x00", "trailing bytes"),
        (b"\x67\x41" + b"1" * 65, "generation over 64 bytes"),
        (b"\x67\x01\xff", "not UTF-8"),
    ],
)
def test_decode_rejects_malformed_frames(wire, why):
    with pytest.raises(ProtocolError, match=why):
        protocol.decode(wire)


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"\x01\x01\x01\x03{x}", "not JSON"),
        (b"\x05\x01", "count past end"),
        (b"\x01\x01\x01\x09{}", "length past end"),
        (b"\x01\x01\x01\x02{}!", "trailing bytes"),
    ],
)
def test_decode_awareness_rejects_malformed_payloads(payload, why):
    with pytest.raises(ProtocolError, match=why):
        protocol.decode_awareness(payload)


def test_deeply_nested_awareness_state_is_a_protocol_error():
    state = "[" * 100_000 + "]" * 100_000
    payload = protocol.encode_awareness([AwarenessEntry(1, 1, state)])
    with pytest.raises(ProtocolError):
        protocol.decode_awareness(payload)
