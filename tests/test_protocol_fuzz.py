"""Property-based tests (hypothesis) of the decoder, the limits and a room on hostile input.

Seeded (``derandomize``): a failure shows up again on the next run.
"""

from __future__ import annotations

import json
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Map, Text

from collab.core import protocol
from collab.core.errors import CollabError, ProtocolError
from collab.core.limits import coalesce
from collab.core.protocol import (
    Auth,
    AwarenessEntry,
    AwarenessUpdate,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    Update,
)
from collab.core.room import Effects, Room

QUICK = settings(max_examples=100, deadline=None, database=None, derandomize=True)
FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
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


def _mergeable(frame: bytes) -> bool:
    """Whether ``coalesce`` may merge ``frame``: an update, or a readable awareness message."""
    try:
        message = protocol.decode(frame)
        if isinstance(message, AwarenessUpdate):
            protocol.decode_awareness(message.payload)
            return True
    except ProtocolError:
        return False
    return isinstance(message, Update)


_frame_bytes = st.one_of(
    st.binary(max_size=32),
    st.builds(lambda b: protocol.encode(Update(b)), st.binary(max_size=24)),
    st.builds(lambda b: protocol.encode(AwarenessUpdate(b)), st.binary(max_size=24)),
)


@FUZZ
@given(st.lists(_frame_bytes, max_size=8))
def test_coalesce_takes_any_frames(frames: list[bytes]) -> None:
    merged = coalesce(frames)  # raises nothing, whatever the bytes
    others = [frame for frame in frames if not _mergeable(frame)]
    assert merged[: len(others)] == others  # what it cannot merge passes, in order, first
    rest = [protocol.decode(frame) for frame in merged[len(others) :]]
    assert all(isinstance(m, Update | AwarenessUpdate) for m in rest)
    assert sum(isinstance(m, AwarenessUpdate) for m in rest) <= 1
    updates = [f for f in frames if _mergeable(f) and isinstance(protocol.decode(f), Update)]
    assert bool(updates) == any(isinstance(m, Update) for m in rest)


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
    for entries in (
        [(7, 1, '{"a":1}')],
        [(7, 2, '{"user":{"sub":"x"}}'), (8, 1, '"two"')],
        [(7, 3, "null")],
        [(9, 1, "[1]"), (10, 1, "{}"), (11, 1, "{}")],  # one id past the cap
        [(12, 1, '"' + "x" * 40 + '"')],  # past the state size limit
    ):
        payload = protocol.encode_awareness([AwarenessEntry(*e) for e in entries])
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


# Awareness frames are the last few of VALID; drawn as often as all the others,
# so two peers often name the same client ids.
_AWARENESS_AT = [i for i, f in enumerate(VALID) if isinstance(protocol.decode(f), AwarenessUpdate)]
_index = st.one_of(st.integers(0, len(VALID) - 1), st.sampled_from(_AWARENESS_AT))
_ops = st.one_of(
    st.tuples(st.just("valid"), _index),
    st.tuples(
        st.just("mutated"),
        _index,
        st.integers(0, 4),
        st.integers(0, 10_000),
        st.integers(0, 255),
    ),
    st.tuples(st.just("random"), st.binary(max_size=48)),
)


def _snapshot(room: Room) -> tuple[object, ...]:
    """Everything a refusal must leave as it was."""
    peers = {peer: (p.sub, frozenset(p.ids)) for peer, p in room.peers.items()}
    aw = room.awareness
    return room.doc.get_update(), dict(aw.states), dict(aw.owners), peers


def _check_ownership(room: Room) -> None:
    aw = room.awareness
    assert aw.owners.keys() == aw.states.keys()
    for client_id, owner in aw.owners.items():
        assert client_id in aw.peers[owner].ids
    assert sum(len(p.ids) for p in aw.peers.values()) == len(aw.owners)
    assert all(len(p.ids) <= 2 for p in aw.peers.values())  # the cap held


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
@given(st.lists(st.tuples(st.booleans(), _ops), min_size=1, max_size=40))
def test_room_changes_only_through_the_messages_it_accepts(ops: list[tuple]) -> None:
    room = Room("doc", max_awareness_bytes=32, max_awareness_clients=2)
    peers = (object(), object())
    room.join(peers[0], sub="ann")
    room.join(peers[1])
    reference: Doc = Doc()  # applies exactly the updates the room accepted
    for second, op in ops:
        match op:
            case ("valid", i):
                frame = VALID[i]
            case ("mutated", i, how, where, byte):
                frame = _mutate(VALID[i], how, where, byte)
            case ("random", data):
                frame = data
        before = _snapshot(room)
        try:
            effects = room.receive(peers[second], frame)
        except CollabError:  # a refusal is fine; any other exception fails the test
            assert _snapshot(room) == before, "a refused frame changed the room"
            continue
        finally:
            _check_ownership(room)
        assert isinstance(effects, Effects)
        message = protocol.decode(frame)
        if isinstance(message, Update | SyncStep2):
            reference.apply_update(message.update)
    assert room.doc.get_state() == reference.get_state()
    assert room.text == str(reference.get("content", type=Text))
    assert room.doc.get_update() == reference.get_update()


def test_valid_frames_are_accepted() -> None:
    """The frames the fuzzer mutates, except those built to break a limit, are fine."""
    room = Room("doc", max_awareness_bytes=32, max_awareness_clients=2)
    refused = []
    for frame in VALID:
        try:
            room.receive("peer", frame)
        except CollabError as exc:
            refused.append(type(exc).__name__)
    assert refused == ["PolicyViolation", "MessageTooBig"]
