"""Version history: cutting versions on timers, naming them, restoring one as a live edit.

Rule: asyncio only, no tornado. ``History`` is an extension of the hub: it
learns of changes, joins and departures through the "after" hooks (so the
message path never waits for it) and keeps, per document with unversioned
changes, a small accumulator and one timer. Versions go to a
``storage.history.HistoryStore``; the CPU-heavy parts (diff counts, the
restore edit on a fork, zlib) run in a worker thread.

A version is cut (``core.history``): ``history_idle`` seconds after the last
change ("quiet"), ``history_max_interval`` after the first ("max"),
``LEAVE_GRACE`` seconds after the last editor left ("leave"), at shutdown
("stop"), when someone names the current text ("named"), before a restore
("pre-restore", if the text changed since the latest version) and after it
("restore"). A cut whose text equals the latest version's is skipped (unless
named). Retention runs after every cut. Losing history never loses a
document: a failed cut is logged and counted, nothing else.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from ..core.config import Config
from ..core.errors import NotFound
from ..core.history import (
    Author,
    VersionMeta,
    merge_authors,
    restore_update,
    version_due,
    versions_to_prune,
)
from ..core.textdiff import counts, text_edits
from ..storage.history import HistoryStore
from .extensions import (
    ChangeEvent,
    ConnectEvent,
    DisconnectEvent,
    Extension,
    Extensions,
    RestoreEvent,
    VersionEvent,
)
from .offload import Offload

if TYPE_CHECKING:
    from .document import Document
    from .registry import Registry

__all__ = ["LEAVE_GRACE", "History", "Restored"]

log = logging.getLogger("collab.history")

T = TypeVar("T")
LEAVE_GRACE = 5.0  # seconds after the last editor left (a reload does not cut)
COUNT_LIMIT = 1 << 20  # texts above this many characters get no added/removed counts
_TEXT_CACHE = 32  # latest-version texts kept in memory (to skip unchanged cuts)
_COLOR = re.compile(r"#[0-9a-fA-F]{3,8}")


@dataclass
class _Pending:
    """Changes of one document since its latest version."""

    doc: Document | None  # None once unloaded: ``captured`` holds its state and text
    first: float
    last: float
    updates: int = 0
    authors: dict[str, Author] = field(default_factory=dict)
    tried: dict[str, float] = field(default_factory=dict)  # when a name was last looked up
    leave_at: float | None = None
    timer: asyncio.TimerHandle | None = None
    captured: tuple[bytes, str] | None = None


@dataclass(frozen=True)
class Restored:
    """What ``History.restore`` did."""

    restored_from: int
    before: VersionMeta | None  # the pre-restore version (None: nothing changed)
    version: VersionMeta | None  # the restore's own version (None: nothing changed)
    changed: bool


def _counts(old: str, new: str) -> tuple[int | None, int | None]:
    if len(old) > COUNT_LIMIT or len(new) > COUNT_LIMIT:
        return None, None
    return counts(old, text_edits(old, new))


class History(Extension):
    """The version history of every document of one hub."""

    def __init__(
        self,
        store: HistoryStore,
        config: Config,
        registry: Registry,
        extensions: Extensions,
        offload: Offload,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.config = config
        self.registry = registry
        self.extensions = extensions
        self.offload = offload
        self.clock = clock
        self.failures = 0  # cuts that could not be stored (a metric)
        self.cuts = 0
        self._pending: dict[str, _Pending] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._texts: OrderedDict[str, tuple[int, str]] = OrderedDict()
        self._anonymous: OrderedDict[str, None] = OrderedDict()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closed = False
        registry.on_drop.append(self._dropped)

    # -- hooks (queued by the hub: never on the message path) ------------------------

    def on_joined(self, event: ConnectEvent) -> None:
        if event.permission.user is None:
            self._anonymous[event.connection] = None
            if len(self._anonymous) > 10000:
                self._anonymous.popitem(last=False)

    def on_change(self, event: ChangeEvent) -> None:
        if self.closed:
            return
        doc = self.registry.documents.get(event.document)
        if doc is None:
            return  # deleted meanwhile
        pending = self._pending.get(event.document)
        if pending is None:
            pending = self._pending[event.document] = _Pending(doc, event.time, event.time)
        pending.doc = doc
        pending.last = max(pending.last, event.time)
        pending.updates += 1
        if doc.sessions:
            pending.leave_at = None
        held = pending.authors.get(event.author)
        if held is None or (
            held.name is None and self.clock() - pending.tried.get(event.author, 0) > 1
        ):
            pending.tried[event.author] = self.clock()
            found = self._author(doc, event.author)
            if held is None or found.name is not None:
                pending.authors[event.author] = found
        if pending.timer is None:
            self._arm(event.document, pending)

    def _dropped(self, doc: Document) -> None:
        """``doc`` leaves memory: keep its state and text for the cut, not the document."""
        pending = self._pending.get(doc.name)
        if pending is None or pending.doc is not doc:
            return
        pending.captured = (doc.room.doc.get_update(), doc.room.text)
        pending.doc = None
        if pending.timer is not None:
            pending.timer.cancel()
            pending.timer = None
        if self.registry.closing:
            return  # the server stops: ``close`` cuts it ("stop")
        pending.leave_at = self.clock()
        self._arm(doc.name, pending)

    def on_disconnect(self, event: DisconnectEvent) -> None:
        pending = self._pending.get(event.document)
        if pending is None or pending.doc is None or pending.doc.sessions:
            return
        pending.leave_at = self.clock() + LEAVE_GRACE
        if pending.timer is not None:
            pending.timer.cancel()
        self._arm(event.document, pending)

    # -- timers ---------------------------------------------------------------------

    def _due(self, pending: _Pending) -> tuple[float, str]:
        idle, longest = self.config.history_idle, self.config.history_max_interval
        due = version_due(pending.first, pending.last, idle, longest)
        reason = "quiet" if pending.last + idle <= pending.first + longest else "max"
        if pending.leave_at is not None and pending.leave_at < due:
            return pending.leave_at, "leave"
        return due, reason

    def _arm(self, name: str, pending: _Pending) -> None:
        due, _ = self._due(pending)
        delay = max(0.0, due - self.clock())
        pending.timer = asyncio.get_running_loop().call_later(delay, self._fire, name)

    def _fire(self, name: str) -> None:
        pending = self._pending.get(name)
        if pending is None:
            return
        pending.timer = None
        due, reason = self._due(pending)
        if due > self.clock() + 0.001:
            self._arm(name, pending)  # changes came meanwhile
            return
        self._spawn(self.cut(name, reason))

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- who wrote ------------------------------------------------------------------

    def _author(self, doc: Document, key: str) -> Author:
        """The author ``key`` (a token's ``sub`` or a connection id) as shown at this moment."""
        for session in doc.sessions.values():
            if session.author == key:
                name, color = _awareness_user(doc, session.peer)
                return Author(session.permission.user, name, color)
        if key == "api" or key in self._anonymous:
            return Author()
        return Author(user=key)  # a token's sub whose connection is gone

    def _refresh(self, pending: _Pending) -> tuple[Author, ...]:
        if pending.doc is None:
            return merge_authors(pending.authors.values())
        for key, held in list(pending.authors.items()):
            if held.name is None:
                found = self._author(pending.doc, key)
                if found.name is not None:
                    pending.authors[key] = found
        return merge_authors(pending.authors.values())

    # -- cutting ----------------------------------------------------------------------

    def _lock(self, name: str) -> asyncio.Lock:
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock

    async def cut(self, name: str, reason: str, label: str | None = None) -> VersionMeta | None:
        """Cut a version of ``name`` now if its text changed (see the module docstring)."""
        async with self._lock(name):
            return await self._cut(name, reason, label)

    async def _latest_text(self, name: str) -> tuple[VersionMeta | None, str | None]:
        metas = await self.store.versions(name)
        if not metas:
            return None, None
        latest = metas[-1]
        cached = self._texts.get(name)
        if cached is not None and cached[0] == latest.id:
            return latest, cached[1]
        found = await self.store.read(name, latest.id)
        return latest, (found[1] if found is not None else None)

    def _remember(self, name: str, id: int, text: str) -> None:
        self._texts[name] = (id, text)
        self._texts.move_to_end(name)
        while len(self._texts) > _TEXT_CACHE:
            self._texts.popitem(last=False)

    async def _cut(
        self,
        name: str,
        reason: str,
        label: str | None = None,
        restored_from: int | None = None,
        force: bool = False,
        doc: Document | None = None,
        authors: tuple[Author, ...] = (),
    ) -> VersionMeta | None:
        """Hold the lock. None: nothing to cut, or it could not be stored (logged)."""
        pending = self._pending.pop(name, None)
        if pending is not None and pending.timer is not None:
            pending.timer.cancel()
        doc = doc or (pending.doc if pending is not None else self.registry.get(name))
        if doc is not None:
            await doc.quiet()
            state, text = doc.room.doc.get_update(), doc.room.text  # one step on the loop
        elif pending is not None and pending.captured is not None:
            state, text = pending.captured  # unloaded since
        else:
            return None
        try:
            latest, previous = await self._latest_text(name)
            if not force and latest is not None and text == previous:
                return None
            added, removed = await self.offload(_counts, previous or "", text)
            now = self.clock()
            found = merge_authors(authors, self._refresh(pending) if pending else ())
            meta = VersionMeta(
                id=0,
                created=now,
                reason=reason,
                label=label,
                first_change=pending.first if pending else None,
                last_change=pending.last if pending else None,
                updates=pending.updates if pending else 0,
                chars=len(text),
                added=added,
                removed=removed,
                authors=found,
                restored_from=restored_from,
            )
            meta = await self.store.save(name, meta, state, text)
        except Exception:
            self.failures += 1
            log.exception(
                "could not store a version of %r (history only: the document is safe)", name
            )
            return None
        self.cuts += 1
        self._remember(name, meta.id, text)
        log.debug("version %d of %r (%s)", meta.id, name, reason)
        if self.extensions.wants("on_version"):
            who = tuple(a.label for a in meta.authors)
            event = VersionEvent(name, str(meta.id), label, reason, who, meta.created)
            self.extensions.after("on_version", event)
        await self._retain(name)
        return meta

    async def _retain(self, name: str) -> None:
        try:
            metas = await self.store.versions(name)
            drop = versions_to_prune(
                metas, self.clock(), self.config.history_keep_all, self.config.history_max_versions
            )
            if drop:
                await self.store.drop(name, drop)
        except Exception:
            log.exception("could not prune the history of %r", name)

    # -- what the API asks ------------------------------------------------------------

    async def versions(self, name: str) -> list[VersionMeta]:
        """Every version of ``name``, newest first."""
        return list(reversed(await self.store.versions(name)))

    async def get(self, name: str, id: int) -> VersionMeta | None:
        for meta in await self.store.versions(name):
            if meta.id == id:
                return meta
        return None

    async def read(self, name: str, id: int) -> tuple[bytes, str] | None:
        """``(state, text)`` of a listed version, or None."""
        if await self.get(name, id) is None:
            return None
        return await self.store.read(name, id)

    def pending(self, name: str) -> dict[str, Any] | None:
        """Changes not in a version yet: ``{"updates", "since"}``, or None."""
        found = self._pending.get(name)
        return None if found is None else {"updates": found.updates, "since": found.first}

    async def label(self, name: str, id: int, label: str | None) -> VersionMeta | None:
        async with self._lock(name):
            return await self.store.label(name, id, label)

    async def name_now(self, doc: Document, label: str | None, author: Author) -> VersionMeta:
        """A new named version of the current text (whether or not it changed).

        Raises:
            OSError: it could not be stored.
        """
        async with self._lock(doc.name):
            meta = await self._cut(doc.name, "named", label, force=True, doc=doc, authors=(author,))
        if meta is None:
            raise OSError("the version could not be stored")
        return meta

    async def restore(
        self, doc: Document, id: int, author: str, sub: str | None, remote: str | None
    ) -> Restored:
        """Edit ``doc``'s text into version ``id``'s as one live CRDT edit.

        The text from before is kept as a version first (``pre-restore``),
        so a restore can be undone by restoring that one. Nothing happens
        (``changed`` False) if the text is the version's already.

        Raises:
            NotFound: no such version.
            OSError: the version from before could not be stored (nothing changed).
            CollabError: the edit was refused (document too large, deleted, ...).
        """
        name = doc.name
        found = await self.read(name, id)
        if found is None:
            raise NotFound("no such version")
        target = found[1]
        who = Author(sub, None, None)
        async with self._lock(name):
            await doc.quiet()
            if doc.room.text == target:
                return Restored(id, None, None, False)
            before = await self._cut(name, "pre-restore", force=True, doc=doc)
            if before is None:
                raise OSError("the current text could not be kept as a version")
            await doc.quiet()
            base, sv, old = doc.room.doc.get_update(), doc.room.doc.get_state(), doc.room.text
            update = await self.offload(restore_update, base, sv, old, target)
            await doc.apply_update(update, author, sub=sub, remote=remote)
            version = await self._cut(
                name, "restore", restored_from=id, force=True, doc=doc, authors=(who,)
            )
        if self.extensions.wants("on_restore"):
            self.extensions.after("on_restore", RestoreEvent(name, str(id), sub, self.clock()))
        self.extensions.audit("restore", name, sub, remote)
        return Restored(id, before, version, True)

    # -- lifecycle --------------------------------------------------------------------

    async def forget(self, name: str) -> None:
        """``name`` was deleted: drop its pending changes and every version."""
        async with self._lock(name):
            pending = self._pending.pop(name, None)
            if pending is not None and pending.timer is not None:
                pending.timer.cancel()
            self._texts.pop(name, None)
            try:
                await self.store.delete(name)
            except Exception:
                log.exception("could not delete the history of %r", name)
                raise
        self._locks.pop(name, None)

    async def close(self) -> None:
        """Cut every document with pending changes ("stop"), then close the store."""
        self.closed = True
        for name in list(self._pending):
            await self.cut(name, "stop")
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.store.close()


def _awareness_user(doc: Document, peer: Any) -> tuple[str | None, str | None]:
    """The ``user.name`` and ``user.color`` the peer's awareness shows (if any)."""
    awareness = doc.room.awareness
    presence = awareness.peers.get(peer)
    if presence is None:
        return None, None
    for client_id in presence.ids:
        entry = awareness.states.get(client_id)
        if entry is None:
            continue
        try:
            user = json.loads(entry.state).get("user")
        except (ValueError, AttributeError):
            continue
        if not isinstance(user, dict):
            continue
        name, color = user.get("name"), user.get("color")
        name = name[:100] if isinstance(name, str) and name.strip() else None
        color = color if isinstance(color, str) and _COLOR.fullmatch(color) else None
        if name is not None or color is not None:
            return name, color
    return None, None
