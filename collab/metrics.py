"""Prometheus metrics of one server (each ``Metrics`` has its own registry)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

__all__ = ["Metrics"]


class Metrics:
    """The counters a collab server exports at ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Gauge("collab_connections", "Open WebSocket connections", registry=r)
        self.documents = Gauge("collab_documents_loaded", "Documents in memory", registry=r)
        self.updates_in = Counter(
            "collab_updates_in", "Document updates applied from clients", registry=r
        )
        self.updates_out = Counter(
            "collab_updates_out", "Document update frames sent to clients", registry=r
        )
        self.bytes_in = Counter("collab_bytes_in", "Bytes received from clients", registry=r)
        self.bytes_out = Counter("collab_bytes_out", "Bytes sent to clients", registry=r)
        self.persist_seconds = Histogram(
            "collab_persist_seconds",
            "Time to make updates durable (fsync) or write a snapshot",
            ["operation"],
            registry=r,
        )
        self.errors = Counter(
            "collab_connection_errors", "Connections closed for an error", ["code"], registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
