"""Prometheus metrics of one server (each ``Metrics`` has its own registry).

The per-message counters are plain integers that the hub bumps on the hot path;
they are turned into Prometheus samples only when ``/metrics`` is scraped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["Metrics"]

_COUNTERS = {
    "updates_in": "Document updates applied from clients",
    "updates_out": "Document update and awareness frames sent to clients",
    "bytes_in": "Bytes received from clients",
    "bytes_out": "Bytes sent to clients",
    "merged": "Frames merged with others that arrived together before being relayed",
    "awareness_foreign": "Awareness entries dropped: they named another connection's client id",
}
_SAMPLED = {
    "store_damaged": "Damaged log files or records the store set aside (see its log)",
    "extension_errors": "Extension hooks that raised (logged)",
    "history_versions": "Versions of documents cut since start",
    "history_failures": "Versions that could not be stored (history only: logged)",
    "history_damaged": "Version files found damaged (not listed; logged)",
}


class Metrics:
    """The counters a collab server exports at ``/metrics``."""

    def __init__(self) -> None:
        self.updates_in = 0
        self.updates_out = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.merged = 0
        self.awareness_foreign = 0
        self.connections = 0
        self.documents: Callable[[], int] = lambda: 0
        self.sampled: dict[str, Callable[[], int]] = {}
        # Cluster mode: is Redis reachable, and with which appendfsync (set by the hub).
        self.redis_up: Callable[[], int] | None = None
        self.redis_appendfsync: Callable[[], str] = lambda: "unknown"
        self.registry = CollectorRegistry()
        self.persist_seconds = Histogram(
            "collab_persist_seconds",
            "Time to make updates durable (fsync) or write a snapshot",
            ["operation"],
            registry=self.registry,
        )
        self.loop_lag = Histogram(
            "collab_loop_lag_seconds",
            "How late the event loop ran a timer: what every document's messages wait",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=self.registry,
        )
        self.errors = Counter(
            "collab_connection_errors",
            "Connections closed for an error, by close code",
            ["code"],
            registry=self.registry,
        )
        self.refusals = Counter(
            "collab_refusals",
            "Requests, connections and updates refused by a quota, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.webhook_events = Counter(
            "collab_webhook_events",
            "Webhook events queued for delivery, by type (once per endpoint)",
            ["type"],
            registry=self.registry,
        )
        self.webhook_deliveries = Counter(
            "collab_webhook_deliveries",
            "Webhook delivery attempts and give-ups, by outcome "
            "(ok, retry, failed, dropped, disabled)",
            ["outcome"],
            registry=self.registry,
        )
        self.webhook_queue = Gauge(
            "collab_webhook_queue",
            "Webhook events waiting or in flight, all endpoints",
            registry=self.registry,
        )
        self.webhook_seconds = Histogram(
            "collab_webhook_seconds",
            "Time a webhook receiver took to answer",
            registry=self.registry,
        )
        self.registry.register(_Sampler(self))

    def sample(self, documents: Callable[[], int], **counters: Callable[[], int]) -> None:
        """Read the loaded-document gauge and the ``_SAMPLED`` counters from these."""
        self.documents = documents
        self.sampled.update(counters)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Sampler(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        yield GaugeMetricFamily("collab_connections", "Open WebSocket connections", m.connections)
        yield GaugeMetricFamily("collab_documents_loaded", "Documents in memory", m.documents())
        for name, text in _COUNTERS.items():
            yield CounterMetricFamily(f"collab_{name}", text, getattr(m, name))
        for name, text in _SAMPLED.items():
            read = m.sampled.get(name)
            yield CounterMetricFamily(f"collab_{name}", text, read() if read is not None else 0)
        if m.redis_up is not None:
            yield GaugeMetricFamily(
                "collab_redis_up", "1 while Redis answers (cluster mode)", m.redis_up()
            )
            durability = GaugeMetricFamily(
                "collab_redis_durability",
                "Redis's appendfsync setting, as a label",
                labels=["appendfsync"],
            )
            durability.add_metric([m.redis_appendfsync()], 1)
            yield durability
