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
from ..core.errors import PolicyViolation
from ..core.limits import Counter
from ..storage.base import DocInfo, Store
from ..storage.file import FileStore
from ..storage.memory import MemoryStore
from .audit import AuditLog
from .document import Document
from .extensions import ConnectEvent, DeleteEvent, Extension, Extensions
from .metrics import Metrics
from .quotas import Quotas
from .registry import Registry
from .session import Peer, Session
from .sockets import Gateway, SocketLimits, Sockets

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
    """

    def __init__(
        self,
        config: Config | None = None,
        store: Store | None = None,
        metrics: Metrics | None = None,
        extensions: Iterable[Extension] = (),
    ) -> None:
        self.config = config = config or Config(data_dir=None)
        self.metrics = metrics or Metrics()
        self._owned_store: FileStore | None = None
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
        self.sockets = Sockets(config.ping_interval or None, config.ping_timeout or None)
        self.quotas = Quotas(config, self.metrics)
        self.ips: Counter = self.quotas.connections  # per address and in all
        self.gateway = Gateway(
            join=self.join,
            limits=SocketLimits.of(config),
            sockets=self.sockets,
            clock=self._now,
            refused=self._refused,
        )
        self.metrics.sample(
            documents=lambda: len(self.registry.documents),
            store_damaged=lambda: self.store.damaged,
            extension_errors=lambda: self.extensions.errors,
        )
        self._ids = itertools.count(1)

    def _now(self) -> float:
        return self.clock()

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
        if self.extensions.wants("on_connect"):
            await self.extensions.before("on_connect", ConnectEvent(name, id, permission))
        doc = await self.registry.open(name)
        cap = self.config.max_connections_per_doc
        if 0 < cap <= len(doc.sessions):
            raise PolicyViolation(f"too many connections to this document (limit {cap})")
        session = Session(doc, peer, permission, id, remote)
        doc.add(session)
        if self.extensions.wants("on_joined"):
            self.extensions.after("on_joined", ConnectEvent(name, id, permission))
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
            await doc.replace_text(text, author, sub=sub, remote=remote)
            self.extensions.audit("put", name, sub, remote)
        finally:
            self.registry.release_if_idle(doc)

    async def delete(self, name: str, sub: str | None = None, remote: str | None = None) -> bool:
        """Delete ``name`` everywhere; its connections are closed with 4404.

        ``sub`` and ``remote`` (who, from where) are for the audit trail.

        Returns:
            False if there was no such document.
        """
        deleted = await self.registry.delete(name)
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
        await self.extensions.close()  # on_close: e.g. webhooks send what they hold
        if self._owned_store is not None:
            await self._owned_store.close()
            self._owned_store.release()
