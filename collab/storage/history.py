"""Where versions live: the ``HistoryStore`` seam, and the one kept in memory.

Rule: no tornado, no sockets. History is a second, best-effort store beside
the documents' own: it never touches a document's snapshot or log, losing it
never loses a document, and ``delete`` removes all of a document's versions
(a deleted document cannot come back through its history).

A store assigns version ids: per document, increasing, never reused (while
the document exists). Every method may do I/O; each is a coroutine so a
store may be files (``history_file.FileHistory``), memory
(``MemoryHistory``) or a server such as Redis.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Protocol

from ..core.history import VersionMeta

__all__ = ["HistoryStore", "MemoryHistory"]


class HistoryStore(Protocol):
    """The versions of every document of one server."""

    damaged: int  # version files found damaged since start (a metric)

    async def versions(self, name: str) -> list[VersionMeta]:
        """Every version of ``name`` that can be read, oldest first."""

    async def save(self, name: str, meta: VersionMeta, state: bytes, text: str) -> VersionMeta:
        """Store a new version; ``meta.id`` is ignored: the stored meta (id set) is returned.

        Raises:
            OSError: it could not be stored (nothing is listed then).
        """

    async def read(self, name: str, id: int) -> tuple[bytes, str] | None:
        """``(state, text)`` of version ``id``, or None if there is none (or it is damaged)."""

    async def label(self, name: str, id: int, label: str | None) -> VersionMeta | None:
        """Name (``None``: unname) version ``id``; None if there is no such version."""

    async def drop(self, name: str, ids: Iterable[int]) -> None:
        """Remove versions ``ids`` (retention)."""

    async def delete(self, name: str) -> None:
        """Remove every version of ``name``; its ids may start again from 1."""

    async def close(self) -> None:
        """Release what the store holds."""


class MemoryHistory:
    """Versions in this process (``--memory``, embedding, tests)."""

    def __init__(self) -> None:
        self.docs: dict[str, dict[int, tuple[VersionMeta, bytes, str]]] = {}
        self.top: dict[str, int] = {}
        self.damaged = 0

    async def versions(self, name: str) -> list[VersionMeta]:
        return [meta for meta, _, _ in sorted(self.docs.get(name, {}).values(), key=_id)]

    async def save(self, name: str, meta: VersionMeta, state: bytes, text: str) -> VersionMeta:
        id = self.top.get(name, 0) + 1
        self.top[name] = id
        size = len(state) + len(text.encode())
        meta = dataclasses.replace(meta, id=id, stored_bytes=size)
        self.docs.setdefault(name, {})[id] = (meta, state, text)
        return meta

    async def read(self, name: str, id: int) -> tuple[bytes, str] | None:
        found = self.docs.get(name, {}).get(id)
        return (found[1], found[2]) if found is not None else None

    async def label(self, name: str, id: int, label: str | None) -> VersionMeta | None:
        versions = self.docs.get(name, {})
        if id not in versions:
            return None
        meta, state, text = versions[id]
        versions[id] = (meta := meta.with_label(label), state, text)
        return meta

    async def drop(self, name: str, ids: Iterable[int]) -> None:
        versions = self.docs.get(name, {})
        for id in ids:
            versions.pop(id, None)

    async def delete(self, name: str) -> None:
        self.docs.pop(name, None)
        self.top.pop(name, None)

    async def close(self) -> None:
        pass


def _id(entry: tuple[VersionMeta, bytes, str]) -> int:
    return entry[0].id
