"""Delivery to one webhook endpoint: a bounded queue and a worker that sends it.

Rule: asyncio only, no tornado: the HTTP client is a ``Transport`` the caller
injects (``collab.tornado.webhooks``). At most ``CONCURRENCY`` requests are in
flight per endpoint; answers are judged by ``core.webhooks.outcome`` and
failures retried after ``retry_delay``; ``core.outbox`` keeps what waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import NamedTuple, Protocol

from ..core.config import Config
from ..core.outbox import Outbox, Pending
from ..core.webhooks import (
    Event,
    encode_body,
    outcome,
    parse_retry_after,
    retry_delay,
    sign,
)
from .metrics import Metrics

__all__ = ["CONCURRENCY", "Endpoint", "Reply", "Transport", "safe_url"]

log = logging.getLogger("collab.webhooks")

CONCURRENCY = 4  # requests in flight per endpoint
USER_AGENT = "collab-webhooks"


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


def safe_url(url: str) -> str:
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
        self.turns = 0  # times the worker woke up (it must sleep while nothing can be sent)

    def put(self, event: Event) -> None:
        if self.disabled or self._deadline is not None:
            self.metrics.webhook_deliveries.labels("dropped").inc()
            return
        dropped = self.outbox.put(event, self.clock())
        self.metrics.webhook_events.labels(event.type).inc()
        if dropped is not None:
            self.metrics.webhook_deliveries.labels("dropped").inc()
            log.warning("webhook %s: queue full, dropped %s", safe_url(self.url), dropped.type)
        self._wake.set()
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            while True:
                self.turns += 1
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
                full = len(self._flights) >= CONCURRENCY  # then a landing flight wakes us
                wait = None if earliest is None or full else max(0.0, earliest - now)
                if self._deadline is not None:
                    wait = max(0.0, min(wait if wait is not None else 1.0, self._deadline - now))
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
        except Exception:
            log.exception("webhook %s: worker failed", safe_url(self.url))
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
        event, url = pending.event, safe_url(self.url)
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
            url = safe_url(self.url)
            log.warning("webhook %s: %d undelivered event(s) dropped at shutdown", url, left)
