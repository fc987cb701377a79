"""What the server as a whole lets clients take: connections, and HTTP API requests.

The rules are ``core.limits``; this module holds their state for one hub and
counts every refusal in ``collab_refusals_total{reason=...}``:

* ``connections``: WebSockets in all, past ``max_connections`` (HTTP 503);
* ``connections_per_ip``: from one address, past ``max_connections_per_ip`` (429);
* ``api_rate``: HTTP API requests from one address, past ``api_rate`` (429);
* ``document_bytes``: an update that could grow a document past
  ``max_document_bytes`` (close 1009 / HTTP 413; counted by the document).

Each refusal of a connection or request carries ``retry_after`` for the
HTTP ``Retry-After`` header.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable

from ..core.config import Config
from ..core.errors import Overloaded, PolicyViolation
from ..core.limits import Counter, KeyedBuckets
from .metrics import Metrics

__all__ = ["ApiRate", "Connections", "Quotas"]


class Connections(Counter):
    """WebSockets open or handshaking, per client address and in all."""

    def __init__(self, per_ip: int, total: int, metrics: Metrics) -> None:
        super().__init__(per_ip, total)
        self.metrics = metrics

    def acquire(self, key: Hashable) -> None:
        """Count one more connection from ``key`` (an address).

        Raises:
            Overloaded: ``max_connections`` are open (HTTP 503).
            PolicyViolation: ``key`` has ``max_connections_per_ip`` (HTTP 429).
        """
        try:
            super().acquire(key)
        except Overloaded:
            self.metrics.refusals.labels("connections").inc()
            raise
        except PolicyViolation:
            self.metrics.refusals.labels("connections_per_ip").inc()
            raise


class ApiRate:
    """HTTP API requests per client address: a token bucket each."""

    def __init__(
        self,
        rate: float,
        burst: int,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.buckets = KeyedBuckets(rate, burst)
        self.metrics = metrics
        self.clock = clock

    def charge(self, address: str) -> None:
        """Count one request from ``address``.

        Raises:
            PolicyViolation: too many requests (HTTP 429); ``retry_after`` says when to retry.
        """
        wait = self.buckets.take(address, self.clock())
        if wait > 0:
            self.metrics.refusals.labels("api_rate").inc()
            rate = self.buckets.rate
            raise PolicyViolation(f"rate limit: over {rate:g} requests/s", retry_after=wait)


class Quotas:
    """The quotas of one hub."""

    def __init__(self, config: Config, metrics: Metrics) -> None:
        self.connections = Connections(
            config.max_connections_per_ip, config.max_connections, metrics
        )
        self.api = ApiRate(config.api_rate, config.api_rate_burst, metrics)
