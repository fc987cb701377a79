"""A store whose durability a test holds: the real ``FileStore``, with a gate on ``flush``.

While the gate is closed no record is ``durable`` and every ``flush`` waits for
``release()`` before the real one (``fsync="always"``: a group commit). Wraps
the store and its logs through the ``collab.storage.base`` protocols only.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from collab.storage.base import Cursor, DocInfo, DocumentLog, Loaded, LogWatcher, Record
from collab.storage.file import FileStore

from .crdt import text_of

__all__ = ["HeldFileLog", "HeldFileStore"]


class HeldFileLog:
    """One document's log of a ``HeldFileStore``."""

    def __init__(self, inner: DocumentLog, store: HeldFileStore) -> None:
        self.inner = inner
        self.store = store
        self.name = inner.name

    @property
    def size(self) -> int:
        return self.inner.size

    async def load(self) -> Loaded:
        return await self.inner.load()

    def append(self, record: Record) -> Cursor:
        return self.inner.append(record)

    def durable(self, cursor: Cursor) -> bool:
        return self.store.gate.is_set() and self.inner.durable(cursor)

    async def flush(self, cursor: Cursor | None = None) -> None:
        self.store.waiting += 1
        try:
            await self.store.gate.wait()
        finally:
            self.store.waiting -= 1
        await self.inner.flush(cursor)

    async def compact(self, state: bytes, upto: Cursor) -> None:
        await self.inner.compact(state, upto)

    async def delete(self) -> bool:
        return await self.inner.delete()

    def watch(self, watcher: LogWatcher) -> None:
        self.inner.watch(watcher)

    async def close(self) -> None:
        await self.inner.close()


class HeldFileStore:
    """A ``FileStore`` on ``root`` (``fsync="always"``) whose flushes wait for ``release``."""

    def __init__(self, root: Path) -> None:
        self.inner = FileStore(root, fsync="always")
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting = 0  # flushes waiting for the gate now

    def hold(self) -> None:
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()

    @property
    def damaged(self) -> int:
        return self.inner.damaged

    @property
    def presence(self) -> Any:
        return self.inner.presence

    def log(self, name: str) -> HeldFileLog:
        return HeldFileLog(self.inner.log(name), self)

    async def info(self, name: str) -> DocInfo | None:
        return await self.inner.info(name)

    async def list(self, after: str | None = None, limit: int | None = None) -> list[DocInfo]:
        return await self.inner.list(after, limit)

    async def readiness(self) -> str | None:
        return await self.inner.readiness()

    async def close(self) -> None:
        self.release()
        await self.inner.close()

    async def stored_text(self, name: str) -> str:
        """The text of ``name`` as the data directory holds it now (a read-only store)."""
        store = FileStore(self.inner.root, read_only=True)
        try:
            return text_of((await store.log(name).load()).updates)
        finally:
            await store.close()
