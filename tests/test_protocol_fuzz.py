"""Property-based tests (hypothesis) of the decoder, the limits and a room on hostile input."""

from __future__ import annotations

import contextlib
import json
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Map, Text

from collab.core import protocol
from collab.core.errors import CollabError, ProtocolError
from collab.core.limits import check_awareness, coalesce
from collab.core.protocol import (
    Auth,
    AwarenessEntry,
    AwarenessUpdate,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    Update,
)
from collab.core.room import Room

QUICK = settings(max_examples=100, deadline=None, database=None)
FUZZ = settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


@FUZZ
@given(st.binary(max_size=64))
def test_any_bytes_decode_or_raise_protocol_error(data: bytes) -> None:
    try:
        message = protocol.decode(data)
    except ProtocolError:
        return
    assert protocol.encode(message) == data or isinstance(message, Auth)  # canonical or auth


@FUZZ
@given(st.binary(max_size=64))
def test_any_awareness_payload_decodes_or_raises_protocol_error(data: bytes) -> None:
    try:
        entries = protocol.decode_awareness(data)
    except ProtocolError:
        return
    assert all(isinstance(e, AwarenessEntry) for e in entries)


@FUZZ
@given(st.lists(st.binary(max_size=32), max_size=8))
def test_limits_take_any_frames(frames: list[bytes]) -> None:
    for frame in frames:
        with contextlib.suppress(CollabError):  # a refusal is fine; nothing else is
            check_awareness(frame, 16)
    assert isinstance(coalesce(frames), list)  # frames it cannot read pass through


_blobs = st.binary(max_size=40)
_messages = st.one_of(
    st.builds(SyncStep1, _blobs),
    st.builds(SyncStep2, _blobs),
    st.builds(Update, _blobs),
    st.builds(AwarenessUpdate, _blobs),
    st.builds(Auth, st.text(max_size=20)),
    st.just(QueryAwareness()),
)


@QUICK
@given(_messages)
def test_every_message_round_trips(message: protocol.Message) -> None:
    assert protocol.decode(protocol.encode(message)) == message


@FUZZ
@given(
    st.lists(st.tuples(st.integers(0, 2**53 - 1), st.integers(0, 2**53 - 1), st.text(max_size=10)))
)
def test_awareness_round_trips(raw: list[tuple[int, int, str]]) -> None:
    entries = [AwarenessEntry(cid, clock, json.dumps(s)) for cid, clock, s in raw]
    assert protocol.decode_awareness(protocol.encode_awareness(entries)) == entries


# -- a room on a random mix of valid and invalid frames ---------------------------------------


def _valid_frames() -> list[bytes]:
    """Real updates from two clients editing text and a map, plus harmless frames."""
    rng = random.Random(5)
    frames: list[bytes] = []
    for client_id in (11, 12):
        doc: Doc = Doc(client_id=client_id)
        doc.observe(lambda e: frames.append(protocol.encode(Update(e.update))))
        text, meta = doc.get("content", type=Text), doc.get("meta", type=Map)
        for i in range(12):
            if len(text) and rng.random() < 0.3:
                start = rng.randrange(len(text))
                del text[start : start + 1]
            else:
                text.insert(rng.randint(0, len(text)), rng.choice(["a", "bc", "déf", "🙂"]))
            meta[f"k{i % 3}"] = i
        frames.append(protocol.encode(SyncStep2(doc.get_update())))
    frames.append(protocol.encode(SyncStep1(b"\x00")))
    frames.append(protocol.encode(QueryAwareness()))
    payload = protocol.encode_awareness([AwarenessEntry(7, 1, '{"a":1}')])
    frames.append(protocol.encode(AwarenessUpdate(payload)))
    return frames


VALID = _valid_frames()


def _mutate(frame: bytes, how: int, where: int, byte: int) -> bytes:
    if not frame:
        return bytes([byte])
    i = where % len(frame)
    match how:
        case 0:  # flip a byte
            return frame[:i] + bytes([frame[i] ^ (byte or 1)]) + frame[i + 1 :]
        case 1:  # truncate
            return frame[:i]
        case 2:  # insert a byte
            return frame[:i] + bytes([byte]) + frame[i:]
        case 3:  # drop a byte
            return frame[:i] + frame[i + 1 :]
        case _:  # append garbage
            return frame + bytes([byte]) * (1 + where % 5)


_ops = st.one_of(
    st.tuples(st.just("valid"), st.integers(0, len(VALID) - 1)),
    st.tuples(
        st.just("mutated"),
        st.integers(0, len(VALID) - 1),
        st.integers(0, 4),
        st.integers(0, 10_000),
        st.integers(0, 255),
    ),
    st.tuples(st.just("random"), st.binary(max_size=48)),
)


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.lists(_ops, min_size=1, max_size=40))
def test_room_changes_only_through_the_updates_it_accepts(ops: list[tuple]) -> None:
    room = Room("doc")
    peer = object()
    room.join(peer)
    reference: Doc = Doc()  # applies exactly the updates the room accepted
    for op in ops:
        match op:
            case ("valid", i):
                frame = VALID[i]
            case ("mutated", i, how, where, byte):
                frame = _mutate(VALID[i], how, where, byte)
            case ("random", data):
                frame = data
        before = room.doc.get_update()
        try:
            room.receive(peer, frame)
        except ProtocolError:
            assert op[0] != "valid", "a valid frame was refused"
            assert room.doc.get_update() == before, "a refused frame changed the document"
            continue
        message = protocol.decode(frame)
        if isinstance(message, Update | SyncStep2):
            reference.apply_update(message.update)
    assert room.doc.get_state() == reference.get_state()
    assert room.text == str(reference.get("content", type=Text))
    assert room.doc.get_update() == reference.get_update()
