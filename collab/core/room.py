"""One document and the peers editing it: the sync state machine.

Rule: pure. No I/O, no tornado, no asyncio, no clock. A ``Room`` takes
``(peer, bytes)`` and never awaits; it returns ``Effects`` saying what must
happen: frames to answer the sender with, the update to make durable, and the
frames to relay to every other peer. The orchestrator (``hub``) carries them out
in the order data safety needs: log first, then relay.

Document changes are read from ``Doc.observe``, so an update the document
already holds produces no event and nothing is logged or relayed: echoes from a
backplane or a reconnecting client die out here.

Presence is ``awareness.Awareness``: the room decodes a message's envelope, the
awareness module its payload, once; its limits and ownership rules refuse or
drop entries before anything changes.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pycrdt import (
    Doc,
    Subscription,
    Text,
    TextEvent,
    TransactionEvent,
    XmlEvent,
    XmlFragment,
    XmlText,
    merge_updates,
)

from . import awareness, protocol
from .awareness import Awareness
from .errors import BadUpdate, CollabError, DocumentDeleted, ProtocolError
from .limits import StateBudget, update_cost
from .pieces import Pieces, split_update
from .protocol import (
    Auth,
    AwarenessUpdate,
    Generation,
    QueryAwareness,
    Save,
    SyncStep1,
    SyncStep2,
    Update,
)
from .runs import Runs
from .textdiff import text_edits, utf8_splices

__all__ = ["RESTORE_BATCH", "RUN_BOUND", "TEXT_NAME", "Effects", "Room"]

TEXT_NAME = "content"
PIECE_BYTES = 1 << 20  # updates larger than this are applied in pieces (``pieces``)
RUN_BOUND = 2048  # bytes a typing run may grow to before the room breaks it (``runs``)
RESTORE_BATCH = 256  # updates applied per transaction when loading (one commit is O(block))


@dataclass
class Effects:
    """What the orchestrator must do after the room took a message.

    Attributes:
        reply: frames for the sender, in order.
        update: the document change to make durable before relaying, if any.
        relay: frames for every other peer.
        foreign: awareness entries dropped for naming a client id another peer
            owns (worth a log line or a metric; the connection may stay open).
        refused: the rest of the message was refused after ``update`` had
            been applied (a large update applied in pieces): store and relay
            ``update`` as usual, then close the sender with this error.
    """

    reply: list[bytes] = field(default_factory=list)
    update: bytes | None = None
    relay: list[bytes] = field(default_factory=list)
    foreign: int = 0
    refused: CollabError | None = None


_EMPTY_STATE = b"\x00"  # the state vector of a document with nothing in it
_EMPTY_UPDATE = b"\x00\x00"  # no structs, no deletions
_BREAK = "~"  # one ASCII character (pycrdt indices are UTF-8 bytes), deleted at once
# Where a run ends: a text, a byte offset in it and the formatting there (None: none).
_Place = tuple[Text | XmlText, int, dict[str, Any] | None]


def _apply_all(doc: Doc[Any], updates: Iterable[bytes], pieces: bool = True) -> int:
    """Apply ``updates`` in transactions of ``RESTORE_BATCH``; return their total size.

    One transaction for everything would be quadratic in a long run (yrs squashes
    the accumulated blocks right to left); one per update is slow too. A large
    update (a snapshot) goes in piece by piece, each in a transaction of its own,
    so that other threads run between the pieces.
    """
    size = count = 0
    batch = doc.transaction()
    batch.__enter__()
    try:
        for update in updates:
            cut = None
            if pieces and len(update) > PIECE_BYTES:
                cut = split_update(update, PIECE_BYTES, doc.get_state())
            if cut is not None:
                batch.__exit__(None, None, None)
                for piece in cut.parts:
                    doc.apply_update(piece)
                size += len(update)
                batch = doc.transaction()
                batch.__enter__()
                continue
            doc.apply_update(update)
            size += len(update)
            count += 1
            if count % RESTORE_BATCH == 0:
                batch.__exit__(None, None, None)
                batch = doc.transaction()
                batch.__enter__()
    finally:
        batch.__exit__(None, None, None)
    return size


def merged_state(updates: Sequence[bytes]) -> tuple[bytes, bytes]:
    """The document ``updates`` make: its encoded state and its state vector.

    For a process of its own (``Offload.merge``): it holds the GIL as long as it
    takes, which in the server's process would hold every room.
    """
    doc: Doc[Any] = Doc()
    _apply_all(doc, updates, pieces=False)
    return doc.get_update(), doc.get_state()


class Room:
    """The Yjs document of one name, its awareness states and its peers.

    Args:
        name: the document's name.
        max_awareness_bytes: the largest awareness state a peer may set (0: no limit).
        max_awareness_clients: how many awareness client ids one peer may own
            at once (0: no limit).
        max_state_bytes: the largest encoded document a peer's update or a
            text replacement may produce (``limits.StateBudget``; 0: no limit).
    """

    def __init__(
        self,
        name: str,
        *,
        max_awareness_bytes: int = 0,
        max_awareness_clients: int = 0,
        max_state_bytes: int = 0,
        run_bound: int = RUN_BOUND,
    ) -> None:
        self.name = name
        # A low client id: the tombstones that break runs (``runs``) sort before a
        # writer's next character, which then never joins the run it breaks.
        self.doc: Doc[Any] = Doc(client_id=random.randrange(1, 1 << 20))
        self.runs = Runs(run_bound)
        self.budget = StateBudget(max_state_bytes)
        self.awareness = Awareness(
            max_state_bytes=max_awareness_bytes, max_clients=max_awareness_clients
        )
        self._changes: list[bytes] = []
        self._full_step2: bytes | None = None  # step 2 for an empty state vector
        self._subscription = self.doc.observe(self._on_transaction)
        self.generation = ""  # the store's incarnation of the document ("": unknown)

    def _on_transaction(self, event: TransactionEvent) -> None:
        self._changes.append(event.update)
        self._full_step2 = None

    def _take_change(self) -> bytes | None:
        changes, self._changes = self._changes, []
        if not changes:
            return None
        return changes[0] if len(changes) == 1 else merge_updates(*changes)

    # -- loading ------------------------------------------------------------

    def restore(self, updates: Iterable[bytes], snapshot: bytes | None = None) -> None:
        """Apply stored updates (not logged again, not relayed); never refused.

        ``snapshot``: the only update, a whole encoded document (a store's
        snapshot with nothing logged after it). It is kept as a fresh client's
        step 2 until the document changes: no encoding of it at the first join.
        """
        self.doc.unobserve(self._subscription)  # nothing to log: skip encoding each batch
        try:
            size = _apply_all(self.doc, updates)
        finally:
            self._subscription = self.doc.observe(self._on_transaction)
        self._changes.clear()
        self._full_step2 = protocol.encode(SyncStep2(snapshot)) if snapshot else None
        self.budget.grow(size)  # what is stored bounds the state: measured when it matters

    def apply_remote(self, update: bytes) -> Effects:
        """Apply an update another process already logged; relay what was new.

        Returns:
            ``relay`` for every local peer (the caller does not log ``update``
            again); nothing if the room already held it, so echoes die out.

        Raises:
            BadUpdate: the CRDT rejects the update; the document is unchanged.
        """
        return self._apply(update, check=False)  # durable already: never refused

    # -- peers --------------------------------------------------------------

    @property
    def peers(self) -> dict[Hashable, awareness.Presence]:
        """Every peer in the room (iterate for fan-out); values are their presence."""
        return self.awareness.peers

    def join(self, peer: Hashable, sub: str | None = None) -> list[bytes]:
        """Add ``peer``; return the frames to send it first (step 1, awareness).

        Args:
            peer: the connection.
            sub: its verified identity (access control on); the room writes it
                into every awareness state the peer sends, as ``user.sub``.
        """
        self.awareness.join(peer, sub)
        frames = [protocol.encode(SyncStep1(self.doc.get_state()))]
        if present := self.awareness.present():
            frames.append(awareness.frame(present))
        return frames

    def leave(self, peer: Hashable) -> Effects:
        """Remove ``peer``; relay the removal of every awareness state it owned."""
        gone = self.awareness.leave(peer)
        return Effects(relay=[awareness.frame(gone)] if gone else [])

    # -- other processes (cluster mode) -------------------------------------

    def remote_awareness(self, owner: Hashable, data: bytes) -> Effects:
        """Take an awareness frame another process relayed for its clients.

        ``owner`` stands for that process: it owns the states the frame sets,
        without a cap on how many (each client was capped where it connected),
        and ``leave(owner)`` drops them all when the process is gone.

        Raises:
            ProtocolError: the frame is malformed.
            MessageTooBig: a state is over ``max_awareness_bytes``.
        """
        message = protocol.decode(data)
        if not isinstance(message, AwarenessUpdate):
            raise ProtocolError("not an awareness message")
        received = self.awareness.receive(owner, message.payload, data, capped=False)
        return Effects(relay=[received.frame] if received.frame is not None else [])

    def local_awareness(self, remote: type) -> bytes | None:
        """The states of this process's own peers (not those owned by a ``remote``), as a frame."""
        owners = self.awareness.owners
        states = [e for i, e in self.awareness.states.items() if not isinstance(owners[i], remote)]
        return awareness.frame(states) if states else None

    def missing(self, updates: Iterable[bytes]) -> bytes | None:
        """What this document has that the one made of ``updates`` lacks (or None)."""
        other: Doc[Any] = Doc()
        _apply_all(other, updates)
        update = self.doc.get_update(other.get_state())
        return None if update == _EMPTY_UPDATE else update

    def close(self) -> None:
        """Release the document's observer so the room can be freed."""
        self.doc.unobserve(self._subscription)

    # -- messages -----------------------------------------------------------

    def receive(self, peer: Hashable, data: bytes, *, writable: bool = True) -> Effects:
        """Take one frame from ``peer``.

        Args:
            peer: the sender.
            data: one y-protocols message.
            writable: False for a read-only peer: its document updates are
                dropped (its awareness is not: that is not an edit), and its
                ``Save`` requests never answered (nothing of it is ever saved).

        Returns:
            What to do: log ``update``, then send ``reply`` and ``relay``.

        Raises:
            ProtocolError: the frame is malformed or its update invalid (1007).
            MessageTooBig: an awareness state is over its limit (1009).
            DocumentTooLarge: the update could grow the document past
                ``max_state_bytes`` (1009).
            PolicyViolation: the peer would own too many awareness ids (1008).
            DocumentDeleted: the peer's copy is of an older ``generation`` (4404).
            On any of these the room is unchanged and the caller closes the
            connection with the error's ``close_code``.
        """
        match protocol.decode(data):
            case SyncStep1(state_vector):
                return Effects(reply=[self._step2(state_vector)])
            case Update(update):
                return self._apply(update, data, runs=True) if writable else Effects()
            case SyncStep2(update):
                return self._apply(update, runs=True) if writable else Effects()
            case AwarenessUpdate(payload):
                received = self.awareness.receive(peer, payload, data)
                if received.frame is None:
                    return Effects(foreign=received.foreign)
                # Echoed to the sender too, as the reference server does: a stock
                # y-websocket client drops a socket that is silent for 30 s, and
                # its periodic awareness renewal is what keeps a lone client alive.
                out = received.frame
                return Effects(reply=[out], relay=[out], foreign=received.foreign)
            case QueryAwareness():
                return Effects(reply=[awareness.frame(self.awareness.present())])
            case Auth():
                return Effects()
            case Save():  # answered in order, once what came before is durable
                return Effects(reply=[data]) if writable else Effects()
            case Generation(copy) if copy and self.generation and copy != self.generation:
                raise DocumentDeleted("the document this copy belongs to was deleted")
            case Generation():
                return Effects(reply=[protocol.encode(Generation(self.generation))])
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

    @property
    def fresh_step2_kept(self) -> bool:
        """Is a fresh client's step 2 kept (nothing changed since the last one)?"""
        return self._full_step2 is not None

    def _measure(self) -> int:
        return len(self.doc.get_update())

    def _apply(
        self, update: bytes, frame: bytes | None = None, check: bool = True, runs: bool = False
    ) -> Effects:
        if update == _EMPTY_UPDATE:
            return Effects()  # a fresh client's step 2: nothing to apply
        cost = update_cost(len(update))
        if check:
            self.budget.admit(cost, self._measure)
        run_end = self._run_end() if runs and self.runs.should_break(update) else None
        pieces = None
        if len(update) > PIECE_BYTES and run_end is None:
            pieces = split_update(update, PIECE_BYTES, self.doc.get_state())
        if pieces is not None:
            return self._apply_pieces(update, frame, pieces, cost)
        try:
            self.doc.apply_update(update)
        except ValueError as exc:
            self._changes.clear()
            raise BadUpdate(f"invalid Yjs update: {exc}") from None
        finally:
            end = run_end() if run_end is not None else None
        change = self._take_change()
        if change is None:
            return Effects()
        self.budget.grow(cost)
        relay = [frame] if frame is not None and change == update else None  # as received
        if end is not None and (breaker := self._break_run(end)) is not None:
            relay = (relay or [protocol.encode(Update(change))]) + [
                protocol.encode(Update(breaker))
            ]
            return Effects(update=merge_updates(change, breaker), relay=relay)
        return Effects(update=change, relay=relay or [protocol.encode(Update(change))])

    def _apply_pieces(
        self, update: bytes, frame: bytes | None, pieces: Pieces, cost: int
    ) -> Effects:
        """Apply a large update piece by piece (pycrdt holds the GIL for one whole
        apply: between pieces, other threads run). Same effects as one apply.

        If a piece is refused after others went in, what went in is the change
        (stored and relayed) and ``refused`` says why the sender is closed.
        """
        refused = None
        for index, piece in enumerate(pieces.parts):
            try:
                self.doc.apply_update(piece)
            except ValueError as exc:
                refused = BadUpdate(f"invalid Yjs update: {exc}")
                if index == 0:
                    self._changes.clear()
                    raise refused from None
                break
        if refused is None and pieces.new and self._changes:
            self._changes.clear()  # all of it was new: the update itself is the change
            change: bytes | None = update
        else:
            change = self._take_change()
        if change is None:
            return Effects(refused=refused)
        self.budget.grow(cost)
        relay = [frame] if frame is not None and change is update else None  # as received
        return Effects(
            update=change, relay=relay or [protocol.encode(Update(change))], refused=refused
        )

    def _run_end(self) -> Callable[[], _Place | None]:
        """Watch the texts a run grows in during one apply; the returned call says where
        its insert ended: ``content``, and every Y.XmlText under a root Y.XmlFragment
        (ProseMirror's and Tiptap's paragraphs)."""
        ends: list[_Place] = []

        def note(target: Text | XmlText, delta: list[dict[str, Any]]) -> None:
            position = 0
            for op in delta:
                if "retain" in op:
                    position += op["retain"]
                elif "insert" in op:
                    inserted = op["insert"]
                    position += len(inserted.encode()) if isinstance(inserted, str) else 1
                    ends.append((target, position, op.get("attributes")))

        def on_xml(events: list[XmlEvent]) -> None:
            for event in events:
                target = event.target  # type: ignore[attr-defined]
                if isinstance(target, XmlText):  # an element's children are not a run
                    note(target, event.delta)  # type: ignore[attr-defined]

        watched: list[tuple[Text | XmlFragment, Subscription]] = []
        text = self._content()
        if text is not None:
            content = text

            def on_text(event: TextEvent) -> None:
                note(content, event.delta)  # type: ignore[attr-defined]

            watched.append((text, text.observe(on_text)))
        for fragment in self._fragments():
            watched.append((fragment, fragment.observe_deep(on_xml)))  # type: ignore[arg-type]

        def end() -> _Place | None:
            for shared, subscription in watched:
                shared.unobserve(subscription)
            return ends[-1] if ends else None

        return end

    def _break_run(self, place: _Place) -> bytes | None:
        """Insert and delete one character where ``place`` says: the tombstone after a
        long run, so the next character starts a new block. Returns its update.

        The character takes the run's formatting (a bold run in a rich text): a plain
        one would go after the run's closing format mark, not next to its end.
        """
        text, end, formatting = place
        with self.doc.transaction():
            text.insert(end, _BREAK, formatting)
            del text[end : end + len(_BREAK)]
        return self._take_change()

    def _fragments(self) -> list[XmlFragment]:
        """The root types other than ``content`` that are, or may be, Y.XmlFragments.

        A root that came in an update has no type until it is read as one; reading
        it as a fragment changes nothing in the document (roots are named, not
        typed, in updates), and a fragment's own children are never a run.
        """
        names = [
            name
            for name, root in self.doc.items()
            if name != TEXT_NAME and (root is None or isinstance(root, XmlFragment))
        ]
        return [self.doc.get(name, type=XmlFragment) for name in names]

    def _content(self) -> Text | None:
        try:
            text: Text = self.doc.get(TEXT_NAME, type=Text)
        except (TypeError, ValueError):  # ``content`` is another shared type here
            return None
        return text

    def _effects_of_change(self) -> Effects:
        change = self._take_change()
        if change is None:
            return Effects()
        return Effects(update=change, relay=[protocol.encode(Update(change))])

    # -- the shared text ----------------------------------------------------

    @property
    def text(self) -> str:
        """The text of the ``Y.Text`` named ``content``."""
        return str(self.doc.get(TEXT_NAME, type=Text))

    def replace_text(self, new: str) -> Effects:
        """Edit ``content`` into ``new`` with a minimal diff (``textdiff.text_edits``).

        Text both have in common keeps its CRDT items, so other people's
        carets and relative positions stay on the same characters.

        Raises:
            DocumentTooLarge: the edit could grow the document past
                ``max_state_bytes``; nothing was changed.
        """
        text = self.doc.get(TEXT_NAME, type=Text)
        old = str(text)
        edits = text_edits(old, new)
        inserted = sum(len(e.insert.encode()) for e in edits)
        cost = update_cost(inserted)
        if inserted:  # a pure deletion is never refused
            self.budget.admit(cost, self._measure)
        with self.doc.transaction():
            for start, end, insert in utf8_splices(old, edits):
                if end > start:
                    del text[start:end]
                if insert:
                    text.insert(start, insert)
        self.budget.grow(cost)
        return self._effects_of_change()

    def apply_local(self, update: bytes) -> Effects:
        """Apply an update made by the server itself (a restore, ``PUT`` text): log, relay.

        Raises:
            BadUpdate: the CRDT rejects it; DocumentTooLarge: over ``max_state_bytes``.
        """
        return self._apply(update)
