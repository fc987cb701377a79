"""The storage seam: one ``DocumentLog`` per document, handed out by a ``Store``.

Rule: no tornado, no websockets, no sockets. A store may use asyncio and
threads; what it promises is written here, and ``tests/test_storage_contract.py``
holds every store to it (file and memory now, Redis next).

A document is a snapshot (one full Yjs update) plus the records appended after
it. The server calls, per document::

    loaded = await log.load()                # once: snapshot + records + cursor
    cursor = log.append(Record(update, t, who))  # never awaits
    log.durable(cursor)                      # may it be relayed yet?
    await log.flush(cursor)                  # return once it may
    await log.compact(state, upto)           # state covers every record <= upto
    await log.close()                        # unload: make it all durable

Cursors are opaque: compare them only through the log that issued them.
"Durable" means as durable as the store promises before anything is relayed:
for files, written to the OS (survives a killed process), and fsynced too with
``fsync="always"``; for Redis, acknowledged by it. Records appended by another
process (cluster mode) reach ``watch``'s watcher; file and memory stores have
none. A store shared by several processes also has ``presence``: awareness
relayed between them (never stored).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Protocol, TypeAlias

__all__ = [
    "Cursor",
    "DocInfo",
    "DocumentLog",
    "FsyncPolicy",
    "Loaded",
    "LogWatcher",
    "Presence",
    "PresenceListener",
    "Record",
    "Store",
    "StoreLocked",
]

FsyncPolicy = Literal["always", "interval", "never"]

Cursor: TypeAlias = object
"""A position in one document's log, issued by ``append``/``load``; opaque."""


class StoreLocked(Exception):
    """Another process (a running server) holds the data directory."""


class Record(NamedTuple):
    """One Yjs update as stored, with when (Unix seconds) and by whom.

    ``author`` is the token's ``sub`` when access control is on, else the
    connection's id; records written by the v1 format have ``time=0.0`` and
    ``author=""``. (A tuple: one is built per update, on the hot path.)
    """

    update: bytes
    time: float = 0.0
    author: str = ""


@dataclass
class Loaded:
    """What ``DocumentLog.load`` found."""

    state: bytes | None = None  # the snapshot: a full Yjs update
    records: list[Record] = field(default_factory=list)  # appended after it, in order
    cursor: Cursor = None  # after the last record: pass it to ``compact`` as ``upto``
    dropped_bytes: int = 0  # damaged bytes that could not be kept (logged)
    # Which incarnation of the name this is: changes whenever the document is
    # deleted, never otherwise (also not across restarts); "" for a store that
    # keeps none. A browser's copy of another generation must not sync back.
    generation: str = ""

    @property
    def updates(self) -> list[bytes]:
        """The snapshot then every record's update: apply them in this order."""
        head = [self.state] if self.state is not None else []
        return head + [record.update for record in self.records]


@dataclass(frozen=True)
class DocInfo:
    name: str
    size: int
    modified: float


class LogWatcher(Protocol):
    """What a shared store tells the loaded document about other processes' writes."""

    def records(self, records: Sequence[Record]) -> None:
        """Another process appended ``records`` (durable already): apply, relay, never log."""

    def deleted(self) -> None:
        """The document was deleted (by any process): close its clients with 4404."""

    def resync(self, loaded: Loaded) -> None:
        """The store may have lost writes: apply ``loaded`` and append what it lacks."""


class PresenceListener(Protocol):
    """What a loaded document does with awareness from other processes."""

    def frame(self, owner: str, frame: bytes) -> None:
        """An awareness frame from process ``owner``: apply and relay to local clients."""

    def query(self) -> None:
        """A process that just loaded the document asks for the states of local clients."""

    def gone(self, owner: str) -> None:
        """Process ``owner`` stopped or died: drop every state it relayed."""


class Presence(Protocol):
    """Awareness between the processes of a cluster: best effort, never stored."""

    def join(self, name: str, listener: PresenceListener) -> None:
        """Start hearing ``name``'s awareness and ask the others for their states."""

    def publish(self, name: str, frame: bytes) -> None:
        """Send an awareness frame of local clients to the other processes."""

    def leave(self, name: str) -> None:
        """Stop hearing ``name`` (unloaded)."""

    def count(self, name: str, connections: int) -> None:
        """This process now has ``connections`` clients on ``name``."""

    async def clients(self, names: Sequence[str]) -> dict[str, int]:
        """Connections to each of ``names`` across live processes (about a second old)."""


class DocumentLog(Protocol):
    """One document's durable state: a snapshot and the records after it."""

    name: str

    @property
    def size(self) -> int:
        """Bytes of records not covered by the snapshot (``policy.should_compact``)."""

    async def load(self) -> Loaded:
        """Read the document; call once, before ``append``.

        Raises:
            DocumentUnavailable: the stored document cannot be read (corrupt
                snapshot, or a format newer than this version knows).
        """

    def append(self, record: Record) -> Cursor:
        """Hand ``record`` to the store without waiting; return its cursor.

        Raises:
            OSError: it could not be written (disk full, ...); the log is as
                it was, so later records never follow a torn one.
        """

    def durable(self, cursor: Cursor) -> bool:
        """True once the record at ``cursor`` (and all before it) may be relayed."""

    async def flush(self, cursor: Cursor | None = None) -> None:
        """Return once ``cursor`` (default: everything appended) is durable.

        One flush may cover many records (group commit).

        Raises:
            OSError: it could not be made durable (fsync failed).
        """

    async def compact(self, state: bytes, upto: Cursor) -> None:
        """Store ``state`` as the snapshot; it holds every record up to ``upto``.

        Records appended after ``upto`` (even while this runs) stay in the log.
        If it fails, nothing is lost: the old snapshot and records still load.
        """

    async def delete(self) -> bool:
        """Remove the document's snapshot and records; True if there were any.

        If there were, the document's next ``load`` has another ``generation``.
        """

    def watch(self, watcher: LogWatcher) -> None:
        """Tell ``watcher`` of records appended by other processes, in order, and deletes."""

    async def close(self) -> None:
        """Make everything appended durable (unless ``fsync="never"``), release it."""


class Store(Protocol):
    """Where documents live; hands out one ``DocumentLog`` per open document."""

    damaged: int  # damaged files or records set aside since start (a metric)

    @property
    def presence(self) -> Presence | None:
        """Awareness between processes, if the store is shared by several."""

    def log(self, name: str) -> DocumentLog:
        """The log of ``name`` (no I/O yet: call ``load`` on it)."""

    async def info(self, name: str) -> DocInfo | None:
        """Size and last change of ``name``, or None if it has no data."""

    async def list(self, after: str | None = None, limit: int | None = None) -> list[DocInfo]:
        """Stored documents sorted by name: the first ``limit`` named after ``after``.

        ``after=None`` starts at the first, ``limit=None`` lists every one.
        """

    async def readiness(self) -> str | None:
        """None while writes can be taken and persisted; else a short reason why not.

        Cheap to call often (``/readyz``): a store may answer from a probe it
        made a few seconds ago.
        """

    async def close(self) -> None:
        """Release what the store holds (locks, threads, connections)."""
