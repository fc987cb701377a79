"""Every setting of a collab server, with its default, in one frozen dataclass.

Rule: pure. ``cli`` maps flags and ``COLLAB_*`` variables onto it; nothing else
reads the environment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Config", "FsyncPolicy"]

FsyncPolicy = Literal["always", "interval", "never"]


@dataclass(frozen=True)
class Config:
    """Server settings. ``data_dir=None`` keeps documents in memory only."""

    host: str = "127.0.0.1"
    port: int = 8888
    data_dir: str | None = "./data"
    fsync: FsyncPolicy = "interval"
    fsync_interval: float = 1.0
    idle_timeout: float = 30.0
    compact_bytes: int = 1 << 20
    ping_interval: float = 10.0
    ping_timeout: float = 10.0
    max_message_bytes: int = 16 << 20
    # Limits (0 turns one off). Rates are per connection: a token bucket of
    # ``rate_*_burst`` refilled at ``rate_*`` per second; empty closes with 1008.
    rate_messages: float = 200.0
    rate_messages_burst: int = 1000
    rate_bytes: float = float(1 << 20)
    rate_bytes_burst: int = 32 << 20
    max_connections_per_ip: int = 100
    max_connections_per_doc: int = 200
    max_documents: int = 1000
    max_pending_bytes: int = 4 << 20
    max_awareness_bytes: int = 32 << 10
    max_awareness_clients: int = 16
    max_header_bytes: int = 64 << 10
    header_timeout: float = 30.0
    web_dir: str | None = None
    jwt_secret: str | None = None
    allow_origins: tuple[str, ...] = field(default_factory=tuple)
    log_level: str = "info"
