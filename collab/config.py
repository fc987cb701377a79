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
    ping_timeout: float = 20.0
    max_message_bytes: int = 16 << 20
    web_dir: str | None = None
    jwt_secret: str | None = None
    allow_origins: tuple[str, ...] = field(default_factory=tuple)
    log_level: str = "info"
