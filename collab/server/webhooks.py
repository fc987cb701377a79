"""Webhooks: the hub's events, signed and POSTed to HTTP endpoints in the background.

Rule: asyncio only, no tornado. ``Webhooks`` is an ``Extension``: its hooks
turn the hub's after-events into webhook events (``core.webhooks``), which
each ``Endpoint`` queues (``core.outbox``: bounded, changes coalesced) and
delivers with at most ``CONCURRENCY`` requests in flight, retrying with
backoff. The HTTP client is a ``Transport`` the caller injects
(``collab.tornado.webhooks``). Nothing here is on the message path: the hooks
run off it, and they only append to queues.

Cluster mode: ``claim(event_id)`` (default: always True) is asked once per
event before it is queued; a shared store that answers True once per id
(Redis ``SET NX``) makes each event go out once, not once per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import inspect
import logging
import random
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import TYPE_CHECKING, NamedTuple, Protocol

from ..core.config import Config
from ..core.outbox import Outbox, Pending
from ..core.webhooks import (
    Event,
    check_url,
    encode_body,
    message_id,
    outcome,
    parse_events,
    parse_retry_after,
    parse_secret,
    retry_delay,
    sign,
)
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
from .metrics import Metrics

if TYPE_CHECKING:
    from .hub import Hub

__all__ = ["Claim", "Endpoint", "Reply", "Transport", "Webhooks"]

log = logging.getLogger("collab.webhooks")

CONCURRENCY = 4  # requests in flight per endpoint
USER_AGENT = "collab-webhooks"
MAX_TEXT_BYTES = 1 << 20  # --webhook-include-text: larger texts are left out


class Reply(NamedTuple):
    status: int
    retry_after: str | None  # the Retry-After header, if any


class Transport(Protocol):
    """POSTs ``body`` with ``headers``; never follows a redirect.

    Raises (any ``Exception``) when no HTTP answer came within ``timeout``.
    """

    def __call__(
        self, url: str, headers: Mapping[str, str], body: bytes, timeout: float
    ) -> Awaitable[Reply]: ...

    def close(self) -> None: ...


Claim = Callable[[str], "bool | Awaitable[bool]"]


def _safe(url: str) -> str:
    """``url`` for logs: without its query string (it may carry a key)."""
    return url.split("?", 1)[0]


class Endpoint:
    """One URL's queue and delivery worker (started on the first event)."""

    def __init__(
        self,
        url: str,
        keys: list[bytes],
        transport: Transport,
        config: Config,
        metrics: Metrics,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.url, self.keys, self.transport, self.config = url, keys, transport, config
        self.metrics, self.rand = metrics, rand
        self.outbox = Outbox(config.webhook_queue)
        self.disabled = False
        self.clock = time.monotonic  # schedules; webhook-timestamp uses time.time
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._flights: set[asyncio.Task[None]] = set()
        self._deadline: float | None = None  # closing: give up on what is due later

    def put(self, event: Event) -> None:
        if self.disabled or self._deadline is not None:
            self.metrics.webhook_deliveries.labels("dropped").inc()
            return
        dropped = self.outbox.put(event, self.clock())
        self.metrics.webhook_events.labels(event.type).inc()
        if dropped is not None:
            self.metrics.webhook_deliveries.labels("dropped").inc()
            log.warning("webhook %s: queue full, dropped %s", _safe(self.url), dropped.type)
        self._wake.set()
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while True:
                now = self.clock()
                while len(self._flights) < CONCURRENCY:
                    pending = self.outbox.next_due(now)
                    if pending is None:
                        break
                    flight = asyncio.get_running_loop().create_task(self._send(pending))
                    self._flights.add(flight)
                    flight.add_done_callback(self._landed)
                earliest = self.outbox.earliest()
                if not self._flights and (
                    earliest is None or (self._deadline is not None and earliest > self._deadline)
                ):
                    return
                wait = None if earliest is None else max(0.0, earliest - now)
                if self._deadline is not None:
                    wait = max(0.0, min(wait if wait is not None else 1.0, self._deadline - now))
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
        except Exception:
            log.exception("webhook %s: worker failed", _safe(self.url))
        finally:
            self._worker = None

    def _landed(self, flight: asyncio.Task[None]) -> None:
        self._flights.discard(flight)
        self._wake.set()

    async def _send(self, pending: Pending) -> None:
        event = pending.event
        body = encode_body(event)
        timestamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": event.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self.keys, event.id, timestamp, body),
        }
        started = self.clock()
        status: int | None = None
        retry_after: str | None = None
        try:
            status, retry_after = await self.transport(
                self.url, headers, body, self.config.webhook_timeout
            )
            problem = f"HTTP {status}"
        except Exception as exc:
            problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        self.metrics.webhook_seconds.observe(self.clock() - started)
        self._settle(pending, outcome(status), problem, retry_after)

    def _settle(self, pending: Pending, result: str, problem: str, retry_after: str | None) -> None:
        event, url = pending.event, _safe(self.url)
        deliveries = self.metrics.webhook_deliveries
        if result == "ok":
            self.outbox.done(pending)
            deliveries.labels("ok").inc()
        elif result == "gone":
            self.outbox.done(pending)
            dropped = self.outbox.clear()
            self.disabled = True
            deliveries.labels("disabled").inc()
            deliveries.labels("dropped").inc(len(dropped))
            log.error("webhook %s answered 410 Gone: disabled until restart", url)
        elif pending.attempt >= self.config.webhook_retries:
            self.outbox.done(pending)
            deliveries.labels("failed").inc()
            log.error(
                "webhook %s: gave up on %s %s after %d attempts (%s)",
                url, event.type, event.id, pending.attempt + 1, problem,
            )  # fmt: skip
        else:
            wait = parse_retry_after(retry_after, time.time())
            delay = retry_delay(
                pending.attempt,
                self.config.webhook_retry_delay,
                self.config.webhook_retry_max,
                self.rand(),
                wait,
            )
            self.outbox.retry(pending, self.clock() + delay)
            deliveries.labels("retry").inc()
            log.warning(
                "webhook %s: %s for %s %s; retry %d in %.1f s",
                url, problem, event.type, event.id, pending.attempt, delay,
            )  # fmt: skip

    async def close(self, grace: float) -> None:
        """Deliver what falls due within ``grace`` seconds, then drop the rest (logged)."""
        self._deadline = self.clock() + grace
        self._wake.set()
        if self._worker is not None:
            await asyncio.wait([self._worker], timeout=grace)
        for task in [self._worker, *self._flights]:
            if task is not None:
                task.cancel()
        left = len(self.outbox)
        if left:
            self.metrics.webhook_deliveries.labels("dropped").inc(left)
            url = _safe(self.url)
            log.warning("webhook %s: %d undelivered event(s) dropped at shutdown", url, left)


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
