"""Test doubles for the server without sockets: a recording peer and stores you can hold."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable, Sequence

from pycrdt import Doc, Text

from collab.core import protocol
from collab.core.protocol import AwarenessUpdate, SyncStep1, SyncStep2, Update
from collab.storage.base import Cursor, DocumentLog, Loaded, Record
from collab.storage.memory import MemoryStore


class RecordingPeer:
    """A client as the server sees it: keeps every frame sent to it and how it was closed.

    ``doc`` follows the document: every update it is sent is applied to it.
    """

    def __init__(self, name: str = "peer") -> None:
        self.name = name
        self.frames: list[bytes] = []
        self.closed: tuple[int, str] | None = None
        self.doc: Doc = Doc()
        self.on_send: Callable[[bytes], None] | None = None

    def send(self, data: bytes) -> None:
        self.frames.append(data)
        message = protocol.decode(data)
        if isinstance(message, Update | SyncStep2):
            self.doc.apply_update(message.update)
        if self.on_send is not None:
            self.on_send(data)

    def close(self, code: int, reason: str) -> None:
        if self.closed is None:
            self.closed = (code, reason)

    @property
    def text(self) -> str:
        return str(self.doc.get("content", type=Text))

    def messages(self, kind: type) -> list[object]:
        return [m for m in map(protocol.decode, self.frames) if isinstance(m, kind)]

    def updates(self) -> list[Update]:
        return [m for m in self.messages(Update) if isinstance(m, Update)]

    def awareness(self) -> list[AwarenessUpdate]:
        return [m for m in self.messages(AwarenessUpdate) if isinstance(m, AwarenessUpdate)]

    def step1(self) -> SyncStep1:
        first = protocol.decode(self.frames[0])
        assert isinstance(first, SyncStep1)
        return first

    def __repr__(self) -> str:
        return f"<RecordingPeer {self.name}>"


class Editor:
    """A Yjs document whose edits come out as y-protocols update messages."""

    def __init__(self, client_id: int | None = None) -> None:
        self.doc: Doc = Doc(client_id=client_id) if client_id is not None else Doc()
        self.text = self.doc.get("content", type=Text)

    def type(self, chars: str) -> bytes:
        """Append ``chars``; the update message that carries the edit."""
        before = self.doc.get_state()
        self.text += chars
        return protocol.encode(Update(self.doc.get_update(before)))


class HeldLog:
    """A ``DocumentLog`` whose records become durable only when the test says so."""

    def __init__(self, inner: DocumentLog, store: HeldStore) -> None:
        self.inner = inner
        self.store = store
        self.name = inner.name
        self.appended = 0
        self.durable_upto = 0

    @property
    def size(self) -> int:
        return self.inner.size

    async def load(self) -> Loaded:
        self.store.loads += 1
        await self.store.loading.wait()
        return await self.inner.load()

    def append(self, record: Record) -> Cursor:
        if self.store.disk_full:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.inner.append(record)
        self.appended += 1
        return self.appended

    def durable(self, cursor: Cursor) -> bool:
        assert isinstance(cursor, int)
        return not self.store.hold or cursor <= self.durable_upto

    async def flush(self, cursor: Cursor | None = None) -> None:
        target = self.appended if cursor is None else cursor
        assert isinstance(target, int)
        while self.store.hold and self.durable_upto < target:
            await self.store.flushing.wait()
            self.store.flushing.clear()
            if self.store.fail_flush:
                raise OSError(errno.EIO, "fsync failed")
            self.durable_upto = self.appended  # one flush covers everything appended
            self.store.flushes += 1

    async def compact(self, state: bytes, upto: Cursor) -> None:
        self.store.compactions += 1
        await self.inner.compact(state, self.inner_cursor(upto))

    def inner_cursor(self, cursor: Cursor) -> Cursor:
        return cursor  # the memory store counts records the same way

    async def delete(self) -> bool:
        return await self.inner.delete()

    def watch(self, on_records: Callable[[Sequence[Record]], None]) -> None:
        self.inner.watch(on_records)

    async def close(self) -> None:
        await self.inner.close()


class HeldStore(MemoryStore):
    """A memory store whose loads and flushes a test can hold and release.

    With ``hold`` set, a record is durable only after ``release_flush()``; with
    ``loading`` cleared, loads wait; with ``disk_full``, appends fail (ENOSPC).
    """

    def __init__(self) -> None:
        super().__init__()
        self.hold = False
        self.disk_full = False
        self.fail_flush = False
        self.loads = 0
        self.flushes = 0
        self.compactions = 0
        self.loading = asyncio.Event()
        self.loading.set()
        self.flushing = asyncio.Event()
        self.logs: dict[str, HeldLog] = {}

    def log(self, name: str) -> HeldLog:  # type: ignore[override]
        held = HeldLog(super().log(name), self)
        self.logs[name] = held
        return held

    def release_flush(self) -> None:
        """Let the next waiting flush complete (it covers everything appended so far)."""
        self.flushing.set()


async def settle(rounds: int = 3) -> None:
    """Let callbacks scheduled for the end of this loop iteration (relays) run."""
    for _ in range(rounds):
        await asyncio.sleep(0)
