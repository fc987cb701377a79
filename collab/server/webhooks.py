"""Webhooks: the hub's events, signed and POSTed to HTTP endpoints in the background.

Rule: asyncio only, no tornado. ``Webhooks`` is an ``Extension``: its hooks
turn the hub's after-events into webhook events (``core.webhooks``), which
each ``delivery.Endpoint`` queues (``core.outbox``: bounded, changes
coalesced) and delivers in the background, retrying with backoff. The HTTP
client is a ``Transport`` the caller injects (``collab.tornado.webhooks``).
Nothing here is on the message path: the hooks run off it, and they only
append to queues.

Cluster mode: ``claim(event_id)`` (default: always True) is asked once per
event before it is queued; a shared store that answers True once per id
(Redis ``SET NX``) makes each event go out once, not once per process.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import ipaddress
import logging
import random
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ..core.config import Config
from ..core.webhooks import Event, check_url, message_id, parse_events, parse_secret
from .delivery import Endpoint, Reply, Transport, safe_url
from .extensions import (
    AuditEvent,
    ChangeEvent,
    ConnectEvent,
    Debounce,
    DisconnectEvent,
    Extension,
    RestoreEvent,
    VersionEvent,
)

if TYPE_CHECKING:
    from .hub import Hub

__all__ = ["Claim", "Endpoint", "Reply", "Transport", "Webhooks"]

log = logging.getLogger("collab.webhooks")

MAX_TEXT_BYTES = 1 << 20  # --webhook-include-text: larger texts are left out


Claim = Callable[[str], "bool | Awaitable[bool]"]


class _Changes:
    """What one document's undelivered burst of changes adds up to."""

    __slots__ = ("authors", "bytes", "first", "last", "last_update", "updates")

    def __init__(self, time: float) -> None:
        self.first = self.last = time
        self.updates = self.bytes = 0
        self.authors: dict[str, None] = {}
        self.last_update = b""


class Webhooks(Extension):
    """Sends the hub's events to ``config.webhooks`` (default: ``hub.config``'s).

    Args:
        hub: whose documents (client counts, texts) the events describe.
        transport: the HTTP client (``collab.tornado.webhooks.HttpTransport``).
        config: the ``webhook*`` settings; default ``hub.config``.
        claim: asked once per event id; False means another process sends it.

    Raises:
        ValueError: a bad URL, secret or event name, or URLs without a secret.
    """

    def __init__(
        self,
        hub: Hub,
        transport: Transport,
        config: Config | None = None,
        claim: Claim | None = None,
    ) -> None:
        self.hub, self.transport = hub, transport
        self.config = config = config or hub.config
        urls = [check_url(url) for url in config.webhooks]
        keys = [parse_secret(s) for s in config.webhook_secrets]
        if urls and not keys:
            raise ValueError("webhooks need a secret to sign with (--webhook-secret)")
        self.events = set(parse_events(config.webhook_events))
        self.claim = claim
        metrics = hub.metrics
        self.endpoints = [Endpoint(u, keys, transport, config, metrics) for u in urls]
        for url in urls:
            if not _private(url):
                log.warning(
                    "webhook %s is not https: bodies and signatures travel in clear", safe_url(url)
                )
        metrics.webhook_queue.set_function(lambda: sum(len(e.outbox) for e in self.endpoints))
        self.debounce = Debounce(self._changed, config.webhook_debounce, config.webhook_max_wait)
        self._changes: dict[str, _Changes] = {}
        self._claims: set[asyncio.Task[None]] = set()
        self._nonce = random.getrandbits(64).to_bytes(8, "big").hex()  # this process

    # -- hooks ------------------------------------------------------------------------

    def on_audit(self, event: AuditEvent) -> None:
        who = (event.sub,) if event.sub else ()
        if event.action == "create":
            self._emit("document.created", event.document, event.time, who, repr(event.time))
        elif event.action == "delete":
            self._changes.pop(event.document, None)
            self.debounce.cancel(event.document)  # nothing changed is said of it any more
            self._emit("document.deleted", event.document, event.time, who, repr(event.time))

    def on_change(self, event: ChangeEvent) -> None:
        if "document.changed" not in self.events:
            return
        changes = self._changes.get(event.document)
        if changes is None:
            changes = self._changes[event.document] = _Changes(event.time)
        changes.last = event.time
        changes.updates += 1
        changes.bytes += len(event.update)
        changes.authors[event.author] = None
        changes.last_update = event.update
        self.debounce.touch(event.document)

    def on_version(self, event: VersionEvent) -> None:
        fields = {"version": event.version, "label": event.label, "reason": event.reason}
        self._emit(
            "version.created", event.document, event.time, event.authors, event.version, fields
        )

    def on_restore(self, event: RestoreEvent) -> None:
        who = (event.sub,) if event.sub else ()
        fields = {"version": event.version}
        key = f"{event.version}\0{event.time!r}"
        self._emit("document.restored", event.document, event.time, who, key, fields)

    def on_joined(self, event: ConnectEvent) -> None:
        self._connection("connection.opened", event)

    def on_disconnect(self, event: DisconnectEvent) -> None:
        self._connection("connection.closed", event)

    async def on_close(self) -> None:
        """Send pending changes now, then give deliveries ``webhook_grace`` seconds."""
        await self.debounce.flush()
        grace = self.config.webhook_grace
        if self._claims:
            await asyncio.wait(self._claims, timeout=grace)
        await asyncio.gather(*(e.close(grace) for e in self.endpoints))
        self.transport.close()

    # -- events -----------------------------------------------------------------------

    def _connection(self, kind: str, event: ConnectEvent | DisconnectEvent) -> None:
        user = event.permission.user
        fields = {"connection": event.connection, "writable": event.permission.writable}
        key = f"{event.connection}\0{self._nonce}"
        now = time.time()
        self._emit(kind, event.document, now, (user,) if user else (), key, fields, clients=True)

    async def _changed(self, key: Hashable) -> None:
        name = str(key)
        changes = self._changes.pop(name, None)
        if changes is None:
            return
        digest = hashlib.sha256(changes.last_update).hexdigest()
        fields: dict[str, object] = {}
        if self.config.webhook_include_text:
            fields["text"] = await self._text(name)
        counts = {"updates": changes.updates, "bytes": changes.bytes}
        who = tuple(changes.authors)
        self._emit(
            "document.changed", name, changes.last, who, digest, fields, counts, changes.first, True
        )

    async def _text(self, name: str) -> str | None:
        doc = self.hub.document(name)
        try:
            if doc is not None:
                await doc.quiet()
            text = doc.room.text if doc is not None else await self.hub.get_text(name)
        except Exception as exc:  # unloading, shutting down, unreadable: say nothing
            log.debug("webhooks: no text of %r: %s", name, exc)
            return None
        if text is not None and len(text.encode()) > MAX_TEXT_BYTES:
            return None
        return text

    def _emit(
        self,
        kind: str,
        name: str,
        when: float,
        who: tuple[str, ...],
        key: str,
        fields: Mapping[str, object] | None = None,
        counts: dict[str, int] | None = None,
        first: float | None = None,
        clients: bool = False,
    ) -> None:
        if kind not in self.events or not self.endpoints:
            return
        counts = dict(counts or {})
        if clients:
            counts["clients"] = self.hub.clients(name)
        event = Event(kind, name, when, message_id(kind, name, key), who, counts, first)
        event.fields.update(fields or {})
        verdict = self.claim(event.id) if self.claim is not None else True
        if inspect.isawaitable(verdict):
            task = asyncio.get_running_loop().create_task(self._claimed(event, verdict))
            self._claims.add(task)
            task.add_done_callback(self._claims.discard)
        elif verdict:
            self._fan_out(event)

    async def _claimed(self, event: Event, verdict: Awaitable[bool]) -> None:
        try:
            mine = await verdict
        except Exception as exc:  # the shared store is down: better twice than never
            log.warning("webhooks: claim of %s failed (%s); sending it anyway", event.id, exc)
            mine = True
        if mine:
            self._fan_out(event)

    def _fan_out(self, event: Event) -> None:
        for endpoint in self.endpoints:
            endpoint.put(event)


def _private(url: str) -> bool:
    """True for https URLs and for http ones to this machine."""
    parts = urlsplit(url)
    if parts.scheme.lower() == "https" or parts.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.hostname or "").is_loopback
    except ValueError:
        return False
