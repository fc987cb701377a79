"""Presence: who may set which awareness state, limits, the verified ``sub``, the clock rule.

Pure: a room, recording peers and plain calls standing in for the hub (no event loop).
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collab.core import protocol
from collab.core.awareness import newer, with_sub
from collab.core.errors import MessageTooBig, PolicyViolation, ProtocolError
from collab.core.limits import coalesce
from collab.core.protocol import AwarenessEntry, AwarenessUpdate, QueryAwareness, SyncStep1
from collab.core.room import Effects, Room

# -- helpers -------------------------------------------------------------------------------


class RecordingPeer:
    """A connection as the room sees it (hashable by identity), keeping what it was sent."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.received: list[bytes] = []

    def __repr__(self) -> str:
        return f"<peer {self.name}>"

    def entries(self) -> list[AwarenessEntry]:
        """Every awareness entry this peer was sent, in order."""
        found: list[AwarenessEntry] = []
        for frame in self.received:
            message = protocol.decode(frame)
            if isinstance(message, AwarenessUpdate):
                found += protocol.decode_awareness(message.payload)
        return found


class Link:
    """The hub's job in plain calls: reply to the sender, relay to everyone else."""

    def __init__(self, room: Room) -> None:
        self.room = room

    def join(self, name: str, sub: str | None = None) -> RecordingPeer:
        peer = RecordingPeer(name)
        peer.received += self.room.join(peer, sub)
        return peer

    def send(self, peer: RecordingPeer, frame: bytes, *, writable: bool = True) -> Effects:
        effects = self.room.receive(peer, frame, writable=writable)
        self._deliver(peer, effects)
        return effects

    def leave(self, peer: RecordingPeer) -> Effects:
        effects = self.room.leave(peer)
        self._deliver(peer, effects)
        return effects

    def _deliver(self, sender: RecordingPeer, effects: Effects) -> None:
        sender.received += effects.reply
        for other in self.room.peers:
            if other is not sender:
                assert isinstance(other, RecordingPeer)
                other.received += effects.relay


def aw(*entries: tuple[int, int, str]) -> bytes:
    """An awareness message with these (client id, clock, state JSON) entries."""
    return protocol.encode(AwarenessUpdate(protocol.encode_awareness(list(map(_entry, entries)))))


def _entry(raw: tuple[int, int, str]) -> AwarenessEntry:
    return AwarenessEntry(*raw)


def states(room: Room) -> dict[int, str]:
    return {client_id: entry.state for client_id, entry in room.awareness.states.items()}


def relayed(effects: Effects) -> list[AwarenessEntry]:
    (frame,) = effects.relay
    message = protocol.decode(frame)
    assert isinstance(message, AwarenessUpdate)
    return protocol.decode_awareness(message.payload)


def user_of(entry: AwarenessEntry) -> object:
    return json.loads(entry.state)["user"]


def two_people(**limits: int) -> tuple[Link, RecordingPeer, RecordingPeer]:
    link = Link(Room("doc", **limits))
    return link, link.join("ann"), link.join("bob")


# -- relaying ------------------------------------------------------------------------------


def test_a_state_is_relayed_as_received_and_echoed_to_its_sender() -> None:
    link, ann, bob = two_people()
    frame = aw((7, 1, '{"user":{"name":"Ann"}}'))
    effects = link.send(ann, frame)
    assert effects.relay == [frame] and effects.relay[0] is frame  # no re-encoding
    assert effects.reply == [frame]  # keeps a lone y-websocket client's socket alive
    assert bob.entries() == [AwarenessEntry(7, 1, '{"user":{"name":"Ann"}}')]
    carol = link.join("carol")
    assert carol.entries() == [AwarenessEntry(7, 1, '{"user":{"name":"Ann"}}')]


def test_a_read_only_peer_still_shares_its_presence() -> None:
    link, ann, bob = two_people()
    frame = aw((7, 1, '{"user":{"name":"Reader"}}'))
    effects = link.send(ann, frame, writable=False)
    assert effects.relay == [frame] and states(link.room) == {7: '{"user":{"name":"Reader"}}'}
    assert bob.entries() == [AwarenessEntry(7, 1, '{"user":{"name":"Reader"}}')]


def test_query_awareness_answers_with_every_present_state() -> None:
    link, ann, bob = two_people()
    link.send(ann, aw((7, 1, '{"a":1}')))
    link.send(bob, aw((8, 1, '{"b":1}')))
    (reply,) = link.send(bob, protocol.encode(QueryAwareness())).reply
    message = protocol.decode(reply)
    assert isinstance(message, AwarenessUpdate)
    assert {e.client_id for e in protocol.decode_awareness(message.payload)} == {7, 8}


# -- limits: checked before anything changes ----------------------------------------------


def test_an_oversized_state_is_refused_before_anything_changes() -> None:
    link, ann, bob = two_people(max_awareness_bytes=100)
    link.send(ann, aw((7, 1, '"' + "x" * 98 + '"')))  # exactly 100 bytes: fine
    bob.received.clear()
    big = aw((7, 2, '"small"'), (9, 1, '"' + "x" * 100 + '"'))
    with pytest.raises(MessageTooBig, match=r"awareness state of 102 bytes \(limit 100\)"):
        link.send(ann, big)
    assert states(link.room) == {7: '"' + "x" * 98 + '"'}  # the small entry was not applied
    assert bob.received == []
    with pytest.raises(MessageTooBig):  # bytes, not characters, count
        link.send(ann, aw((7, 3, '"' + "é" * 50 + '"')))
    assert link.room.awareness.peers[ann].ids == {7}


def test_no_size_limit_by_default() -> None:
    link, ann, _bob = two_people()
    link.send(ann, aw((7, 1, '"' + "x" * 100_000 + '"')))
    assert len(states(link.room)[7]) == 100_002


def test_the_client_cap_is_checked_before_anything_changes() -> None:
    link, ann, bob = two_people(max_awareness_clients=2)
    link.send(ann, aw((1, 1, "{}")))
    bob.received.clear()
    with pytest.raises(PolicyViolation, match=r"too many awareness clients \(limit 2\)"):
        link.send(ann, aw((1, 2, '{"n":2}'), (2, 1, "{}"), (3, 1, "{}")))
    assert states(link.room) == {1: "{}"}  # not even the update of its own id 1
    assert link.room.awareness.peers[ann].ids == {1}
    assert bob.received == []


def test_the_client_cap_counts_what_a_peer_owns_over_time() -> None:
    link, ann, bob = two_people(max_awareness_clients=2)
    link.send(ann, aw((1, 1, "{}")))
    link.send(ann, aw((2, 1, "{}")))
    link.send(ann, aw((2, 2, '{"n":2}')))  # renewing an id it owns costs nothing
    with pytest.raises(PolicyViolation):
        link.send(ann, aw((3, 1, "{}")))
    link.send(ann, aw((2, 3, "null"), (3, 1, "{}")))  # removing one frees a slot
    assert states(link.room) == {1: "{}", 3: "{}"}
    link.send(bob, aw((4, 1, "{}")))  # the cap is per peer
    assert set(states(link.room)) == {1, 3, 4}


# -- ownership: a peer sets and removes only the client ids it introduced ------------------


def test_a_peer_cannot_overwrite_another_peers_state() -> None:
    link, ann, bob = two_people()
    link.send(ann, aw((7, 1, '{"user":{"name":"Ann"}}')))
    ann.received.clear()
    effects = link.send(bob, aw((7, 9, '{"user":{"name":"Not Ann"}}')))
    assert effects.foreign == 1
    assert effects.relay == [] and effects.reply == []
    assert states(link.room) == {7: '{"user":{"name":"Ann"}}'}
    assert ann.received == []


def test_a_peer_cannot_remove_another_peers_state() -> None:
    link, ann, bob = two_people()
    link.send(ann, aw((7, 1, '{"user":{"name":"Ann"}}')))
    effects = link.send(bob, aw((7, 2, "null")))
    assert effects.foreign == 1 and effects.relay == []
    assert states(link.room) == {7: '{"user":{"name":"Ann"}}'}
    assert link.leave(bob).relay == []  # bob owned nothing, removes nothing
    assert states(link.room) == {7: '{"user":{"name":"Ann"}}'}


def test_only_the_foreign_entries_of_a_message_are_dropped() -> None:
    link, ann, bob = two_people()
    link.send(ann, aw((7, 1, '"ann"')))
    effects = link.send(bob, aw((7, 5, '"evil"'), (8, 1, '"bob"')))
    assert effects.foreign == 1
    assert relayed(effects) == [AwarenessEntry(8, 1, '"bob"')]
    assert effects.reply == effects.relay
    assert states(link.room) == {7: '"ann"', 8: '"bob"'}


def test_leaving_removes_only_the_states_the_peer_owned() -> None:
    link, ann, bob = two_people()
    link.send(ann, aw((7, 4, '"ann"'), (9, 1, '"ann too"')))
    link.send(bob, aw((8, 1, '"bob"')))
    bob.received.clear()
    effects = link.leave(ann)
    removals = sorted(relayed(effects), key=lambda entry: entry.client_id)
    assert removals == [AwarenessEntry(7, 5, "null"), AwarenessEntry(9, 2, "null")]
    assert bob.received == effects.relay
    assert states(link.room) == {8: '"bob"'}
    assert ann not in link.room.peers
    carol = link.join("carol")  # a removed id is free again (no tombstones)
    assert link.send(carol, aw((7, 1, '"carol"'))).foreign == 0
    assert link.room.awareness.owners[7] is carol


def test_removing_its_own_state_frees_the_id() -> None:
    link, ann, bob = two_people()
    link.send(ann, aw((7, 1, '"ann"')))
    link.send(ann, aw((7, 2, "null")))
    assert states(link.room) == {} and link.room.awareness.owners == {}
    assert link.send(bob, aw((7, 1, '"bob"'))).foreign == 0


def test_a_malformed_payload_changes_nothing() -> None:
    link, ann, bob = two_people()
    link.send(ann, aw((7, 1, '"ann"')))
    bob.received.clear()
    payload = protocol.encode_awareness([AwarenessEntry(7, 2, '"new"')])
    with pytest.raises(ProtocolError):
        link.send(ann, protocol.encode(AwarenessUpdate(payload + b"\x00")))
    with pytest.raises(ProtocolError, match="not JSON"):
        link.send(ann, aw((7, 2, "{not json")))
    assert states(link.room) == {7: '"ann"'} and bob.received == []


# -- the verified sub ------------------------------------------------------------------------


def test_the_verified_sub_overwrites_the_claimed_one() -> None:
    link = Link(Room("doc"))
    ann, bob = link.join("ann", sub="ann"), link.join("bob", sub="bob")
    claim = '{"user":{"name":"Ann","sub":"bob","color":"#3e63dd"},"cursor":null}'
    effects = link.send(ann, aw((7, 3, claim)))
    (entry,) = relayed(effects)
    assert (entry.client_id, entry.clock) == (7, 3)
    assert json.loads(entry.state) == {
        "user": {"name": "Ann", "sub": "ann", "color": "#3e63dd"},
        "cursor": None,
    }
    assert effects.reply == effects.relay  # the echo is the stamped message too
    assert bob.entries() == [entry]
    assert link.join("carol").entries() == [entry]  # late joiners see it stamped


@pytest.mark.parametrize(
    ("state", "user"),
    [
        ('{"cursor":1}', {"sub": "ann"}),  # no user: one is made
        ('{"user":"Ann"}', {"sub": "ann"}),  # user not an object: replaced
        ('{"user":null}', {"sub": "ann"}),
        ('{"user":{"s\\u0075b":"bob"}}', {"sub": "ann"}),  # an escaped key is still "sub"
        ('{"user":{"name":"Ännè 🙂"}}', {"name": "Ännè 🙂", "sub": "ann"}),
    ],
)
def test_every_object_state_gets_the_sub(state: str, user: dict[str, str]) -> None:
    link = Link(Room("doc"))
    ann = link.join("ann", sub="ann")
    (entry,) = relayed(link.send(ann, aw((7, 1, state))))
    assert user_of(entry) == user
    assert user_of(link.room.awareness.states[7]) == user


@pytest.mark.parametrize("state", ['"just a string"', "[1,2]", "42", "true"])
def test_a_state_that_is_not_an_object_is_left_alone(state: str) -> None:
    link = Link(Room("doc"))
    ann = link.join("ann", sub="ann")
    frame = aw((7, 1, state))
    assert link.send(ann, frame).relay == [frame]
    assert link.send(ann, aw((7, 2, "null"))).relay == [aw((7, 2, "null"))]


def test_without_sub_the_bytes_are_relayed_unchanged() -> None:
    link, ann, _bob = two_people()
    frame = aw((7, 1, '{"user":{"name":"Ann","sub":"admin"}}'))
    (out,) = link.send(ann, frame).relay
    assert out is frame


def test_a_sub_given_on_join_applies_to_that_peer_only() -> None:
    link = Link(Room("doc"))
    ann, guest = link.join("ann", sub="ann"), link.join("guest")
    (a,) = relayed(link.send(ann, aw((1, 1, '{"user":{}}'))))
    (g,) = relayed(link.send(guest, aw((2, 1, '{"user":{}}'))))
    assert user_of(a) == {"sub": "ann"} and user_of(g) == {}


def test_with_sub_needs_json() -> None:
    assert json.loads(with_sub('{"a":[1,{"b":2}]}', "x")) == {
        "a": [1, {"b": 2}],
        "user": {"sub": "x"},
    }
    with pytest.raises(ProtocolError):
        with_sub("{", "x")


# -- the one clock rule ----------------------------------------------------------------------


def e(clock: int, state: str = '"s"', client_id: int = 1) -> AwarenessEntry:
    return AwarenessEntry(client_id, clock, state)


def test_newest_clock_wins_and_a_removal_wins_a_tie() -> None:
    assert newer(e(2), e(1)) and not newer(e(1), e(2))
    assert newer(e(1, "null"), e(2)) is False  # an old removal is old
    assert newer(e(2, "null"), e(2, '"present"'))  # equal clock, removes a present state
    assert not newer(e(2, '"other"'), e(2, '"present"'))  # equal clock, not a removal
    assert not newer(e(2, "null"), e(2, "null"))  # nothing left to remove
    assert not newer(e(2, '"back"'), e(2, "null"))


def test_the_room_uses_the_clock_rule() -> None:
    link, ann, _bob = two_people()
    link.send(ann, aw((7, 5, '"five"')))
    link.send(ann, aw((7, 3, '"three"')))  # stale
    link.send(ann, aw((7, 5, '"five again"')))  # equal clock, not a removal
    assert states(link.room) == {7: '"five"'}
    link.send(ann, aw((7, 5, "null")))  # equal clock, a removal: wins
    assert states(link.room) == {}


def test_coalesce_uses_the_clock_rule() -> None:
    (kept,) = coalesce([aw((7, 5, '"first"')), aw((7, 5, '"second"'))])
    assert _awareness(kept) == [AwarenessEntry(7, 5, '"first"')]
    (kept,) = coalesce([aw((7, 5, '"first"')), aw((7, 5, "null"))])
    assert _awareness(kept) == [AwarenessEntry(7, 5, "null")]


def _awareness(frame: bytes) -> list[AwarenessEntry]:
    message = protocol.decode(frame)
    assert isinstance(message, AwarenessUpdate)
    return protocol.decode_awareness(message.payload)


class YjsView:
    """What a y-protocols client holds after applying awareness entries (its exact rule)."""

    def __init__(self, start: dict[int, tuple[int, str | None]]) -> None:
        self.clocks = {client_id: clock for client_id, (clock, _) in start.items()}
        self.states = {cid: state for cid, (_, state) in start.items() if state is not None}

    def apply(self, frame: bytes) -> None:
        for entry in _awareness(frame):
            clock = self.clocks.get(entry.client_id, 0)
            present = entry.client_id in self.states
            if clock < entry.clock or (clock == entry.clock and entry.removed and present):
                if entry.removed:
                    self.states.pop(entry.client_id, None)
                else:
                    self.states[entry.client_id] = entry.state
                self.clocks[entry.client_id] = entry.clock


_states = st.sampled_from(["null", '"a"', '"b"', '{"c":1}'])
_entries = st.tuples(st.integers(1, 3), st.integers(0, 3), _states)
_frames = st.lists(st.lists(_entries, min_size=1, max_size=3).map(lambda es: aw(*es)), max_size=8)
_start = st.dictionaries(st.integers(1, 3), st.tuples(st.integers(0, 3), st.none() | _states))
CLOCKS = settings(max_examples=300, deadline=None, database=None, derandomize=True)


@CLOCKS
@given(_start, _frames)
def test_coalesced_frames_mean_the_same_to_a_yjs_client(start, frames: list[bytes]) -> None:
    start = {cid: (clock, None if s == "null" else s) for cid, (clock, s) in start.items()}
    one_by_one, merged = YjsView(start), YjsView(start)
    for frame in frames:
        one_by_one.apply(frame)
    for frame in coalesce(frames):
        merged.apply(frame)
    assert (merged.states, merged.clocks) == (one_by_one.states, one_by_one.clocks)


@CLOCKS
@given(_frames)
def test_the_room_and_coalesce_agree(frames: list[bytes]) -> None:
    frames = _no_return_after_removal(frames)
    room = Room("doc")
    for frame in frames:
        room.receive("peer", frame)
    kept = [entry for frame in coalesce(frames) for entry in _awareness(frame)]
    assert states(room) == {e.client_id: e.state for e in kept if not e.removed}
    again = Room("doc")
    for frame in coalesce(frames):
        again.receive("peer", frame)
    assert states(again) == states(room)


def _no_return_after_removal(frames: list[bytes]) -> list[bytes]:
    """Drop every entry after a removal of its client id: the room keeps no tombstones."""
    removed: set[int] = set()
    out = []
    for frame in frames:
        entries = []
        for entry in _awareness(frame):
            if entry.client_id not in removed:
                entries.append(entry)
                if entry.removed:
                    removed.add(entry.client_id)
        if entries:
            out.append(protocol.encode(AwarenessUpdate(protocol.encode_awareness(entries))))
    return out


def test_joining_sends_sync_step1_then_the_present_states() -> None:
    link, ann, _bob = two_people()
    link.send(ann, aw((7, 1, '"ann"')))
    step1, presence = link.join("carol").received
    assert isinstance(protocol.decode(step1), SyncStep1)
    assert _awareness(presence) == [AwarenessEntry(7, 1, '"ann"')]
