"""Which documents are loaded: each loaded once, unloaded when idle, all flushed at shutdown.

``open(name)`` returns the loaded ``Document``, loading it once however many
callers ask at the same time (single flight). Past ``max_documents`` idle ones
are unloaded first; if none is idle the caller is refused (``Overloaded``).
A document without clients is unloaded ``idle_timeout`` seconds after the
last one left: compacted if anything was logged since its snapshot, its log
closed (fsynced). A save that fails keeps it in memory and tries again later.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from ..core.config import Config
from ..core.errors import DocumentDeleted, Overloaded, ShuttingDown
from ..storage.base import Store
from .document import Document, Phase
from .extensions import Extensions, LoadEvent
from .metrics import Metrics
from .offload import Offload

__all__ = ["Registry"]

log = logging.getLogger("collab.hub")


class Registry:
    """The loaded documents of one store."""

    def __init__(
        self,
        store: Store,
        config: Config,
        metrics: Metrics,
        extensions: Extensions,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.config = config
        self.metrics = metrics
        self.extensions = extensions
        self.clock = clock
        self.documents: dict[str, Document] = {}
        self.crdt = Offload("collab-crdt")  # large loads, in a thread of their own
        self.closing = False
        self._timers: dict[Document, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.on_drop: list[Callable[[Document], None]] = []  # a document leaves memory

    def __iter__(self) -> Iterator[Document]:
        return iter(list(self.documents.values()))

    def get(self, name: str) -> Document | None:
        """The document if it is loaded and open, else None (no loading)."""
        doc = self.documents.get(name)
        return doc if doc is not None and doc.phase is Phase.OPEN else None

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``work`` in the background, keeping a reference until it is done."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- loading --------------------------------------------------------------------

    async def open(self, name: str) -> Document:
        """The open document ``name``, loaded if needed.

        Raises:
            DocumentUnavailable: the stored document cannot be read.
            Overloaded: ``max_documents`` are loaded and none is idle.
            ShuttingDown: the server is closing.
            CollabError: an extension's ``on_load`` refused.
        """
        while True:
            if self.closing:
                raise ShuttingDown("server is shutting down")
            doc = self.documents.get(name)
            if doc is None:
                if not await self._make_room():
                    cap = self.config.max_documents
                    raise Overloaded(f"too many documents open (limit {cap})")
                if name in self.documents:
                    continue  # loaded by someone else while idle ones were unloaded
                return await self._load(name)
            await doc.settled()
            if doc.phase is Phase.OPEN:
                self.keep(doc)
                return doc

    async def _make_room(self) -> bool:
        """False if ``max_documents`` are loaded even after unloading idle ones."""
        cap = self.config.max_documents
        if cap <= 0 or len(self.documents) < cap:
            return True
        idle = [doc for doc in self.documents.values() if doc.idle]
        for doc in idle[: len(self.documents) - cap + 1]:
            await self.unload(doc)
        return len(self.documents) < cap

    async def _load(self, name: str) -> Document:
        doc = Document(
            name,
            self.store.log(name),
            self.config,
            self.metrics,
            self.extensions,
            self.clock,
            on_failed=self._evict,
            on_idle=self.release_if_idle,
            on_deleted=self._deleted,
            presence=getattr(self.store, "presence", None),  # a host's store may predate it
        )
        self.documents[name] = doc
        try:
            if self.extensions.wants("on_load"):
                await self.extensions.before("on_load", LoadEvent(name))
            await doc.load(await doc.log.load(), self.crdt)
        except BaseException:
            del self.documents[name]
            doc.enter(Phase.CLOSED)
            raise
        self.release_if_idle(doc)
        return doc

    # -- unloading --------------------------------------------------------------------

    def keep(self, doc: Document) -> None:
        """``doc`` is in use: cancel its idle unload."""
        timer = self._timers.pop(doc, None)
        if timer is not None:
            timer.cancel()

    def release_if_idle(self, doc: Document) -> None:
        """Unload ``doc`` in ``idle_timeout`` seconds unless someone uses it meanwhile."""
        if not doc.idle:
            return
        self.keep(doc)
        loop = asyncio.get_running_loop()
        self._timers[doc] = loop.call_later(
            self.config.idle_timeout, lambda: self.spawn(self.unload(doc))
        )

    async def unload(self, doc: Document) -> None:
        """Save and drop ``doc`` if it is still idle; on failure keep it and retry later."""
        if not doc.idle or self.documents.get(doc.name) is not doc:
            return
        self.keep(doc)
        doc.enter(Phase.UNLOADING)
        try:
            await doc.flushed()
            await doc.compact()
            await doc.log.close()
        except Exception:
            log.exception("could not flush %r; keeping it in memory", doc.name)
            doc.enter(Phase.OPEN)
            self.release_if_idle(doc)
            return
        self._drop(doc)
        log.debug("unloaded %r", doc.name)

    def _drop(self, doc: Document) -> None:
        if self.documents.get(doc.name) is doc:
            del self.documents[doc.name]
        self.keep(doc)
        for callback in self.on_drop:
            callback(doc)
        doc.enter(Phase.CLOSED)

    def _deleted(self, doc: Document) -> None:
        """Another process deleted ``doc``: drop it, release its log."""
        self._drop(doc)
        self.spawn(self._close_quietly(doc))

    async def _close_quietly(self, doc: Document) -> None:
        try:
            await doc.log.close()
        except Exception as exc:  # its last appends were refused: the document is gone
            log.debug("closing the log of deleted %r: %s", doc.name, exc)

    def _evict(self, doc: Document) -> None:
        """``doc`` failed: drop it unsaved once a snapshot being written is done."""
        self.spawn(self._evict_when_idle(doc))

    async def _evict_when_idle(self, doc: Document) -> None:
        async with doc.lock:
            try:
                await doc.log.close()
            except Exception:
                log.exception("closing the log of failed %r", doc.name)
            self._drop(doc)

    async def delete(self, name: str) -> bool:
        """Delete ``name`` (loaded or not); its clients are closed with 4404.

        Returns:
            True if there was such a document.
        """
        doc = self.documents.get(name)
        if doc is None:
            return await self.store.log(name).delete()
        await doc.settled()
        if doc.phase is not Phase.OPEN:
            return await self.delete(name)  # unloaded meanwhile
        async with doc.lock:
            self.keep(doc)
            doc.close_all(DocumentDeleted.close_code, "document deleted")
            self._drop(doc)
            await doc.log.delete()
            await doc.log.close()
        return True

    async def close(self) -> None:
        """Refuse new work, close every client (1001), save every document."""
        self.closing = True
        for doc in self:
            doc.close_all(ShuttingDown.close_code, "server shutting down")
        for doc in self:
            try:
                await doc.settled()
                if doc.phase is not Phase.OPEN:
                    continue
                await doc.flushed()
                await doc.compact()
                await doc.log.close()
            except Exception:
                log.exception("could not flush %r at shutdown", doc.name)
            self._drop(doc)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
