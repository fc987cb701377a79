"""A store that keeps documents in this process only (``--memory``, embedding, tests).

Everything appended is durable at once; a document outlives its unloading,
not the process.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .base import Cursor, DocInfo, Loaded, LogWatcher, Presence, Record

__all__ = ["MemoryLog", "MemoryStore"]


@dataclass
class _Doc:
    state: bytes | None = None
    records: list[Record] = field(default_factory=list)
    first: int = 0  # cursor of ``records[0]``: every cursor below is in ``state``


class MemoryLog:
    """One document of a ``MemoryStore``. Cursors are record counts (ints)."""

    def __init__(self, store: MemoryStore, name: str) -> None:
        self.store = store
        self.name = name

    def _doc(self) -> _Doc:
        return self.store.docs.setdefault(self.name, _Doc())

    @property
    def size(self) -> int:
        doc = self.store.docs.get(self.name)
        return sum(len(r.update) for r in doc.records) if doc is not None else 0

    async def load(self) -> Loaded:
        doc = self.store.docs.get(self.name)
        generation = str(self.store.deletes.get(self.name, 0))
        if doc is None:
            return Loaded(cursor=0, generation=generation)
        return Loaded(doc.state, list(doc.records), doc.first + len(doc.records), 0, generation)

    def append(self, record: Record) -> Cursor:
        doc = self._doc()
        doc.records.append(record)
        return doc.first + len(doc.records)

    def durable(self, cursor: Cursor) -> bool:
        return True

    async def flush(self, cursor: Cursor | None = None) -> None:
        pass

    async def compact(self, state: bytes, upto: Cursor) -> None:
        assert isinstance(upto, int)
        doc = self._doc()
        covered = max(0, upto - doc.first)
        doc.state = state
        doc.records = doc.records[covered:]
        doc.first += covered

    async def delete(self) -> bool:
        if self.store.docs.pop(self.name, None) is None:
            return False
        self.store.deletes[self.name] = self.store.deletes.get(self.name, 0) + 1
        return True

    def watch(self, watcher: LogWatcher) -> None:
        pass  # nobody else writes here

    async def close(self) -> None:
        pass


class MemoryStore:
    """Documents in a dict of this process."""

    def __init__(self) -> None:
        self.docs: dict[str, _Doc] = {}
        self.deletes: dict[str, int] = {}  # per name: its generation (as a count of deletes)
        self.damaged = 0
        self.presence: Presence | None = None  # one process: nobody to relay awareness to

    def log(self, name: str) -> MemoryLog:
        return MemoryLog(self, name)

    async def info(self, name: str) -> DocInfo | None:
        doc = self.docs.get(name)
        if doc is None:
            return None
        size = len(doc.state or b"") + sum(len(r.update) for r in doc.records)
        return DocInfo(name, size, 0.0)

    async def list(self, after: str | None = None, limit: int | None = None) -> list[DocInfo]:
        names = [name for name in sorted(self.docs) if after is None or name > after]
        return [info for name in names[:limit] if (info := await self.info(name))]

    async def readiness(self) -> str | None:
        return None  # memory takes every write

    async def close(self) -> None:
        pass
