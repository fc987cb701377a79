"""The storage seam: what the server asks of a document store.

Rule: no tornado, no asyncio; a store implements ``Store`` and hands out ``Log``s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["DocInfo", "Log", "Store", "StoreLocked", "Stored"]


class StoreLocked(Exception):
    """Another process (a running server) holds the data directory."""


@dataclass
class Stored:
    """What ``load`` found: updates to apply in order, and the log to append to."""

    updates: list[bytes] = field(default_factory=list)
    seq: int = 0
    records: int = 0  # how many of ``updates`` came from logs (not the snapshot)
    dropped_bytes: int = 0


@dataclass(frozen=True)
class DocInfo:
    name: str
    size: int
    modified: float


class Log(Protocol):
    """An open, append-only update log."""

    size: int

    def append(self, payload: bytes) -> None:
        """Write one record through to the OS (survives a killed process)."""

    def sync(self) -> None:
        """fsync what was appended (survives a machine crash)."""

    def close(self) -> None: ...


class Store(Protocol):
    def load(self, name: str) -> Stored: ...
    def open_log(self, name: str, seq: int) -> Log: ...
    def save_snapshot(self, name: str, state: bytes, seq: int) -> None: ...
    def delete(self, name: str) -> bool: ...
    def info(self, name: str) -> DocInfo | None: ...
    def list(self) -> list[DocInfo]: ...
