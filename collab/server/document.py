"""One loaded document: its room, its log, and the order data safety needs.

A ``Document`` carries out what its ``Room`` says a message causes: the update
is appended to the log, and the reply and relay go out only once the log says
the record is durable (``DocumentLog.durable``; with ``fsync="always"`` or
Redis that means after a flush). While some record waits, later messages wait
behind it in arrival order, so nobody is ever sent an update before it is
durable, and one flush covers every update that arrived meanwhile.

Relays wait for the end of the event-loop iteration: a run of frames from one
sender is merged (``coalesce``) and framed once for every peer.

Phases: ``LOADING`` → ``OPEN`` → ``UNLOADING`` → ``CLOSED``, or ``OPEN`` →
``FAILED`` (an update could not be logged: every client is closed with 1011,
the document is dropped unsaved and loads again from the store) → ``CLOSED``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ..core import policy, protocol
from ..core.config import Config
from ..core.errors import (
    CollabError,
    DocumentDeleted,
    DocumentTooLarge,
    DocumentUnavailable,
    ShuttingDown,
)
from ..core.limits import coalesce
from ..core.pieces import decode_state_vector
from ..core.protocol import SyncStep2, Update
from ..core.room import Effects, Room
from ..storage.base import Cursor, DocumentLog, Loaded, Presence, Record
from . import offload
from .cluster import Backplane
from .extensions import ChangeEvent, DisconnectEvent, Extensions, StoredEvent
from .metrics import Metrics
from .offload import SLOW_SECONDS, Offload, log_slow
from .session import Peer, Session

__all__ = ["Document", "Phase"]

_SYNC, _STEP1 = 0, 0  # the first two bytes of a sync step 1 message
_EDITS = (protocol.SyncType.STEP2, protocol.SyncType.UPDATE)  # a sync message's second byte
_FRESH_STEP1 = b"\x00\x00\x01\x00"  # a sync step 1 with an empty state vector
FRESH_UPDATES = 2000  # at most this many updates since the snapshot go to a fresh client
_AWARENESS = 1  # the first byte of a y-protocols awareness message

log = logging.getLogger("collab.hub")


class Phase(enum.Enum):
    LOADING = "loading"
    OPEN = "open"
    UNLOADING = "unloading"
    FAILED = "failed"  # an update could not be logged: being dropped unsaved
    CLOSED = "closed"  # unloaded, deleted or evicted: a new Document takes its place


_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class _Job:
    """Work on the room that must not overlap its messages (see ``Document._exclusive``)."""

    what: str
    size: int
    fn: Callable[[], Any]
    done: asyncio.Future[Any]


@dataclass(frozen=True, slots=True)
class _Held:
    cursor: Cursor | None  # None: nothing to wait for but the messages before it
    sender: Peer | None  # None: an edit made through the API
    effects: Effects


class Document:
    """The room and log of one name, while it is loaded."""

    def __init__(
        self,
        name: str,
        log_: DocumentLog,
        config: Config,
        metrics: Metrics,
        extensions: Extensions,
        clock: Callable[[], float] = time.time,
        on_failed: Callable[[Document], None] = lambda doc: None,
        on_idle: Callable[[Document], None] = lambda doc: None,
        on_deleted: Callable[[Document], None] = lambda doc: None,
        presence: Presence | None = None,
    ) -> None:
        self.name = name
        self.log = log_
        self.config = config
        self.metrics = metrics
        self.extensions = extensions
        self.clock = clock
        self.room = Room(
            name,
            max_awareness_bytes=config.max_awareness_bytes,
            max_awareness_clients=config.max_awareness_clients,
            max_state_bytes=config.max_document_bytes,
        )
        self.phase = Phase.LOADING
        self.exists = False  # the store had it, or it got content since (see ``_created``)
        self.sessions: dict[Peer, Session] = {}
        self.cursor: Cursor = None  # of the last record appended
        self.unsnapshotted = 0  # records since the last snapshot
        self.snapshot_bytes = 0  # the size of the last snapshot (``policy.should_compact``)
        # A large document's last snapshot state and the updates logged since (None:
        # not kept): its next snapshot is merged from them in another process.
        self._base: bytes | None = None
        self._since: list[bytes] | None = None
        self._base_step2: tuple[bytes, bytes] | None = None  # (``_base``, its step 2 frame)
        self.lock = asyncio.Lock()  # one compaction (or delete) at a time
        self.compacting: asyncio.Task[None] | None = None
        self._held: deque[_Held] = deque()
        self._flusher: asyncio.Task[None] | None = None
        self._outgoing: list[tuple[Peer | None, list[bytes]]] = []
        self.crdt: Offload | None = None  # where heavy messages are applied (set by ``load``)
        self._inbox: deque[tuple[Session, bytes] | Sequence[Record] | _Job] | None = None
        self._busy: asyncio.Task[None] | None = None  # the room is the CRDT thread's meanwhile
        self._settled: asyncio.Future[None] | None = None
        self._on_failed = on_failed
        self._on_idle = on_idle
        self._on_deleted = on_deleted
        self.presence = presence  # awareness between processes (cluster mode)
        self.backplane = Backplane(self)

    # -- phases -------------------------------------------------------------------

    async def load(self, loaded: Loaded, crdt: Offload | None = None) -> None:
        """Apply what the store had (a large document in ``crdt``'s thread: nothing else
        touches the room while it loads); the document is open from now on."""
        if crdt is None:
            self.restore(loaded)
            return
        self.crdt = crdt
        size = sum(len(update) for update in loaded.updates)
        await crdt.run(self.name, "load", size, lambda: self._restore(loaded))
        self._opened(loaded)

    def restore(self, loaded: Loaded) -> None:
        """Apply what the store had, on the loop; the document is open from now on."""
        self._restore(loaded)
        self._opened(loaded)

    def _restore(self, loaded: Loaded) -> None:
        whole = loaded.state if not loaded.records else None  # a snapshot alone: keep it
        self.room.restore(loaded.updates, snapshot=whole)

    def _opened(self, loaded: Loaded) -> None:
        self.room.generation = loaded.generation  # "": the store keeps none
        self.cursor = loaded.cursor
        self.unsnapshotted = len(loaded.records)
        self.snapshot_bytes = len(loaded.state or b"")
        if self._mergeable(self.snapshot_bytes):
            self._base, self._since = loaded.state, [r.update for r in loaded.records]
        self.exists = loaded.state is not None or bool(loaded.records)
        self.log.watch(self.backplane)
        if self.presence is not None:
            self.presence.join(self.name, self.backplane)
        self.enter(Phase.OPEN)

    def enter(self, phase: Phase) -> None:
        """Move to ``phase``; whoever waits in ``settled`` is woken."""
        self.phase = phase
        if phase is Phase.CLOSED:
            self.room.close()
            if self.presence is not None:
                self.presence.leave(self.name)
        if self._settled is not None and phase in (Phase.OPEN, Phase.CLOSED):
            self._settled.set_result(None)
            self._settled = None

    async def settled(self) -> None:
        """Wait until the document is ``OPEN`` or ``CLOSED`` (not loading, unloading)."""
        while self.phase not in (Phase.OPEN, Phase.CLOSED):
            if self._settled is None:
                self._settled = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._settled)

    @property
    def idle(self) -> bool:
        return not self.sessions and self.phase is Phase.OPEN and self._busy is None

    @property
    def busy(self) -> bool:
        """Is a heavy message being applied (``quiet`` would wait)?"""
        return self._busy is not None

    async def quiet(self) -> None:
        """Return once no heavy message is being applied: the room may be read or changed.

        Call it before touching ``room`` from outside the message path, and do
        so before the next ``await``.
        """
        while self._busy is not None:
            await asyncio.shield(self._busy)

    # -- sessions -----------------------------------------------------------------

    def add(self, session: Session) -> None:
        """Let ``session`` in: it is sent sync step 1 and the present awareness."""
        self.sessions[session.peer] = session
        for frame in self.room.join(session.peer, sub=session.permission.user):
            session.peer.send(frame)
        self.metrics.connections += 1
        if self.presence is not None:
            self.presence.count(self.name, len(self.sessions))

    def leave(self, session: Session) -> None:
        """Forget ``session``; relay the removal of its awareness states."""
        if self.sessions.get(session.peer) is not session:
            return
        del self.sessions[session.peer]
        self.metrics.connections -= 1
        if self.extensions.wants("on_disconnect"):
            event = DisconnectEvent(self.name, session.id, session.permission)
            self.extensions.after("on_disconnect", event)
        effects = self.room.leave(session.peer)
        if self.presence is not None:
            self.presence.count(self.name, len(self.sessions))
            for frame in effects.relay:
                self.presence.publish(self.name, frame)
        if self.phase is Phase.OPEN:
            self._relay(effects.relay, exclude=session.peer)
            if not self.sessions:
                self._on_idle(self)

    def close_all(self, code: int, reason: str) -> None:
        """Start closing every client's connection (they leave when they are gone)."""
        for peer in list(self.sessions):
            peer.close(code, reason)

    # -- the message path -----------------------------------------------------------

    def receive(self, session: Session, data: bytes) -> None:
        """Apply one message from ``session``: log, then answer and relay.

        Never waits: what must wait for durability is held (in order) while
        the next messages are read.

        Raises:
            CollabError: the message was refused; the caller closes the peer.
        """
        if self.phase is not Phase.OPEN:
            raise _gone(self.phase)
        self.metrics.bytes_in += len(data)
        if self._inbox is not None or self._heavy(data):  # in order, behind the heavy one
            self._queue((session, data))
            return
        start = time.perf_counter()
        try:
            effects = self.room.receive(session.peer, data, writable=session.writable)
        except DocumentTooLarge:
            self.metrics.refusals.labels("document_bytes").inc()
            raise
        if time.perf_counter() - start >= SLOW_SECONDS:
            log_slow(self.name, f"message (type {data[0]})", len(data), start)
        self._received(session, data, effects)

    def _received(self, session: Session, data: bytes, effects: Effects) -> None:
        if effects.foreign:
            self.metrics.awareness_foreign += effects.foreign
        if self.presence is not None and effects.relay and data[0] == _AWARENESS:
            for frame in effects.relay:  # presence is never held: it is not stored
                self.presence.publish(self.name, frame)
        cursor = None
        if effects.update is not None:
            self.metrics.updates_in += 1
            cursor = self.append(effects.update, session.author)
            if not self.exists:
                self._created(session.permission.user, session.remote, session.id)
        self._carry_out(session.peer, cursor, effects)
        if effects.refused is not None:  # what went in is stored and relayed; the rest not
            raise effects.refused

    def _heavy(self, data: bytes) -> bool:
        """Would ``data`` take the loop long: a large update, or a sync step 1 of a large room?"""
        crdt = self.crdt
        if crdt is None or not data or data[0] != _SYNC:
            return False
        return len(data) >= crdt.heavy_bytes or (
            len(data) > 1 and data[1] == _STEP1 and self.room.budget.estimate >= crdt.heavy_bytes
        )

    def _queue(self, item: tuple[Session, bytes] | Sequence[Record] | _Job) -> None:
        if self._inbox is None:
            self._inbox = deque()
            self._busy = asyncio.get_running_loop().create_task(self._work_inbox())
        self._inbox.append(item)

    async def _work_inbox(self) -> None:
        """Take queued messages in order: heavy ones in the CRDT thread, the rest here."""
        try:
            while self._inbox and self.phase is Phase.OPEN:
                item = self._inbox.popleft()
                if isinstance(item, _Job):
                    await self._run_job(item)
                    continue
                if not isinstance(item, tuple):
                    self._remote(item)
                    continue
                session, data = item
                if session.peer not in self.sessions and not _is_edit(data):
                    continue  # gone meanwhile: nothing to answer (but what it wrote counts)
                try:
                    effects = await self._receive_heavy(session, data)
                    self._received(session, data, effects)
                except CollabError as exc:
                    log.info("%r refused for %r: %s", session, self.name, exc.reason)
                    session.peer.close(exc.close_code, exc.reason)
                except Exception:
                    log.exception("error handling a message for %r", self.name)
                    session.peer.close(1011, "internal error")
        finally:
            for item in self._inbox or ():
                if isinstance(item, _Job) and not item.done.done():  # failed or deleted meanwhile
                    item.done.set_exception(_gone(self.phase))
            self._inbox = None
            self._busy = None
            if not self.sessions and self.phase is Phase.OPEN:
                self._on_idle(self)  # everyone left while it was busy: it may unload now

    async def _exclusive(self, what: str, size: int, fn: Callable[[], _T]) -> _T:
        """``fn()`` with the room to itself: in the CRDT thread if ``size`` is heavy, while
        this document's messages and records wait behind it; inline otherwise."""
        crdt = self.crdt
        if crdt is None or size < crdt.heavy_bytes:
            return fn()
        if self.phase is not Phase.OPEN:  # unloading: no client, no record reaches the room
            return await crdt.run(self.name, what, size, fn)
        job = _Job(what, size, fn, asyncio.get_running_loop().create_future())
        self._queue(job)
        result: _T = await job.done
        return result

    async def _run_job(self, job: _Job) -> None:
        assert self.crdt is not None
        try:
            job.done.set_result(await self.crdt.run(self.name, job.what, job.size, job.fn))
        except Exception as exc:
            job.done.set_exception(exc)

    async def _receive_heavy(self, session: Session, data: bytes) -> Effects:
        assert self.crdt is not None
        fresh = self._fresh_step2(data)
        if fresh is not None:
            return Effects(reply=fresh)
        peer, writable = session.peer, session.writable
        size = len(data) if len(data) >= self.crdt.heavy_bytes else self.room.budget.estimate
        try:
            return await self.crdt.run(
                self.name, "message", size, lambda: self.room.receive(peer, data, writable=writable)
            )
        except DocumentTooLarge:
            self.metrics.refusals.labels("document_bytes").inc()
            raise

    def _fresh_step2(self, data: bytes) -> list[bytes] | None:
        """A fresh client's step 2 without encoding the document: the last snapshot's
        state (its step 2 frame kept) then each update logged since, or None.

        For a large document that changed since its last fresh client (else the
        room's kept frame is quicker), with few updates since, and no snapshot
        being written (while one is, the two do not add up to the document).
        """
        base, since = self._base, self._since
        if (
            base is None
            or since is None
            or data != _FRESH_STEP1
            or self.lock.locked()
            or self.room.fresh_step2_kept
            or len(since) > FRESH_UPDATES
        ):
            return None
        if self._base_step2 is None or self._base_step2[0] is not base:
            self._base_step2 = (base, protocol.encode(SyncStep2(base)))
        return [self._base_step2[1], *(protocol.encode(Update(update)) for update in since)]

    def _carry_out(self, sender: Peer | None, cursor: Cursor | None, effects: Effects) -> None:
        """Deliver ``effects`` now, or hold them until ``cursor`` is durable."""
        if self._held or (cursor is not None and not self.log.durable(cursor)):
            self._held.append(_Held(cursor, sender, effects))
            if self._flusher is None:
                self._flusher = asyncio.get_running_loop().create_task(self._flush_held())
            return
        self._deliver(sender, effects)

    def _deliver(self, sender: Peer | None, effects: Effects) -> None:
        if sender is not None:
            for frame in effects.reply:
                sender.send(frame)
        self._relay(effects.relay, exclude=sender)

    async def _flush_held(self) -> None:
        """Deliver held effects in order, each once its record is durable."""
        try:
            while self._held:
                held = self._held[0]
                if held.cursor is not None and not self.log.durable(held.cursor):
                    await self.log.flush(held.cursor)
                self._held.popleft()
                if self.phase is Phase.OPEN:
                    self._deliver(held.sender, held.effects)
        except CollabError as exc:
            log.error("updates of %r not stored (%s): not relayed", self.name, exc.reason)
            self._fail(exc)
        except Exception:
            log.exception("could not make updates of %r durable; they are not relayed", self.name)
            self._fail()
        finally:
            self._flusher = None

    async def flushed(self) -> None:
        """Return once every held message was delivered (or dropped on failure)."""
        while self._flusher is not None:
            await asyncio.shield(self._flusher)

    def _relay(self, frames: list[bytes], exclude: Peer | None) -> None:
        """Send ``frames`` to every peer but ``exclude`` when this loop iteration ends."""
        if not frames:
            return
        outgoing = self._outgoing
        if outgoing and outgoing[-1][0] is exclude:
            outgoing[-1][1].extend(frames)
            return
        outgoing.append((exclude, list(frames)))
        if len(outgoing) == 1:
            asyncio.get_running_loop().call_soon(self._fan_out)

    def _fan_out(self) -> None:
        batch, self._outgoing = self._outgoing, []
        metrics = self.metrics
        for sender, frames in batch:
            if len(frames) > 1:
                metrics.merged += len(frames)
                frames = coalesce(frames)
            receivers = [peer for peer in self.sessions if peer is not sender]
            for frame in frames:
                for peer in receivers:
                    peer.send(frame)
                metrics.bytes_out += len(frame) * len(receivers)
            metrics.updates_out += len(receivers) * len(frames)

    def relay_local(self, frames: list[bytes]) -> None:
        """Send ``frames`` (from another process, durable already) to every local client."""
        if self.phase is Phase.OPEN:
            self._relay(frames, exclude=None)

    def remote(self, records: Sequence[Record]) -> None:
        """Records another process appended (already durable): apply and relay, never log.

        Behind a record of this process still being held? Then the relay waits
        in line behind it, so nobody sees an update before one it builds on.
        """
        if self.phase is not Phase.OPEN:
            return
        if self._inbox is not None:
            self._queue(records)  # in order, behind the heavy message being applied
            return
        self._remote(records)

    def _remote(self, records: Sequence[Record]) -> None:
        self.exists = True  # another process wrote it
        for record in records:
            try:
                effects = self.room.apply_remote(record.update)
            except CollabError as exc:
                log.error("a record of %r from the store is invalid: %s", self.name, exc.reason)
                continue
            if self._since is not None:
                self._since.append(record.update)  # (in the store: the next snapshot has it)
            if effects.update is not None and effects.update != record.update:
                # It also integrated local structs waiting for it: those are news
                # to the store too, so log what changed (rare; harmless twice).
                self._carry_out(None, self.append(effects.update, record.author), effects)
            elif self._held:
                self._carry_out(None, None, effects)
            else:
                self._relay(effects.relay, exclude=None)

    def deleted_elsewhere(self) -> None:
        """Another process deleted the document: close every client (4404), drop it."""
        if self.phase is not Phase.OPEN:
            return
        self._outgoing.clear()
        self._held.clear()
        self.close_all(DocumentDeleted.close_code, "document deleted")
        self._on_deleted(self)

    def resync(self, loaded: Loaded) -> None:
        """The store may have lost writes: take what it has, give back what it lacks."""
        if self.phase is not Phase.OPEN:
            return
        if self._busy is not None:
            asyncio.get_running_loop().create_task(self._resync_later(loaded))
            return
        self._base = self._since = None  # the next snapshot is encoded here, from the room
        missing = self.room.missing(loaded.updates)
        for update in loaded.updates:
            try:
                self.relay_local(self.room.apply_remote(update).relay)
            except CollabError as exc:
                log.error("a record of %r from the store is invalid: %s", self.name, exc.reason)
        if missing is not None:
            log.warning("the store lacked updates of %r: writing them back", self.name)
            self.append(missing, "resync")

    async def _resync_later(self, loaded: Loaded) -> None:
        await self.quiet()
        self.resync(loaded)

    # -- the log ------------------------------------------------------------------

    def append(self, update: bytes, author: str) -> Cursor:
        """Log ``update``; compact when the log has grown past ``compact_bytes``.

        If the log cannot take it, the document fails (see ``_fail``).

        Raises:
            DocumentUnavailable: the update could not be logged.
        """
        now = self.clock()
        try:
            cursor = self.log.append(Record(update, now, author))
        except CollabError as exc:
            log.error("cannot append to the log of %r (%s): evicting it", self.name, exc.reason)
            self._fail(exc)
            raise
        except OSError as exc:
            log.error("cannot append to the log of %r (%s): evicting it unsaved", self.name, exc)
            self._fail()
            raise DocumentUnavailable("could not persist the update") from exc
        self.cursor = cursor
        self.unsnapshotted += 1
        if self._since is not None:
            self._since.append(update)
        if self.extensions.wants("on_change"):
            self.extensions.after("on_change", ChangeEvent(self.name, update, author, now))
        if self.compacting is None and policy.should_compact(
            self.log.size, self.config.compact_bytes, self.snapshot_bytes
        ):
            self.compacting = asyncio.get_running_loop().create_task(self.compact())
        return cursor

    def _created(self, sub: str | None, remote: str | None, connection: str | None) -> None:
        """A document that did not exist got its first content: audit who made it."""
        self.exists = True
        self.extensions.audit("create", self.name, sub, remote, connection)

    def _fail(self, error: CollabError | None = None) -> None:
        """An update is in memory but not durable: nobody may be served it.

        Every client is closed (1011, or ``error``'s code: 1013 when Redis
        is unreachable, 4404 when the document was deleted meanwhile) and
        nothing more is relayed; the
        registry drops the document, which loads again from the store, and
        reconnecting clients send what the server did not keep.
        """
        if self.phase is not Phase.OPEN:
            return
        self.phase = Phase.FAILED
        self._outgoing.clear()
        self._held.clear()
        error = error or DocumentUnavailable("could not persist the update")
        self.metrics.errors.labels(str(error.close_code)).inc(len(self.sessions))
        self.close_all(error.close_code, error.reason)
        self._on_failed(self)

    async def compact(self, force: bool = False) -> None:
        """Write the state as the snapshot, if anything was logged since the last."""
        try:
            async with self.lock:
                if self.phase not in (Phase.OPEN, Phase.UNLOADING):
                    return  # deleted or failed meanwhile
                if self.unsnapshotted <= 0 and not force:
                    return
                await self.quiet()
                state, upto, count, since = await self._snapshot_state()
                start = time.perf_counter()
                try:
                    await self.log.compact(state, upto)
                except BaseException:
                    if since is not None and self._since is not None:
                        self._since[:0] = since  # the old snapshot stays: so do its updates
                    raise
                finally:
                    self.metrics.persist_seconds.labels("snapshot").observe(
                        time.perf_counter() - start
                    )
                self.unsnapshotted -= count
                self.snapshot_bytes = len(state)
                self._base = state if self._since is not None else None
                if self.extensions.wants("on_stored"):
                    self.extensions.after("on_stored", StoredEvent(self.name, self.clock()))
        finally:
            if self.compacting is asyncio.current_task():
                self.compacting = None

    def _mergeable(self, size: int) -> bool:
        """Keep what the next snapshot of a document of ``size`` bytes is merged from?
        A large one in one process: in cluster mode other processes write too."""
        return self.presence is None and self.crdt is not None and size >= offload.MERGE_BYTES

    async def _snapshot_state(self) -> tuple[bytes, Cursor, int, list[bytes] | None]:
        """The state to write as the snapshot, the cursor and record count it covers,
        and the updates it took from ``_since`` (given back if writing it fails).

        A large document's is merged in another process from its last snapshot and
        the updates logged since, checked against the room's state vector: encoding
        it here would hold the GIL, so every room, for 0.1 s or more. Otherwise the
        room encodes it (in the CRDT thread when large).
        """
        if self._base is not None and self._since is not None and self.crdt is not None:
            base, since = self._base, self._since  # taken here, with no await since quiet()
            self._since = []
            upto, count, vector = self.cursor, self.unsnapshotted, self.room.doc.get_state()
            try:
                state, merged = await self.crdt.merge(self.name, [base, *since])
            except Exception:
                log.exception("merging the snapshot of %r failed; encoding it here", self.name)
                merged = b""
            except BaseException:  # cancelled: the updates stay for the next snapshot
                self._since[:0] = since
                raise
            if merged and decode_state_vector(merged) == decode_state_vector(vector):
                return state, upto, count, since
            if merged:
                log.error("the merged snapshot of %r lacks updates; encoding it here", self.name)
            self._since[:0] = since
            await self.quiet()

        def encode() -> tuple[bytes, Cursor, int, list[bytes] | None]:
            state = self.room.doc.get_update()
            since, self._since = self._since, [] if self._mergeable(len(state)) else None
            return state, self.cursor, self.unsnapshotted, since

        return await self._exclusive("snapshot encoding", self.room.budget.estimate, encode)

    # -- the document as a whole ----------------------------------------------------

    async def replace_text(
        self, text: str, author: str, sub: str | None = None, remote: str | None = None
    ) -> None:
        """Edit ``content`` into ``text`` as a live edit; return once it is durable.

        ``sub`` and ``remote`` name who did it, should it create the document.
        """
        await self._local(lambda: self.room.replace_text(text), author, sub, remote)

    async def apply_update(
        self, update: bytes, author: str, sub: str | None = None, remote: str | None = None
    ) -> None:
        """Apply an update the server made (a restore, a ``PUT`` built on a fork) as a
        live edit: logged, then relayed to everyone; return once it is durable.

        Raises:
            DocumentTooLarge: it would grow the document past its limit.
            BadUpdate: the CRDT refused it.
        """
        await self._local(lambda: self.room.apply_local(update), author, sub, remote)

    async def _local(
        self, edit: Callable[[], Effects], author: str, sub: str | None, remote: str | None
    ) -> None:
        """Make ``edit`` on the room once it is quiet, log it, relay it; wait until durable."""
        await self.quiet()
        if self.phase is not Phase.OPEN:
            raise _gone(self.phase)
        try:
            effects = edit()
        except DocumentTooLarge:
            self.metrics.refusals.labels("document_bytes").inc()
            raise
        cursor = self.append(effects.update, author) if effects.update is not None else None
        if cursor is not None and not self.exists:
            self._created(sub, remote, None)
        self._carry_out(None, cursor, effects)
        if cursor is not None and not self.log.durable(cursor):
            await self.log.flush(cursor)


def _is_edit(data: bytes) -> bool:
    """Is ``data`` a sync step 2 or an update (content, whoever is still there to hear)?"""
    return len(data) > 1 and data[0] == _SYNC and data[1] in _EDITS


def _gone(phase: Phase) -> Exception:
    if phase is Phase.FAILED:
        return DocumentUnavailable("could not persist the update")
    if phase is Phase.UNLOADING:
        return ShuttingDown("document is unloading")
    return DocumentDeleted("document was deleted")
