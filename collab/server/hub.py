"""The server's front door: documents, sessions, extensions and shutdown behind one object.

Rule: asyncio only, no tornado. A ``Hub`` owns one store and every document
loaded from it (``Registry``); ``join`` lets a peer into a document and
returns its ``Session``; the HTTP API's whole-document operations are here
too. What happens to a message is the ``Document``'s business: logged before
anything carrying it is sent to anyone.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable
from dataclasses import dataclass

from ..core.auth import Permission
from ..core.config import Config
from ..core.errors import NotFound, PolicyViolation, StoreUnavailable
from ..core.history import Author, VersionMeta, restore_update
from ..core.limits import Counter
from ..storage.base import DocInfo, Store
from ..storage.file import FileStore
from ..storage.history import HistoryStore, MemoryHistory
from ..storage.history_file import FileHistory
from ..storage.memory import MemoryStore
from .audit import AuditLog
from .document import Document
from .extensions import ConnectEvent, DeleteEvent, Extension, Extensions
from .history import History, Restored
from .lag import LagMonitor
from .metrics import Metrics
from .offload import Offload
from .quotas import Quotas
from .registry import Registry
from .session import Peer, Session
from .sockets import Gateway, SocketLimits, Sockets, deflater

__all__ = ["DocSummary", "Hub"]


@dataclass(frozen=True)
class DocSummary:
    name: str
    size: int
    modified: float
    clients: int


class Hub:
    """All loaded documents of one store, and the connections editing them.

    Args:
        config: the settings (default: in memory, default limits).
        store: where documents live; default a ``FileStore`` on
            ``config.data_dir`` (locked against a second server), or memory.
        metrics: the counters to export (default: a registry of its own).
        extensions: hooks called in this order (see ``server.extensions``).
        history: where versions live (``config.history`` on); default files
            under the data directory's ``history/``, or memory.
    """

    def __init__(
        self,
        config: Config | None = None,
        store: Store | None = None,
        metrics: Metrics | None = None,
        extensions: Iterable[Extension] = (),
        history: HistoryStore | None = None,
    ) -> None:
        self.config = config = config or Config(data_dir=None)
        self.metrics = metrics or Metrics()
        self._owned_store: FileStore | None = None
        self._owned_shared: Store | None = None
        if store is None and config.redis_url:
            from ..storage.redis.store import RedisStore

            redis = store = self._owned_shared = RedisStore(
                config.redis_url,
                prefix=config.redis_prefix,
                timeout=config.redis_timeout,
                heartbeat_ttl=config.redis_heartbeat_ttl,
                retention=config.redis_retention,
                durability=config.redis_durability,
            )
            self.metrics.redis_up = lambda: int(
                redis.down_since is None and redis.run_id is not None
            )
            self.metrics.redis_appendfsync = lambda: (redis.settings or {}).get(
                "appendfsync", "unknown"
            )
        if store is None:
            if config.data_dir:
                store = self._owned_store = FileStore(
                    config.data_dir,
                    fsync=config.fsync,
                    fsync_interval=config.fsync_interval,
                    min_free_bytes=config.min_free_bytes,
                )
                self._owned_store.acquire()
            else:
                store = MemoryStore()
        if isinstance(store, FileStore):
            store.on_fsync = self.metrics.persist_seconds.labels("fsync").observe
        self.store: Store = store
        self.extensions = Extensions([AuditLog(), *extensions])  # the audit trail in the log
        self.clock = time.time
        self.registry = Registry(store, config, self.metrics, self.extensions, self._now)
        self.offload = Offload("collab-diff")  # diffs and fork edits, off the event loop
        self.lag = LagMonitor(self.metrics.loop_lag.observe)
        self.history: History | None = None
        if config.history and history is None and self._owned_shared is not None:
            from ..storage.redis.history import RedisHistory

            history = RedisHistory(redis)  # one history per document, shared by every process
        if config.history:
            if history is None:
                root = store.root if isinstance(store, FileStore) else None
                history = FileHistory(root) if root is not None else MemoryHistory()
            self.history = History(
                history, config, self.registry, self.extensions, self.offload, self._now
            )
            self.extensions.add(self.history)
            found = self.history
            self.metrics.sample(
                documents=lambda: len(self.registry.documents),
                history_versions=lambda: found.cuts,
                history_failures=lambda: found.failures,
                history_damaged=lambda: found.store.damaged,
            )
        self.sockets = Sockets(config.ping_interval or None, config.ping_timeout or None)
        self.quotas = Quotas(config, self.metrics)
        self.ips: Counter = self.quotas.connections  # per address and in all
        self.gateway = Gateway(
            join=self.join,
            join_now=self.join_now,
            limits=SocketLimits.of(config),
            sockets=self.sockets,
            clock=self._now,
            refused=self._refused,
        )
        self.metrics.sample(
            documents=lambda: len(self.registry.documents),
            store_faults=lambda: getattr(self.store, "faults", 0),
            awareness_states=lambda: sum(len(d.room.awareness.states) for d in self.registry),
            store_damaged=lambda: self.store.damaged,
            extension_errors=lambda: self.extensions.errors,
        )
        self._ids = itertools.count(1)

    def _now(self) -> float:
        return self.clock()

    async def start(self) -> None:
        """Connect the store if it needs it (Redis: checks its settings first).

        Optional: a store also starts on first use. ``collab serve`` calls it so
        that a misconfigured Redis stops the server before it listens.

        Raises:
            RedisMisconfigured: Redis cannot give the promised durability.
            StoreUnavailable: the store cannot be reached.
        """
        self.lag.start()
        self.registry.crdt.start()  # threads started now, not when the loop is busy
        deflater()
        start = getattr(self.store, "start", None)
        if start is not None:
            await start()

    def check_store(self) -> None:
        """Refuse new work while a shared store (Redis) is unreachable.

        Raises:
            StoreUnavailable: 503 before an upgrade, 1013 after.
        """
        if getattr(self.store, "down_since", None) is not None:  # only a shared store has it
            raise StoreUnavailable("the store is unreachable: try again later", retry_after=1)

    def _refused(self, code: int) -> None:
        self.metrics.errors.labels(str(code)).inc()

    def use(self, *extensions: Extension) -> None:
        """Add ``extensions`` after the ones already in use."""
        self.extensions.add(*extensions)

    # -- sessions ---------------------------------------------------------------

    async def join(
        self,
        name: str,
        peer: Peer,
        permission: Permission | None = None,
        id: str | None = None,
        remote: str | None = None,
    ) -> Session:
        """Open ``name`` for ``peer`` (at address ``remote``): it is sent sync step 1
        and the present awareness.

        Call ``receive`` on the returned session with each message and
        ``leave`` once when the peer is gone.

        Raises:
            DocumentUnavailable: the stored document cannot be read.
            Overloaded: ``max_documents`` are loaded and none is idle.
            PolicyViolation: the document has ``max_connections_per_doc``.
            ShuttingDown: the hub is closing.
            CollabError: an extension refused (``on_connect``, ``on_load``).
        """
        permission = permission or Permission()
        id = id or f"c{next(self._ids)}"
        self.check_store()
        if self.extensions.wants("on_connect"):
            await self.extensions.before("on_connect", ConnectEvent(name, id, permission))
        doc = await self.registry.open(name)
        self._check_cap(doc)
        await doc.quiet()  # its state vector is read now
        return self._enter(doc, peer, permission, id, remote)

    def join_now(
        self,
        name: str,
        peer: Peer,
        permission: Permission | None = None,
        id: str | None = None,
        remote: str | None = None,
    ) -> Session | None:
        """``join`` without waiting, if nothing needs waiting for: ``name`` is open,
        no heavy message is being applied to it, and no extension has ``on_connect``.
        None: call ``join``.

        Raises:
            CollabError: as ``join`` (nothing was joined).
        """
        if self.extensions.wants("on_connect") or self.registry.closing:
            return None
        doc = self.registry.get(name)
        if doc is None or doc.busy:
            return None
        self.check_store()
        self._check_cap(doc)
        self.registry.keep(doc)  # in use: not unloaded when idle
        return self._enter(
            doc, peer, permission or Permission(), id or f"c{next(self._ids)}", remote
        )

    def _check_cap(self, doc: Document) -> None:
        cap = self.config.max_connections_per_doc
        if 0 < cap <= len(doc.sessions):
            raise PolicyViolation(f"too many connections to this document (limit {cap})")

    def _enter(
        self, doc: Document, peer: Peer, permission: Permission, id: str, remote: str | None
    ) -> Session:
        session = Session(doc, peer, permission, id, remote)
        doc.add(session)
        if self.extensions.wants("on_joined"):
            self.extensions.after("on_joined", ConnectEvent(doc.name, id, permission))
        return session

    def document(self, name: str) -> Document | None:
        """The open document ``name`` if it is loaded (nothing is loaded)."""
        return self.registry.get(name)

    def clients(self, name: str) -> int:
        doc = self.registry.get(name)
        return len(doc.sessions) if doc is not None else 0

    # -- documents as a whole (HTTP API) ---------------------------------------------

    async def get_text(self, name: str) -> str | None:
        """The text of ``name``, or None if no such document exists."""
        if self.registry.get(name) is None and await self.store.info(name) is None:
            return None
        doc = await self.registry.open(name)
        await doc.quiet()
        self.registry.release_if_idle(doc)
        return doc.room.text

    async def set_text(
        self,
        name: str,
        text: str,
        author: str = "api",
        sub: str | None = None,
        remote: str | None = None,
    ) -> None:
        """Replace the text of ``name`` (created if needed) as a live CRDT edit.

        Returns once the edit is durable. ``sub`` and ``remote`` (who, from
        where) are for the audit trail (``on_audit``: ``put``, ``create``).
        """
        doc = await self.registry.open(name)
        try:
            await doc.quiet()
            room = doc.room
            base, sv, old = room.doc.get_update(), room.doc.get_state(), room.text
            if old != text:  # the minimal diff, on a fork in a worker thread
                update = await self.offload(restore_update, base, sv, old, text)
                await doc.apply_update(update, author, sub=sub, remote=remote)
            self.extensions.audit("put", name, sub, remote)
        finally:
            self.registry.release_if_idle(doc)

    # -- history (HTTP API) ---------------------------------------------------------

    async def exists(self, name: str) -> bool:
        """True if ``name`` is loaded or stored."""
        return self.registry.get(name) is not None or await self.store.info(name) is not None

    async def restore(
        self,
        name: str,
        version: int,
        author: str = "api",
        sub: str | None = None,
        remote: str | None = None,
    ) -> Restored:
        """Restore ``name`` to ``version`` as a live edit (``History.restore``).

        Raises:
            NotFound: history is off, or no such version.
        """
        history = self._history()
        doc = await self.registry.open(name)
        try:
            return await history.restore(doc, version, author, sub, remote)
        finally:
            self.registry.release_if_idle(doc)

    async def name_version(
        self, name: str, label: str | None, sub: str | None = None
    ) -> VersionMeta:
        """A named version of ``name``'s current text (``History.name_now``)."""
        history = self._history()
        doc = await self.registry.open(name)
        try:
            return await history.name_now(doc, label, Author(sub))
        finally:
            self.registry.release_if_idle(doc)

    def _history(self) -> History:
        if self.history is None:
            raise NotFound("history is off")
        return self.history

    async def delete(self, name: str, sub: str | None = None, remote: str | None = None) -> bool:
        """Delete ``name`` everywhere; its connections are closed with 4404.

        ``sub`` and ``remote`` (who, from where) are for the audit trail.

        Returns:
            False if there was no such document.
        """
        deleted = await self.registry.delete(name)
        if self.history is not None:
            await self.history.forget(name)  # it cannot come back through its history
        if deleted and self.extensions.wants("on_delete"):
            self.extensions.after("on_delete", DeleteEvent(name))
        if deleted:
            self.extensions.audit("delete", name, sub, remote)
        return deleted

    async def list(self, after: str | None = None, limit: int | None = None) -> list[DocSummary]:
        """Documents, stored or only loaded, sorted by name: the first ``limit`` after ``after``.

        ``None`` lists from the first, and every one.
        """
        infos = {info.name: info for info in await self.store.list(after, limit)}
        for name in self.registry.documents:
            if after is None or name > after:
                infos.setdefault(name, DocInfo(name, 0, time.time()))
        found = sorted(infos.values(), key=lambda i: i.name)[:limit]
        presence = getattr(self.store, "presence", None)  # a host's store may predate it
        if presence is not None:  # cluster-wide counts
            counts = await presence.clients([i.name for i in found])
            return [DocSummary(i.name, i.size, i.modified, counts[i.name]) for i in found]
        return [DocSummary(i.name, i.size, i.modified, self.clients(i.name)) for i in found]

    async def readiness(self) -> str | None:
        """None while the hub can take and persist writes; else why not (``/readyz``)."""
        if self.registry.closing:
            return "shutting down"
        probe = getattr(self.store, "readiness", None)  # a host's store may predate it
        return await probe() if probe is not None else None

    # -- shutdown -----------------------------------------------------------------

    async def close(self, timeout: float = 5.0) -> None:
        """Close every connection (1001), save every document, run pending hooks.

        Waits up to ``timeout`` seconds for clients to answer the close.
        """
        await self.registry.close()
        await self.sockets.closed(timeout)
        await self.extensions.drain()
        if self.history is not None:
            await self.history.close()  # pending changes become versions ("stop")
            await self.extensions.drain()
        await self.extensions.close()  # on_close: e.g. webhooks send what they hold
        self.offload.close()
        self.registry.crdt.close()
        await self.lag.stop()
        if self._owned_store is not None:
            await self._owned_store.close()
            self._owned_store.release()
        if self._owned_shared is not None:
            await self._owned_shared.close()
