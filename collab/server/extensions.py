"""Extension hooks: how a host application (or webhooks, history, audit) takes part.

An ``Extension`` overrides the hooks it needs; ``Hub(extensions=[...])`` (or
``routes(..., extensions=...)``) runs them in the order given.

* "before" hooks, ``on_connect`` and ``on_load``, run before the connection
  joins or the document loads, and may refuse by raising a ``CollabError``
  (the client sees its close code; the document does not open).
* "after" hooks, ``on_joined``, ``on_change``, ``on_stored``,
  ``on_disconnect``, ``on_delete``, ``on_version``, ``on_restore`` and
  ``on_audit``, are queued and run later, one at a time, off
  the message path. ``on_close`` runs once at shutdown, after them.
  A hook that raises is logged and counted; sync never waits for or breaks on
  one. Past ``MAX_QUEUED`` waiting events new ones are dropped (logged).

Hooks may be plain functions or coroutines. A hook no extension overrides
costs nothing: its event is never built.

``Debounce`` runs a callback once per key after a quiet period, at most
``max_delay`` after the first call (``policy.debounce_delay``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

from ..core import policy
from ..core.auth import Permission

__all__ = [
    "AuditEvent",
    "ChangeEvent",
    "ConnectEvent",
    "Debounce",
    "DeleteEvent",
    "DisconnectEvent",
    "Extension",
    "Extensions",
    "LoadEvent",
    "RestoreEvent",
    "StoredEvent",
    "VersionEvent",
]

log = logging.getLogger("collab.extensions")

MAX_QUEUED = 10_000


@dataclass(frozen=True, slots=True)
class ConnectEvent:
    """A client asks to join ``document`` (before: raise to refuse)."""

    document: str
    connection: str  # the connection's id, as in log lines
    permission: Permission


@dataclass(frozen=True, slots=True)
class LoadEvent:
    """``document`` is about to be loaded into memory (before: raise to refuse)."""

    document: str


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """``update`` (a Yjs update) was applied to ``document`` and logged."""

    document: str
    update: bytes
    author: str  # the token's ``sub``, the connection's id, or "api"
    time: float


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A snapshot of ``document`` was written (compaction, unload or shutdown)."""

    document: str
    time: float


@dataclass(frozen=True, slots=True)
class DisconnectEvent:
    """A client left ``document``."""

    document: str
    connection: str
    permission: Permission


@dataclass(frozen=True, slots=True)
class DeleteEvent:
    """``document`` was deleted (its clients were closed with 4404)."""

    document: str


@dataclass(frozen=True, slots=True)
class VersionEvent:
    """History cut (or named) version ``version`` of ``document``."""

    document: str
    version: str  # the version's id, as in the history API
    label: str | None  # its name, if someone named it
    reason: str  # why it was cut: "quiet", "max", "leave", "stop", "restore", "named"
    authors: tuple[str, ...]  # who wrote the changes it closes
    time: float


@dataclass(frozen=True, slots=True)
class RestoreEvent:
    """``document`` was restored to ``version`` as a live edit."""

    document: str
    version: str
    sub: str | None  # who asked (the token's ``sub``), None if anonymous
    time: float


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """Someone changed what exists: ``action`` on ``document``, by whom, from where.

    Actions: ``create`` (a document that did not exist got content, over a
    WebSocket or the API), ``put`` (its text replaced through the API),
    ``delete`` and ``restore``. Never per update: these are rare.
    """

    action: str
    document: str
    sub: str | None  # the token's ``sub`` (or the hook's user); None if anonymous
    remote: str | None  # the client's address, if known
    connection: str | None = None  # the connection's id (a WebSocket)
    time: float = 0.0


class Extension:
    """Override any of these; each is optional and may be async."""

    def on_connect(self, event: ConnectEvent) -> Awaitable[None] | None:
        """Before a client joins; raise ``CollabError`` to refuse it."""

    def on_load(self, event: LoadEvent) -> Awaitable[None] | None:
        """Before a document loads; raise ``CollabError`` to refuse it."""

    def on_joined(self, event: ConnectEvent) -> Awaitable[None] | None:
        """After a client joined (never delays the join)."""

    def on_change(self, event: ChangeEvent) -> Awaitable[None] | None:
        """After an update was applied and logged."""

    def on_stored(self, event: StoredEvent) -> Awaitable[None] | None:
        """After a snapshot was written."""

    def on_disconnect(self, event: DisconnectEvent) -> Awaitable[None] | None:
        """After a client left."""

    def on_delete(self, event: DeleteEvent) -> Awaitable[None] | None:
        """After a document was deleted."""

    def on_version(self, event: VersionEvent) -> Awaitable[None] | None:
        """After history cut or named a version."""

    def on_restore(self, event: RestoreEvent) -> Awaitable[None] | None:
        """After a document was restored to a version."""

    def on_audit(self, event: AuditEvent) -> Awaitable[None] | None:
        """After a document was created, replaced, deleted or restored (see ``AuditEvent``)."""

    def on_close(self) -> Awaitable[None] | None:
        """At shutdown, after every queued hook ran: finish what you hold (webhooks)."""


_HOOKS = (
    "on_connect",
    "on_load",
    "on_joined",
    "on_change",
    "on_stored",
    "on_disconnect",
    "on_delete",
    "on_version",
    "on_restore",
    "on_audit",
)
_Hook = Callable[[Any], "Awaitable[None] | None"]


class Extensions:
    """The extensions of one hub, in order, and the queue of their "after" events."""

    def __init__(self, extensions: Iterable[Extension] = ()) -> None:
        self.hooks: dict[str, list[_Hook]] = {name: [] for name in _HOOKS}
        self.errors = 0  # hooks that raised (exported as a metric)
        self.dropped = 0  # after-events dropped: the queue was full
        self._queue: deque[tuple[_Hook, Any]] = deque()
        self._runner: asyncio.Task[None] | None = None  # only while a hook's result is awaited
        self._scheduled: asyncio.Handle | None = None
        self._idle: asyncio.Event | None = None
        self._closers: list[Callable[[], Awaitable[None] | None]] = []
        self.add(*extensions)

    def add(self, *extensions: Extension) -> None:
        """Append ``extensions``; their hooks run after those added before."""
        for extension in extensions:
            for name in _HOOKS:
                hook = getattr(extension, name, None)
                base = getattr(Extension, name)
                if hook is not None and getattr(hook, "__func__", None) is not base:
                    self.hooks[name].append(hook)
            closer = getattr(extension, "on_close", None)
            if closer is not None and getattr(closer, "__func__", None) is not Extension.on_close:
                self._closers.append(closer)

    def wants(self, name: str) -> bool:
        """True if some extension overrides hook ``name`` (build its event only then)."""
        return bool(self.hooks[name])

    async def before(self, name: str, event: Any) -> None:
        """Run the "before" hook ``name`` of every extension, in order.

        Raises:
            CollabError: an extension refused; the rest do not run.
        """
        for hook in self.hooks[name]:
            result = hook(event)
            if inspect.isawaitable(result):
                await result

    def after(self, name: str, event: Any) -> None:
        """Queue the "after" hook ``name`` of every extension; returns at once."""
        hooks = self.hooks[name]
        if not hooks:
            return
        if len(self._queue) + len(hooks) > MAX_QUEUED:
            self.dropped += len(hooks)
            log.warning("extension queue full: dropped %s for %r", name, _doc(event))
            return
        self._queue.extend((hook, event) for hook in hooks)
        if self._runner is None and self._scheduled is None:
            # A call at the end of this loop iteration, not a task: most hooks
            # return nothing to await, and a task per burst costs every update.
            self._scheduled = asyncio.get_running_loop().call_soon(self._run_now)

    def audit(
        self,
        action: str,
        document: str,
        sub: str | None,
        remote: str | None,
        connection: str | None = None,
    ) -> None:
        """Queue an ``AuditEvent`` for the ``on_audit`` hooks (built only if one wants it)."""
        if self.hooks["on_audit"]:
            event = AuditEvent(action, document, sub, remote, connection, time.time())
            self.after("on_audit", event)

    async def drain(self) -> None:
        """Wait until every queued "after" hook has run (shutdown, tests)."""
        while self._runner is not None or self._scheduled is not None:
            if self._runner is not None:
                await asyncio.shield(self._runner)
            else:
                await asyncio.sleep(0)  # the scheduled call runs them

    async def close(self) -> None:
        """Run every ``on_close``, in order, then what they queued (shutdown)."""
        await self.drain()
        for closer in self._closers:
            try:
                result = closer()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                self.errors += 1
                log.exception("extension hook %s failed", _name(closer))
        await self.drain()

    def _run_now(self) -> None:
        """Run the queued hooks; one that returns an awaitable continues in a task."""
        self._scheduled = None
        while self._queue and self._runner is None:
            hook, event = self._queue.popleft()
            result = self._call(hook, event)
            if result is not None:
                self._runner = asyncio.get_running_loop().create_task(
                    self._run(result, hook, event)
                )

    async def _run(self, pending: Awaitable[object], hook: _Hook, event: Any) -> None:
        try:
            while True:
                try:
                    await pending
                except Exception:
                    self.errors += 1
                    log.exception("extension hook %s failed for %r", _name(hook), _doc(event))
                while self._queue:
                    hook, event = self._queue.popleft()
                    if (result := self._call(hook, event)) is not None:
                        pending = result
                        break
                else:
                    return
        finally:
            self._runner = None

    def _call(self, hook: _Hook, event: Any) -> Awaitable[object] | None:
        """``hook(event)``: its awaitable, if it returned one; a raise is counted and logged."""
        try:
            result = hook(event)
        except Exception:
            self.errors += 1
            log.exception("extension hook %s failed for %r", _name(hook), _doc(event))
            return None
        return result if inspect.isawaitable(result) else None


def _name(hook: Callable[..., object]) -> str:
    owner = getattr(hook, "__self__", None)
    return f"{type(owner).__name__}.{hook.__name__}" if owner is not None else repr(hook)


def _doc(event: Any) -> str:
    return str(getattr(event, "document", "?"))


class Debounce:
    """Call ``fire(key)`` once per burst: ``quiet`` seconds after the last
    ``touch(key)``, and at most ``max_delay`` seconds after the first.

    For "after" hooks that should not run per update (webhooks, indexing).
    ``flush()`` fires everything pending at once (shutdown).
    """

    def __init__(
        self,
        fire: Callable[[Hashable], Awaitable[None] | None],
        quiet: float,
        max_delay: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fire, self.quiet, self.max_delay, self.clock = fire, quiet, max_delay, clock
        self._pending: dict[Hashable, tuple[float, float, asyncio.TimerHandle]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def touch(self, key: Hashable) -> None:
        now = self.clock()
        first = self._pending[key][0] if key in self._pending else now
        if key in self._pending:
            self._pending[key][2].cancel()
        delay = policy.debounce_delay(first, now, now, self.quiet, self.max_delay)
        timer = asyncio.get_running_loop().call_later(delay, self._due, key)
        self._pending[key] = (first, now, timer)

    def cancel(self, key: Hashable) -> None:
        """Forget ``key``'s pending call (its document was deleted)."""
        pending = self._pending.pop(key, None)
        if pending is not None:
            pending[2].cancel()

    def _due(self, key: Hashable) -> None:
        self._pending.pop(key, None)
        result = self.fire(key)
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def flush(self) -> None:
        """Fire every pending key now and wait for the calls to finish."""
        for key in list(self._pending):
            self._pending[key][2].cancel()
            self._due(key)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
