"""One document and the peers editing it: the sync state machine.

Rule: pure. No I/O, no tornado, no asyncio, no clock. A ``Room`` takes
``(peer, bytes)`` and never awaits; it returns ``Effects`` saying what must
happen: frames to answer the sender with, the update to make durable, and the
frames to relay to every other peer. The orchestrator (``hub``) carries them out
in the order data safety needs: log first, then relay.

Document changes are read from ``Doc.observe``, so an update the document
already holds produces no event and nothing is logged or relayed: echoes from a
backplane or a reconnecting client die out here.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from pycrdt import Doc, Text, TransactionEvent, merge_updates

from . import protocol
from .errors import BadUpdate, ProtocolError
from .protocol import (
    Auth,
    AwarenessEntry,
    AwarenessUpdate,
    QueryAwareness,
    SyncStep1,
    SyncStep2,
    Update,
)

__all__ = ["TEXT_NAME", "Effects", "Peer", "Room"]

TEXT_NAME = "content"


class Peer(Hashable, Protocol):
    """A connection as the room sees it: anything hashable."""


@dataclass
class Effects:
    """What the orchestrator must do after the room took a message."""

    reply: list[bytes] = field(default_factory=list)
    update: bytes | None = None
    relay: list[bytes] = field(default_factory=list)


_EMPTY_STATE = b"\x00"  # the state vector of a document with nothing in it


class Room:
    """The Yjs document of one name, its awareness states and its peers."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.doc: Doc = Doc()
        self.peers: dict[Peer, set[int]] = {}
        self.awareness: dict[int, AwarenessEntry] = {}
        self._changes: list[bytes] = []
        self._full_step2: bytes | None = None  # step 2 for an empty state vector
        self._subscription = self.doc.observe(self._on_transaction)

    def _on_transaction(self, event: TransactionEvent) -> None:
        self._changes.append(event.update)
        self._full_step2 = None

    def _take_change(self) -> bytes | None:
        changes, self._changes = self._changes, []
        if not changes:
            return None
        return changes[0] if len(changes) == 1 else merge_updates(*changes)

    # -- loading ------------------------------------------------------------

    def restore(self, updates: Iterable[bytes]) -> None:
        """Apply stored updates (not logged again, not relayed)."""
        with self.doc.transaction():
            for update in updates:
                self.doc.apply_update(update)
        self._changes.clear()

    # -- peers --------------------------------------------------------------

    def join(self, peer: Peer) -> list[bytes]:
        """Add ``peer``; return the frames to send it first (step 1, awareness)."""
        self.peers[peer] = set()
        frames = [protocol.encode(SyncStep1(self.doc.get_state()))]
        if present := self._present():
            frames.append(self._awareness_frame(present))
        return frames

    def leave(self, peer: Peer) -> Effects:
        """Remove ``peer``; relay the removal of every awareness state it set."""
        ids = self.peers.pop(peer, set())
        gone = []
        for client_id in ids:
            entry = self.awareness.pop(client_id, None)
            if entry is not None:
                gone.append(AwarenessEntry(client_id, entry.clock + 1, "null"))
        return Effects(relay=[self._awareness_frame(gone)] if gone else [])

    def close(self) -> None:
        """Release the document's observer so the room can be freed."""
        self.doc.unobserve(self._subscription)

    # -- messages -----------------------------------------------------------

    def receive(self, peer: Peer, data: bytes, *, writable: bool = True) -> Effects:
        """Take one frame from ``peer``.

        Raises:
            ProtocolError: the frame is malformed or its update invalid; the
                document is unchanged and the caller closes the connection.
        """
        match protocol.decode(data):
            case SyncStep1(state_vector):
                return Effects(reply=[self._step2(state_vector)])
            case Update(update):
                return self._apply(update, data) if writable else Effects()
            case SyncStep2(update):
                return self._apply(update) if writable else Effects()
            case AwarenessUpdate(payload):
                self._take_awareness(peer, protocol.decode_awareness(payload))
                # Echoed to the sender too, as the reference server does: a stock
                # y-websocket client drops a socket that is silent for 30 s, and
                # its periodic awareness renewal is what keeps a lone client alive.
                return Effects(reply=[data], relay=[data])
            case QueryAwareness():
                return Effects(reply=[self._awareness_frame(self._present())])
            case Auth():
                return Effects()
        raise ProtocolError("unhandled message")  # pragma: no cover

    def _step2(self, state_vector: bytes) -> bytes:
        """The update ``state_vector`` lacks, as a step 2 frame.

        A fresh client (empty state vector) gets the whole document; that frame
        is kept until the document changes, so a crowd joining an unchanged
        document costs one encoding.
        """
        fresh = state_vector == _EMPTY_STATE
        if fresh and self._full_step2 is not None:
            return self._full_step2
        try:
            update = self.doc.get_update(state_vector)
        except ValueError:
            raise ProtocolError("invalid state vector") from None
        frame = protocol.encode(SyncStep2(update))
        if fresh:
            self._full_step2 = frame
        return frame

    def _apply(self, update: bytes, frame: bytes | None = None) -> Effects:
        try:
            self.doc.apply_update(update)
        except ValueError as exc:
            self._changes.clear()
            raise BadUpdate(f"invalid Yjs update: {exc}") from None
        change = self._take_change()
        if change is None:
            return Effects()
        if frame is not None and change == update:
            return Effects(update=change, relay=[frame])  # the usual case: relay as received
        return Effects(update=change, relay=[protocol.encode(Update(change))])

    def _effects_of_change(self) -> Effects:
        change = self._take_change()
        if change is None:
            return Effects()
        return Effects(update=change, relay=[protocol.encode(Update(change))])

    # -- awareness ----------------------------------------------------------

    def _take_awareness(self, peer: Peer, entries: list[AwarenessEntry]) -> None:
        owned = self.peers.setdefault(peer, set())
        for entry in entries:
            current = self.awareness.get(entry.client_id)
            if entry.removed:
                # No tombstones: a removed client costs nothing however many come and go.
                if current is not None and entry.clock >= current.clock:
                    del self.awareness[entry.client_id]
                owned.discard(entry.client_id)
            else:
                if current is None or entry.clock > current.clock:
                    self.awareness[entry.client_id] = entry
                owned.add(entry.client_id)

    def _present(self) -> list[AwarenessEntry]:
        return list(self.awareness.values())

    @staticmethod
    def _awareness_frame(entries: list[AwarenessEntry]) -> bytes:
        return protocol.encode(AwarenessUpdate(protocol.encode_awareness(entries)))

    # -- the shared text ----------------------------------------------------

    @property
    def text(self) -> str:
        """The text of the ``Y.Text`` named ``content``."""
        return str(self.doc.get(TEXT_NAME, type=Text))

    def replace_text(self, new: str) -> Effects:
        """Edit ``content`` into ``new`` with the smallest single splice."""
        text = self.doc.get(TEXT_NAME, type=Text)
        old = str(text)
        start = 0
        limit = min(len(old), len(new))
        while start < limit and old[start] == new[start]:
            start += 1
        end_old, end_new = len(old), len(new)
        while end_old > start and end_new > start and old[end_old - 1] == new[end_new - 1]:
            end_old -= 1
            end_new -= 1
        # pycrdt indexes Y.Text by UTF-8 byte offsets.
        a = len(old[:start].encode())
        b = a + len(old[start:end_old].encode())
        with self.doc.transaction():
            if b > a:
                del text[a:b]
            if end_new > start:
                text.insert(a, new[start:end_new])
        return self._effects_of_change()
