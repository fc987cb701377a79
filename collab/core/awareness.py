"""The presence states of one room, and which connection owns each of them.

Rule 1: pure. No I/O, no tornado, no asyncio, no websockets, no socket, no os,
no threads, no clock. ``Awareness`` takes ``(peer, payload)`` and returns what
to relay; it never waits.

Rule 2: newest clock wins, as in y-protocols: an entry replaces the current one
if its clock is greater, or if the clocks are equal and the entry removes a
present state (``newer``). The room and ``limits.coalesce`` both use it.

Rule 3: a peer sets and removes only the client ids it introduced. An entry
naming a client id that another peer owns is dropped (not applied, not relayed)
and counted, so the room can report it.

Rule 4: limits are checked before anything changes. A state over
``max_state_bytes`` is ``MessageTooBig`` (1009); a message that would make the
peer own more than ``max_clients`` ids is ``PolicyViolation`` (1008). On either,
nothing is stored and nothing is relayed.

Rule 5: with a verified ``sub`` for a peer (access control on), every state it
sends that is a JSON object gets ``state["user"]["sub"] = sub``, overwriting
what the client claimed; other states are left as they are.

No tombstones: a removed client id is forgotten, so clients coming and going
cost nothing. The usual message (one entry, the sender's own id, no ``sub``) is
relayed as received, without re-encoding.
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from dataclasses import dataclass, field

from . import protocol
from .errors import MessageTooBig, PolicyViolation, ProtocolError
from .protocol import AwarenessEntry, AwarenessUpdate

__all__ = ["Awareness", "Presence", "Received", "frame", "newer", "with_sub"]


def newer(entry: AwarenessEntry, current: AwarenessEntry) -> bool:
    """Whether ``entry`` replaces ``current`` for the same client id (y-protocols' rule).

    Args:
        entry: the entry that arrived.
        current: the entry held now; a removal (``"null"``) if the state is gone.

    Returns:
        True if the clock of ``entry`` is greater, or equal while ``entry``
        removes a state that ``current`` says is present.
    """
    if entry.clock != current.clock:
        return entry.clock > current.clock
    return entry.removed and not current.removed


def with_sub(state: str, sub: str) -> str:
    """``state`` (JSON text) with ``user.sub`` set to ``sub``, if it is a JSON object.

    ``user`` is made an object if it is missing or not one. A state that is not
    an object (``"null"``, a string, a list) comes back unchanged.

    Raises:
        ProtocolError: the state is not JSON, or too deeply nested to re-encode.
    """
    try:
        value = json.loads(state)
        if not isinstance(value, dict):
            return state
        user = value.get("user")
        if not isinstance(user, dict):
            user = value["user"] = {}
        user["sub"] = sub
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (ValueError, RecursionError):
        raise ProtocolError("awareness state is not JSON") from None


def frame(entries: list[AwarenessEntry]) -> bytes:
    """The awareness message holding ``entries``."""
    return protocol.encode(AwarenessUpdate(protocol.encode_awareness(entries)))


@dataclass
class Presence:
    """One peer's part in a room's awareness: its verified identity and its client ids."""

    sub: str | None = None
    ids: set[int] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class Received:
    """What came of an awareness message.

    Attributes:
        frame: the message to relay (and echo to the sender), or None if no
            entry was the sender's to send.
        foreign: entries dropped because another peer owns their client id.
    """

    frame: bytes | None
    foreign: int = 0


class Awareness:
    """The present states of one room, each owned by the peer that introduced it.

    Args:
        max_state_bytes: the largest state a peer may set, in UTF-8 bytes (0: no limit).
        max_clients: how many client ids one peer may own at once (0: no limit).
    """

    def __init__(self, *, max_state_bytes: int = 0, max_clients: int = 0) -> None:
        self.max_state_bytes = max_state_bytes
        self.max_clients = max_clients
        self.peers: dict[Hashable, Presence] = {}
        self.states: dict[int, AwarenessEntry] = {}
        self.owners: dict[int, Hashable] = {}

    def join(self, peer: Hashable, sub: str | None = None) -> None:
        """Add ``peer``; with ``sub``, every state it sets will carry ``user.sub = sub``."""
        presence = self.peers.setdefault(peer, Presence())
        presence.sub = sub

    def leave(self, peer: Hashable) -> list[AwarenessEntry]:
        """Forget ``peer`` and its states; return their removals, for the others."""
        presence = self.peers.pop(peer, None)
        if presence is None:
            return []
        gone = []
        for client_id in presence.ids:
            entry = self.states.pop(client_id)
            del self.owners[client_id]
            gone.append(AwarenessEntry(client_id, entry.clock + 1, "null"))
        return gone

    def present(self) -> list[AwarenessEntry]:
        """Every state held now."""
        return list(self.states.values())

    def receive(
        self, peer: Hashable, payload: bytes, message: bytes | None = None, capped: bool = True
    ) -> Received:
        """Take one awareness update payload from ``peer``.

        Args:
            peer: the sender; a peer that has not joined joins without ``sub``.
            payload: the payload of the ``AwarenessUpdate``.
            message: the whole message as received, relayed as is when nothing
                in it had to change.
            capped: False for another process's clients: ``max_clients`` is
                checked where each of them connected.

        Returns:
            The frame the caller relays to the other peers and echoes to the
            sender, and how many entries were dropped as another peer's.

        Raises:
            ProtocolError: the payload is malformed.
            MessageTooBig: a state is over ``max_state_bytes``.
            PolicyViolation: ``peer`` would own more than ``max_clients`` ids.
            Nothing has changed when any of these is raised.
        """
        entries = protocol.decode_awareness(payload)
        self._check_sizes(entries)
        presence = self.peers.get(peer) or Presence()
        own = [e for e in entries if self.owners.get(e.client_id, peer) == peer]
        foreign = len(entries) - len(own)
        same = not foreign
        if presence.sub is not None:
            stamped = [e if e.removed else _stamped(e, presence.sub) for e in own]
            same = same and all(a is b for a, b in zip(stamped, own, strict=True))
            own = stamped
        changes = self._plan(own)
        if capped:
            self._check_cap(presence, changes)
        self.peers.setdefault(peer, presence)
        self._apply(peer, presence, changes)
        if not own:
            return Received(None, foreign)
        if same and message is not None:
            return Received(message)  # the usual case: relay as received
        return Received(frame(own), foreign)

    def _check_sizes(self, entries: list[AwarenessEntry]) -> None:
        cap = self.max_state_bytes
        if cap <= 0:
            return
        for entry in entries:
            if len(entry.state) * 4 > cap and (size := len(entry.state.encode())) > cap:
                raise MessageTooBig(f"awareness state of {size} bytes (limit {cap})")

    def _plan(self, entries: list[AwarenessEntry]) -> dict[int, AwarenessEntry]:
        """The entries that win, by client id (a removal means: delete the state)."""
        changes: dict[int, AwarenessEntry] = {}
        for entry in entries:
            current = changes.get(entry.client_id) or self.states.get(entry.client_id)
            if current is None or current.removed:
                if not entry.removed:  # nothing held (no tombstones): any state is news
                    changes[entry.client_id] = entry
            elif newer(entry, current):
                changes[entry.client_id] = entry
        return changes

    def _check_cap(self, presence: Presence, changes: dict[int, AwarenessEntry]) -> None:
        cap = self.max_clients
        if cap <= 0:
            return
        count = len(presence.ids)
        for client_id, entry in changes.items():
            held = client_id in self.states
            count += (not entry.removed and not held) - (entry.removed and held)
        if count > cap:
            raise PolicyViolation(f"too many awareness clients (limit {cap})")

    def _apply(
        self, peer: Hashable, presence: Presence, changes: dict[int, AwarenessEntry]
    ) -> None:
        for client_id, entry in changes.items():
            if entry.removed:
                if self.states.pop(client_id, None) is not None:
                    del self.owners[client_id]
                    presence.ids.discard(client_id)
            else:
                self.states[client_id] = entry
                self.owners[client_id] = peer
                presence.ids.add(client_id)


def _stamped(entry: AwarenessEntry, sub: str) -> AwarenessEntry:
    state = with_sub(entry.state, sub)
    return entry if state == entry.state else AwarenessEntry(entry.client_id, entry.clock, state)
