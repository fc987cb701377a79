"""The orchestrator: loads rooms once, logs before relaying, compacts, unloads.

Rule: asyncio only, no tornado. A ``Hub`` owns every loaded ``Room`` of one
store. It carries out a room's ``Effects`` in the order data safety needs: the
update is written to the document's log (through to the OS, and with
``fsync="always"`` fsynced by a group commit) before any frame carrying it is
sent to anyone. Slow disk work (fsync, snapshots) runs in a thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..core import policy
from ..core.config import Config
from ..core.errors import (
    DocumentDeleted,
    DocumentUnavailable,
    Overloaded,
    PolicyViolation,
    ShuttingDown,
)
from ..core.limits import coalesce
from ..core.room import Effects, Room
from ..storage import DocInfo, FileStore, Log, MemoryStore, Store
from .metrics import Metrics

__all__ = ["Connection", "DocSummary", "Hub"]

log = logging.getLogger("collab.hub")


class Connection(Protocol):
    """What the hub needs of a client connection."""

    def send(self, data: bytes) -> None:
        """Queue ``data`` as one binary frame; never blocks, never raises."""

    def close(self, code: int, reason: str) -> None: ...


@dataclass(frozen=True)
class DocSummary:
    name: str
    size: int
    modified: float
    clients: int


# Group commits of one log start at most this often (seconds). An fsync takes
# ~0.2 ms of wall time and ~0.07 ms of CPU here; back to back under load they
# would eat half a core, while a 2 ms window lets each cover more updates.
GROUP_COMMIT_WINDOW = 0.002


class _Durability:
    """Group commit for one log: one fsync covers every write before it."""

    def __init__(self, log_: Log, on_sync: Callable[[float], None]) -> None:
        self.log = log_
        self.written = 0
        self.synced = 0
        self._inflight: asyncio.Future[None] | None = None
        self._on_sync = on_sync
        self._started = -GROUP_COMMIT_WINDOW  # loop time the last fsync began

    @property
    def dirty(self) -> bool:
        return self.synced < self.written

    async def wait(self) -> None:
        """Return once everything written so far is fsynced."""
        target = self.written
        while self.synced < target:
            if self._inflight is None:
                self._inflight = asyncio.ensure_future(self._sync())
            await asyncio.shield(self._inflight)

    async def retire(self) -> None:
        """The log is covered by a durable snapshot: release every waiter, stop syncing."""
        if self._inflight is not None:
            await asyncio.shield(self._inflight)
        self.synced = self.written

    async def _sync(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            wait = self._started + GROUP_COMMIT_WINDOW - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)  # updates arriving meanwhile join this commit
            target = self.written
            self._started = loop.time()
            start = time.perf_counter()
            await loop.run_in_executor(None, self.log.sync)
            self.synced = max(self.synced, target)
        finally:
            self._inflight = None
        self._on_sync(time.perf_counter() - start)


@dataclass(eq=False)
class _Slot:
    """A loaded (or loading) document."""

    name: str
    room: Room
    ready: asyncio.Future[None]
    log: Log | None = None
    durability: _Durability | None = None
    seq: int = 0
    compacting: asyncio.Future[None] | None = None
    unloading: asyncio.Future[None] | None = None
    idle_timer: asyncio.TimerHandle | None = None
    since_snapshot: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # fsync="always": what waits for the group commit, in arrival order
    held: deque[_Held] = field(default_factory=deque)
    flushing: asyncio.Future[None] | None = None
    failed: bool = False  # an update could not be logged: being evicted unsaved
    # relays waiting for the end of this event-loop iteration: (sender, frames) runs
    outgoing: list[tuple[Connection | None, list[bytes]]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Held:
    durability: _Durability
    target: int
    sender: Connection
    effects: Effects


class Hub:
    """All loaded documents of one store, and the connections editing them."""

    def __init__(
        self,
        config: Config | None = None,
        store: Store | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config or Config(data_dir=None)
        self._owned_store: FileStore | None = None
        if store is None:
            data_dir = self.config.data_dir
            if data_dir:
                store = self._owned_store = FileStore(data_dir)
                self._owned_store.acquire()
            else:
                store = MemoryStore()
        self.store = store
        self.metrics = metrics or Metrics()
        self.metrics.documents = lambda: len(self.rooms)
        self.rooms: dict[str, _Slot] = {}
        self._syncer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self._closing = False
        self.clock: Callable[[], float] = time.time

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Future[None]:
        """Run ``work`` in the background, keeping a reference until it is done."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- opening and closing documents ----------------------------------------

    async def _open(self, name: str) -> _Slot:
        """Return the loaded document, loading it once however many ask."""
        if self._closing:
            raise ShuttingDown("server is shutting down")
        while True:
            slot = self.rooms.get(name)
            if slot is None:
                if await self._at_capacity():
                    cap = self.config.max_documents
                    raise Overloaded(f"too many documents open (limit {cap})")
                if name in self.rooms:
                    continue  # loaded by someone else while idle ones were unloaded
                return await self._load(name)
            if slot.unloading is not None:
                await asyncio.shield(slot.unloading)
                continue
            await asyncio.shield(slot.ready)
            return slot

    async def _at_capacity(self) -> bool:
        """True if ``max_documents`` are loaded even after unloading idle ones."""
        cap = self.config.max_documents
        if cap <= 0 or len(self.rooms) < cap:
            return False
        idle = [
            slot
            for slot in self.rooms.values()
            if not slot.room.peers and slot.unloading is None and slot.ready.done()
        ]
        for slot in idle[: len(self.rooms) - cap + 1]:
            await self._unload(slot)
        return len(self.rooms) >= cap

    async def _load(self, name: str) -> _Slot:
        loop = asyncio.get_running_loop()
        slot = _Slot(name, Room(name), loop.create_future())
        self.rooms[name] = slot
        try:
            stored = await loop.run_in_executor(None, self.store.load, name)
            slot.room.restore(stored.updates)
            slot.seq = stored.seq
            slot.since_snapshot = stored.records
            slot.log = self.store.open_log(name, slot.seq)
            slot.durability = _Durability(slot.log, self._observe_fsync)
        except BaseException as exc:
            del self.rooms[name]
            slot.room.close()
            slot.ready.set_exception(exc)
            slot.ready.exception()  # retrieved: the awaiting callers get it
            raise
        slot.ready.set_result(None)
        self._start_syncer()
        return slot

    def _schedule_unload(self, slot: _Slot) -> None:
        if slot.idle_timer is not None:
            slot.idle_timer.cancel()
        loop = asyncio.get_running_loop()
        slot.idle_timer = loop.call_later(
            self.config.idle_timeout, lambda: self._spawn(self._unload(slot))
        )

    async def _unload(self, slot: _Slot) -> None:
        if slot.room.peers or slot.unloading is not None or self.rooms.get(slot.name) is not slot:
            return
        slot.unloading = asyncio.get_running_loop().create_future()
        try:
            await self._compact(slot, force=False)
            await self._flush(slot)
        except Exception:
            log.exception("could not flush %r; keeping it in memory", slot.name)
            slot.unloading.set_result(None)
            slot.unloading = None
            self._schedule_unload(slot)
            return
        self._drop(slot)
        slot.unloading.set_result(None)

    def _drop(self, slot: _Slot) -> None:
        if self.rooms.get(slot.name) is slot:
            del self.rooms[slot.name]
        if slot.idle_timer is not None:
            slot.idle_timer.cancel()
        if slot.log is not None:
            slot.log.close()
        slot.room.close()
        log.debug("unloaded %r", slot.name)

    # -- connections ------------------------------------------------------------

    async def join(self, name: str, conn: Connection) -> Room:
        """Open ``name`` for ``conn`` and send it sync step 1 and awareness.

        Raises:
            DocumentUnavailable: the stored document cannot be read.
            Overloaded: ``max_documents`` are loaded and none is idle.
            PolicyViolation: the document has ``max_connections_per_doc``.
            ShuttingDown: the hub is closing.
        """
        slot = await self._open(name)
        cap = self.config.max_connections_per_doc
        if 0 < cap <= len(slot.room.peers):
            raise PolicyViolation(f"too many connections to this document (limit {cap})")
        if slot.idle_timer is not None:
            slot.idle_timer.cancel()
            slot.idle_timer = None
        for frame in slot.room.join(conn):
            conn.send(frame)
        self.metrics.connections += 1
        return slot.room

    def receive(self, conn: Connection, room: Room, data: bytes, writable: bool) -> None:
        """Apply one frame from ``conn``: log, then answer and relay.

        Never waits: with ``fsync="always"`` the answer and the relay are held
        until the group commit covering the update is done, while the next
        frames are already being read (so one fsync covers them all).

        Raises:
            CollabError: the frame was refused; the caller closes ``conn``.
        """
        slot = self.rooms.get(room.name)
        if slot is None or slot.room is not room:
            raise DocumentDeleted("document was deleted")
        if slot.failed:
            raise DocumentUnavailable("could not persist the update")
        self.metrics.bytes_in += len(data)
        effects = room.receive(conn, data, writable=writable)
        if effects.update is not None:
            self.metrics.updates_in += 1
            self._append_or_evict(slot, effects.update)
        durability = slot.durability
        always = self.config.fsync == "always" and durability is not None
        if always and (durability.dirty or slot.held):  # type: ignore[union-attr]
            slot.held.append(_Held(durability, durability.written, conn, effects))
            if slot.flushing is None:
                slot.flushing = self._spawn(self._flush_held(slot))
            return
        self._deliver(slot, conn, effects)

    def _deliver(self, slot: _Slot, conn: Connection, effects: Effects) -> None:
        for frame in effects.reply:
            conn.send(frame)
        self._relay(slot, effects.relay, exclude=conn)

    async def _flush_held(self, slot: _Slot) -> None:
        """Deliver held effects, in order, as group commits make them durable."""
        try:
            while slot.held:
                first = slot.held[0]
                await first.durability.wait()
                while slot.held and slot.held[0].durability.synced >= slot.held[0].target:
                    held = slot.held.popleft()
                    self._deliver(slot, held.sender, held.effects)
        except Exception:
            log.exception("fsync of %r failed; held updates are not relayed", slot.name)
            senders = {held.sender for held in slot.held}
            slot.held.clear()
            for sender in senders:
                sender.close(1011, "could not persist the update")
        finally:
            slot.flushing = None

    def leave(self, conn: Connection, room: Room) -> None:
        """Forget ``conn``; relay the removal of its awareness states."""
        slot = self.rooms.get(room.name)
        if conn not in room.peers:
            return
        effects = room.leave(conn)
        self.metrics.connections -= 1
        if slot is None or slot.room is not room:
            return
        self._relay(slot, effects.relay, exclude=conn)
        if not room.peers:
            self._schedule_unload(slot)

    def _relay(self, slot: _Slot, frames: list[bytes], exclude: Connection | None) -> None:
        """Send ``frames`` to every peer but ``exclude`` once this loop iteration ends.

        What arrives together goes out together: a run of frames from one
        sender is merged (``coalesce``: one update, the newest awareness per
        client) and framed once for all peers. Under load a burst of small
        updates then costs one write per peer, not one per update.
        """
        if not frames:
            return
        outgoing = slot.outgoing
        if outgoing and outgoing[-1][0] is exclude:
            outgoing[-1][1].extend(frames)
            return
        outgoing.append((exclude, list(frames)))
        if len(outgoing) == 1:
            asyncio.get_running_loop().call_soon(self._fan_out, slot)

    def _fan_out(self, slot: _Slot) -> None:
        batch, slot.outgoing = slot.outgoing, []
        peers = slot.room.peers
        for sender, frames in batch:
            if len(frames) > 1:
                self.metrics.merged += len(frames)
                frames = coalesce(frames)
            receivers = [peer for peer in peers if peer is not sender]
            for frame in frames:
                for peer in receivers:
                    peer.send(frame)
                self.metrics.bytes_out += len(frame) * len(receivers)
            self.metrics.updates_out += len(receivers) * len(frames)

    # -- persistence ------------------------------------------------------------

    def _append(self, slot: _Slot, update: bytes) -> None:
        """Write ``update`` to the log (through to the OS); compact when it is big."""
        assert slot.log is not None and slot.durability is not None
        slot.log.append(update)
        slot.durability.written += 1
        slot.since_snapshot += 1
        compact = policy.should_compact(slot.log.size, self.config.compact_bytes)
        if compact and slot.compacting is None:
            slot.compacting = self._spawn(self._compact(slot, force=False))

    def _append_or_evict(self, slot: _Slot, update: bytes) -> None:
        """``_append``; if the log cannot take the update, evict the document.

        The update is already in memory but not on disk, so the room must not
        serve it to anyone: every connection is closed (1011) and the document
        is dropped unsaved. The next connection loads it from disk again, and
        a reconnecting client sends what the server did not keep.

        Raises:
            DocumentUnavailable: the update could not be written.
        """
        try:
            self._append(slot, update)
        except OSError as exc:
            log.error("cannot append to the log of %r (%s): evicting it unsaved", slot.name, exc)
            slot.failed = True
            for peer in list(slot.room.peers):
                peer.close(DocumentUnavailable.close_code, "could not persist the update")
            slot.outgoing.clear()
            if slot.unloading is None:  # joins wait for it, then load from disk
                slot.unloading = asyncio.get_running_loop().create_future()
                self._spawn(self._evict(slot))
            raise DocumentUnavailable("could not persist the update") from exc

    async def _evict(self, slot: _Slot) -> None:
        """Drop a failed document once a snapshot being written (without the update) is done."""
        async with slot.lock:
            self._drop(slot)
        assert slot.unloading is not None
        slot.unloading.set_result(None)

    def _observe_fsync(self, seconds: float) -> None:
        self.metrics.persist_seconds.labels("fsync").observe(seconds)

    async def _flush(self, slot: _Slot) -> None:
        if slot.durability is not None and self.config.fsync != "never":
            await slot.durability.wait()

    async def _compact(self, slot: _Slot, force: bool) -> None:
        """Write the state as a snapshot and start a new log."""
        try:
            async with slot.lock:
                if self.rooms.get(slot.name) is not slot or slot.failed:
                    return  # dropped meanwhile (deleted), or being evicted unsaved
                if slot.since_snapshot <= 0 and not force:
                    return
                await self._write_snapshot(slot)
        finally:
            slot.compacting = None

    async def _write_snapshot(self, slot: _Slot) -> None:
        assert slot.log is not None and slot.durability is not None
        loop = asyncio.get_running_loop()
        state = slot.room.doc.get_update()
        old_log, old = slot.log, slot.durability
        slot.seq += 1
        slot.log = self.store.open_log(slot.name, slot.seq)
        slot.durability = _Durability(slot.log, self._observe_fsync)
        slot.since_snapshot = 0
        start = time.perf_counter()
        try:
            await loop.run_in_executor(None, self.store.save_snapshot, slot.name, state, slot.seq)
        except Exception:
            slot.since_snapshot = 1  # both logs stay on disk and replay; try again later
            await old.wait()  # the old log still is the only durable copy of its updates
            raise
        finally:
            self.metrics.persist_seconds.labels("snapshot").observe(time.perf_counter() - start)
            await old.retire()
            old_log.close()

    def _start_syncer(self) -> None:
        """With ``fsync="interval"``, fsync every dirty log once per interval."""
        if self.config.fsync == "interval" and self._syncer is None and not self._closing:
            loop = asyncio.get_running_loop()
            self._syncer = loop.call_later(self.config.fsync_interval, self._sync_dirty)

    def _sync_dirty(self) -> None:
        self._syncer = None
        for slot in list(self.rooms.values()):
            if slot.durability is not None and slot.durability.dirty:
                self._spawn(self._sync_logged(slot.durability, slot.name))
        if self.rooms:
            self._start_syncer()

    @staticmethod
    async def _sync_logged(durability: _Durability, name: str) -> None:
        try:
            await durability.wait()
        except Exception:
            log.exception("fsync of %r failed", name)

    # -- documents as a whole (HTTP API) ----------------------------------------

    async def get_text(self, name: str) -> str | None:
        """Return the text of ``name``, or None if no such document exists."""
        if name not in self.rooms and await self._info(name) is None:
            return None
        slot = await self._open(name)
        self._release_if_idle(slot)
        return slot.room.text

    async def set_text(self, name: str, text: str) -> None:
        """Replace the text of ``name`` (created if needed) as a live CRDT edit."""
        slot = await self._open(name)
        effects = slot.room.replace_text(text)
        if effects.update is not None:
            self._append_or_evict(slot, effects.update)
            if self.config.fsync == "always":
                await self._flush(slot)
        self._relay(slot, effects.relay, exclude=None)
        self._release_if_idle(slot)

    async def delete(self, name: str) -> bool:
        """Delete ``name`` everywhere; its connections are closed with 4404."""
        slot = self.rooms.get(name)
        loaded = slot is not None
        if slot is not None:
            slot = await self._open(name)
            async with slot.lock:
                for peer in list(slot.room.peers):
                    peer.close(DocumentDeleted.close_code, "document deleted")  # type: ignore[attr-defined]
                self._drop(slot)
        existed = await asyncio.get_running_loop().run_in_executor(None, self.store.delete, name)
        return existed or loaded

    async def list(self) -> list[DocSummary]:
        infos = {
            i.name: i
            for i in await asyncio.get_running_loop().run_in_executor(None, self.store.list)
        }
        for name in self.rooms:
            infos.setdefault(name, DocInfo(name, 0, time.time()))
        return [
            DocSummary(i.name, i.size, i.modified, self.clients(i.name))
            for i in sorted(infos.values(), key=lambda i: i.name)
        ]

    def clients(self, name: str) -> int:
        slot = self.rooms.get(name)
        return len(slot.room.peers) if slot is not None else 0

    async def _info(self, name: str) -> DocInfo | None:
        return await asyncio.get_running_loop().run_in_executor(None, self.store.info, name)

    def _release_if_idle(self, slot: _Slot) -> None:
        if not slot.room.peers and slot.unloading is None:
            self._schedule_unload(slot)

    # -- shutdown ---------------------------------------------------------------

    async def close(self) -> None:
        """Close every connection (1001) and flush every document to disk."""
        self._closing = True
        if self._syncer is not None:
            self._syncer.cancel()
        for slot in list(self.rooms.values()):
            for peer in list(slot.room.peers):
                peer.close(ShuttingDown.close_code, "server shutting down")  # type: ignore[attr-defined]
        for slot in list(self.rooms.values()):
            try:
                await asyncio.shield(slot.ready)
                await self._compact(slot, force=False)
                if slot.durability is not None:
                    await slot.durability.wait()
            except Exception:
                log.exception("could not flush %r at shutdown", slot.name)
            self._drop(slot)
        if self._owned_store is not None:
            self._owned_store.release()
