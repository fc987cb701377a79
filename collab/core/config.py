"""Every setting of a collab server, with its default, in one frozen dataclass.

Rule: pure. ``cli`` maps flags and ``COLLAB_*`` variables onto it; nothing else
reads the environment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from .webhooks import DEFAULT_EVENTS

__all__ = ["Config", "FsyncPolicy", "check_base_path"]

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
    max_message_bytes: int = 16 << 20  # HTTP bodies; sockets: ``limits.message_bound``
    # permessage-deflate with clients that offer it (``server.frames``).
    compression: bool = True
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
    # Quotas (0 turns one off): a document's encoded size (close 1009 / HTTP
    # 413 past it), WebSockets in all (HTTP 503), HTTP API requests per client
    # address (a token bucket; HTTP 429). ``/readyz`` fails below ``min_free_bytes``.
    max_document_bytes: int = 64 << 20
    max_connections: int = 10000
    api_rate: float = 50.0
    api_rate_burst: int = 200
    min_free_bytes: int = 64 << 20
    web_dir: str | None = None
    jwt_secret: str | None = None
    # Access control is on when any key is set (``server.tokens.JwtAuthorizer``):
    # HS256 secrets (``jwt_secret`` and ``jwt_secrets`` all verify: rotation),
    # PEM public-key files, a JWKS file (re-read when it changes), and the
    # ``aud``/``iss`` tokens must carry when set.
    jwt_secrets: tuple[str, ...] = field(default_factory=tuple)
    jwt_public_keys: tuple[str, ...] = field(default_factory=tuple)
    jwks_file: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    allow_origins: tuple[str, ...] = field(default_factory=tuple)
    log_level: str = "info"
    log_format: Literal["text", "json"] = "text"
    # Operations. Forwarding headers are believed only from these networks
    # (``core.clients``); TLS needs both files; ``base_path`` ("/collab", no
    # trailing slash, "" = the root) prefixes every URL the server answers.
    trusted_proxies: tuple[str, ...] = field(default_factory=tuple)
    certfile: str | None = None
    keyfile: str | None = None
    base_path: str = ""
    # Cluster mode (``storage.redis``): documents in Redis, not ``data_dir``.
    # ``redis_timeout``: seconds an update may wait for Redis before its
    # clients are closed with 1013; ``redis_heartbeat_ttl``: seconds until a
    # silent process counts as dead; ``redis_retention``: seconds of compacted
    # stream kept for lagging readers; ``redis_durability``: ``strict`` refuses
    # a Redis without ``appendfsync always``. ``workers``: processes on one port.
    redis_url: str | None = None
    redis_prefix: str = "collab"
    redis_timeout: float = 5.0
    redis_heartbeat_ttl: float = 5.0
    redis_retention: float = 10.0
    redis_durability: Literal["strict", "relaxed"] = "strict"
    workers: int = 1
    # Version history (``server.history``): a version is cut ``history_idle``
    # seconds after the last change, at most ``history_max_interval`` after the
    # first; automatic versions older than ``history_keep_all`` are thinned and
    # at most ``history_max_versions`` kept (named ones always are).
    history: bool = True
    history_idle: float = 60.0
    history_max_interval: float = 600.0
    history_keep_all: float = 86400.0
    history_max_versions: int = 500
    # Webhooks (``server.webhooks``): POSTed to every URL, signed with every
    # ``whsec_`` secret; ``document.changed`` after ``webhook_debounce`` s quiet,
    # at most ``webhook_max_wait`` s after the first change; retries back off from
    # ``webhook_retry_delay`` to ``webhook_retry_max`` s, ``webhook_retries`` times.
    webhooks: tuple[str, ...] = field(default_factory=tuple)
    webhook_secrets: tuple[str, ...] = field(default_factory=tuple)
    webhook_events: tuple[str, ...] = DEFAULT_EVENTS
    webhook_include_text: bool = False
    webhook_debounce: float = 2.0
    webhook_max_wait: float = 10.0
    webhook_timeout: float = 10.0
    webhook_retries: int = 10
    webhook_retry_delay: float = 5.0
    webhook_retry_max: float = 1800.0
    webhook_queue: int = 1000
    webhook_grace: float = 5.0


_BASE_PATH = re.compile(r"(/[A-Za-z0-9_~.-]+)*")


def check_base_path(path: str) -> str:
    """``path`` as a ``base_path``: ``"/collab/"`` → ``"/collab"``, ``"/"`` → ``""``.

    Raises:
        ValueError: not a plain absolute path (letters, digits, ``_~.-``, ``/``).
    """
    normal = path.rstrip("/")
    segments = normal.split("/")[1:]
    if not _BASE_PATH.fullmatch(normal) or any(s in (".", "..") for s in segments):
        raise ValueError(f"must be a path like /collab, not {path!r}")
    return normal
