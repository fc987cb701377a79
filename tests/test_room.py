"""The pure room: what it answers, logs and relays for each message (no event loop)."""

from __future__ import annotations

import random

import pytest
from pycrdt import Doc, Text

from collab.core import protocol
from collab.core.errors import BadUpdate, MessageTooBig, PolicyViolation, ProtocolError
from collab.core.protocol import (
    AwarenessEntry,
    AwarenessUpdate,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    Update,
)
from collab.core.room import Room


class ClientDoc:
    """A client-side Y.Doc joined to a room through plain function calls (a fake link)."""

    def __init__(self, room: Room, client_id: int) -> None:
        self.room = room
        self.doc = Doc(client_id=client_id)
        self.text = self.doc.get("content", type=Text)
        self.inbox: list[bytes] = list(room.join(self))

    def edit(self, fn) -> list[bytes]:
        """Make a local edit, send it as an update; return the room's relay frames."""
        before = self.doc.get_state()
        fn(self.text)
        effects = self.room.receive(self, protocol.encode(Update(self.doc.get_update(before))))
        return effects.relay

    def deliver(self) -> None:
        for frame in self.inbox:
            message = protocol.decode(frame)
            if isinstance(message, SyncStep2 | Update):
                self.doc.apply_update(message.update)
        self.inbox.clear()


def awareness_frame(client_id: int, clock: int, state: str) -> bytes:
    payload = protocol.encode_awareness([AwarenessEntry(client_id, clock, state)])
    return protocol.encode(AwarenessUpdate(payload))


def test_join_sends_step1_with_the_room_state_vector():
    room = Room("doc")
    room.doc.get("content", type=Text).insert(0, "hi")
    (frame,) = room.join("peer")
    assert protocol.decode(frame) == SyncStep1(room.doc.get_state())


def test_step1_is_answered_with_the_missing_update():
    room = Room("doc")
    room.doc.get("content", type=Text).insert(0, "hello")
    client = Doc()
    effects = room.receive("peer", protocol.encode(SyncStep1(client.get_state())))
    (reply,) = effects.reply
    client.apply_update(protocol.decode(reply).update)
    assert str(client.get("content", type=Text)) == "hello"
    assert effects.update is None and effects.relay == []


def test_fresh_clients_share_one_encoding_until_the_document_changes():
    room = Room("doc")
    writer = ClientDoc(room, client_id=1)
    writer.edit(lambda t: t.insert(0, "hello"))
    fresh = protocol.encode(SyncStep1(Doc().get_state()))
    (first,) = room.receive("a", fresh).reply
    (second,) = room.receive("b", fresh).reply
    assert second is first  # encoded once

    writer.edit(lambda t: t.insert(5, " world"))
    (third,) = room.receive("c", fresh).reply
    client = Doc()
    client.apply_update(protocol.decode(third).update)
    assert str(client.get("content", type=Text)) == "hello world"


def test_a_room_restored_from_a_snapshot_alone_answers_fresh_clients_with_it():
    source = Doc()
    source.get("content", type=Text).insert(0, "stored")
    snapshot = source.get_update()
    room = Room("doc")
    room.restore([snapshot], snapshot=snapshot)
    room.doc.get_update = None  # type: ignore[method-assign]  # any encoding now fails
    fresh = protocol.encode(SyncStep1(Doc().get_state()))
    (reply,) = room.receive("a", fresh).reply
    assert protocol.decode(reply) == SyncStep2(snapshot)

    del room.doc.get_update  # the class's again
    writer = ClientDoc(room, client_id=1)
    writer.doc.apply_update(protocol.decode(reply).update)
    writer.edit(lambda t: t.insert(6, " and changed"))
    (after,) = room.receive("b", fresh).reply
    client = Doc()
    client.apply_update(protocol.decode(after).update)
    assert str(client.get("content", type=Text)) == "stored and changed"


def test_an_update_is_logged_and_relayed_once():
    room = Room("doc")
    a = ClientDoc(room, 1)
    relay = a.edit(lambda t: t.insert(0, "abc"))
    b = Doc()
    (frame,) = relay
    b.apply_update(protocol.decode(frame).update)
    assert str(b.get("content", type=Text)) == "abc" == room.text


def test_an_update_the_room_already_has_is_neither_logged_nor_relayed():
    room = Room("doc")
    a = ClientDoc(room, 1)
    update_frame = protocol.encode(Update(_update_inserting("x")))
    first = room.receive(a, update_frame)
    again = room.receive(a, update_frame)
    assert first.update is not None and first.relay
    assert again.update is None and again.relay == []


def test_invalid_update_raises_and_leaves_the_document_unchanged():
    room = Room("doc")
    room.receive("p", protocol.encode(Update(_update_inserting("keep"))))
    with pytest.raises(BadUpdate):
        room.receive("p", protocol.encode(Update(b"\x01\x02\x03")))
    assert room.text == "keep"


def test_invalid_state_vector_is_a_protocol_error():
    with pytest.raises(ProtocolError, match="state vector"):
        Room("doc").receive("p", protocol.encode(SyncStep1(b"\xff")))


def test_read_only_peer_updates_are_dropped():
    room = Room("doc")
    effects = room.receive("ro", protocol.encode(Update(_update_inserting("x"))), writable=False)
    assert effects.update is None and effects.relay == [] and room.text == ""


def test_awareness_is_relayed_and_sent_to_late_joiners():
    room = Room("doc")
    room.join("a")
    frame = awareness_frame(7, 1, '{"user":"ann"}')
    effects = room.receive("a", frame)
    assert effects.relay == [frame]
    assert effects.reply == [frame]  # echoed: keeps a lone y-websocket client's socket alive
    _step1, awareness = room.join("b")
    assert protocol.decode_awareness(protocol.decode(awareness).payload) == [
        AwarenessEntry(7, 1, '{"user":"ann"}')
    ]


def test_leaving_removes_the_awareness_states_the_peer_introduced():
    room = Room("doc")
    room.join("a")
    room.join("b")
    room.receive("a", awareness_frame(7, 4, '{"user":"ann"}'))
    room.receive("b", awareness_frame(8, 1, '{"user":"bob"}'))
    (frame,) = room.leave("a").relay
    assert protocol.decode_awareness(protocol.decode(frame).payload) == [
        AwarenessEntry(7, 5, "null")
    ]
    assert list(room.awareness.states) == [8]  # no tombstone left behind
    assert list(room.peers) == ["b"]


def test_a_client_removing_its_own_state_leaves_nothing_behind():
    room = Room("doc")
    room.receive("a", awareness_frame(7, 1, '{"x":1}'))
    room.receive("a", awareness_frame(7, 2, "null"))
    assert room.awareness.states == {} and room.leave("a").relay == []


def test_stale_awareness_clock_is_ignored():
    room = Room("doc")
    room.receive("a", awareness_frame(7, 5, '{"v":2}'))
    room.receive("a", awareness_frame(7, 3, '{"v":1}'))
    assert room.awareness.states[7].state == '{"v":2}'


def test_query_awareness_is_answered_with_every_present_state():
    room = Room("doc")
    room.receive("a", awareness_frame(7, 1, '{"x":1}'))
    (reply,) = room.receive("b", protocol.encode(QueryAwareness())).reply
    assert [e.client_id for e in protocol.decode_awareness(protocol.decode(reply).payload)] == [7]


def test_replace_text_is_a_minimal_splice_that_keeps_concurrent_edits():
    room = Room("doc")
    a = ClientDoc(room, 1)
    a.edit(lambda t: t.insert(0, "héllo wörld 😀"))
    before = a.doc.get_state()
    a.text.insert(len("héllo wörld 😀".encode()), "!")  # concurrent, not yet sent
    concurrent = a.doc.get_update(before)
    effects = room.replace_text("héllo brave wörld 😀")
    assert room.text == "héllo brave wörld 😀"
    assert effects.update is not None
    room.receive(a, protocol.encode(Update(concurrent)))
    assert room.text == "héllo brave wörld 😀!"


def test_replace_text_with_the_same_text_changes_nothing():
    room = Room("doc")
    room.replace_text("same")
    assert room.replace_text("same").update is None


def test_random_concurrent_edits_converge_through_the_room():
    rng = random.Random(7)
    room = Room("doc")
    clients = [ClientDoc(room, cid) for cid in (1, 2, 3)]
    for c in clients:
        c.deliver()
    for _ in range(300):
        c = rng.choice(clients)
        relay = c.edit(lambda t: _random_edit(t, rng))
        for other in clients:
            if other is not c:
                other.inbox += relay
        if rng.random() < 0.3:
            rng.choice(clients).deliver()
    for c in clients:
        c.deliver()
    assert {str(c.text) for c in clients} == {room.text}
    assert room.text


def test_closed_room_is_freed():
    import gc
    import weakref

    room = Room("doc")
    room.join("a")
    ref = weakref.ref(room)
    room.close()
    del room
    gc.collect()
    assert ref() is None


def _update_inserting(text: str) -> bytes:
    doc = Doc(client_id=99)
    doc.get("content", type=Text).insert(0, text)
    return doc.get_update()


def _random_edit(text: Text, rng: random.Random) -> None:
    length = len(text)  # UTF-8 bytes; ASCII only here
    if length and rng.random() < 0.35:
        start = rng.randrange(length)
        del text[start : min(length, start + rng.randint(1, 3))]
    else:
        text.insert(rng.randint(0, length), rng.choice("abcdef "))


def test_an_update_that_applies_as_is_is_relayed_as_received():
    room = Room("doc")
    frame = protocol.encode(Update(_update_inserting("x")))
    (relayed,) = room.receive("a", frame).relay
    assert relayed is frame  # no re-encoding on the hot path


def test_peers_are_those_that_joined_and_have_not_left():
    room = Room("doc")
    room.join("a", sub="ann")
    room.join("b")
    assert list(room.peers) == ["a", "b"] and len(room.peers) == 2
    assert room.peers["a"].sub == "ann" and room.peers["b"].sub is None
    room.leave("a")
    assert list(room.peers) == ["b"]
    assert room.leave("a").relay == []  # leaving twice is harmless


def test_awareness_limits_are_set_per_room():
    room = Room("doc", max_awareness_bytes=10, max_awareness_clients=1)
    room.join("a")
    with pytest.raises(MessageTooBig):
        room.receive("a", awareness_frame(1, 1, '"' + "x" * 10 + '"'))
    room.receive("a", awareness_frame(1, 1, '"x"'))
    with pytest.raises(PolicyViolation):
        room.receive("a", awareness_frame(2, 1, '"y"'))
    assert [e.client_id for e in room.awareness.present()] == [1]


def test_an_update_from_another_process_is_relayed_once():
    room = Room("doc")
    update = _update_inserting("from afar")
    (frame,) = room.apply_remote(update).relay
    assert protocol.decode(frame) == Update(update) and room.text == "from afar"
    assert room.apply_remote(update).relay == []  # an echo dies out
    with pytest.raises(BadUpdate):
        room.apply_remote(b"\x01\x02\x03")
    assert room.text == "from afar"
