"""A store that keeps documents in this process only (for embedding and tests)."""

from __future__ import annotations

from .base import DocInfo, Stored

__all__ = ["MemoryLog", "MemoryStore"]


class MemoryLog:
    def __init__(self, records: list[bytes]) -> None:
        self.records = records
        self.size = sum(len(r) for r in records)

    def append(self, payload: bytes) -> None:
        self.records.append(payload)
        self.size += len(payload)

    def sync(self) -> None:
        pass

    def close(self) -> None:
        pass


class MemoryStore:
    """Keeps documents in this process only (for embedding and tests)."""

    def __init__(self) -> None:
        self._docs: dict[str, tuple[bytes | None, dict[int, list[bytes]]]] = {}

    def load(self, name: str) -> Stored:
        snap, logs = self._docs.get(name, (None, {}))
        stored = Stored()
        if snap is not None:
            stored.updates.append(snap)
        for seq in sorted(logs):
            stored.updates += logs[seq]
            stored.records += len(logs[seq])
            stored.seq = seq
        return stored

    def open_log(self, name: str, seq: int) -> MemoryLog:
        _snap, logs = self._docs.setdefault(name, (None, {}))
        return MemoryLog(logs.setdefault(seq, []))

    def save_snapshot(self, name: str, state: bytes, seq: int) -> None:
        _, logs = self._docs.get(name, (None, {}))
        self._docs[name] = (state, {s: r for s, r in logs.items() if s >= seq})

    def delete(self, name: str) -> bool:
        return self._docs.pop(name, None) is not None

    def info(self, name: str) -> DocInfo | None:
        if name not in self._docs:
            return None
        snap, logs = self._docs[name]
        size = len(snap or b"") + sum(len(r) for recs in logs.values() for r in recs)
        return DocInfo(name, size, 0.0)

    def list(self) -> list[DocInfo]:
        return [info for name in sorted(self._docs) if (info := self.info(name))]
