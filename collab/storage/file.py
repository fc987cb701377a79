"""Documents on disk: a snapshot plus an append-only log of updates.

Rule: synchronous file I/O only; no tornado, no asyncio, no clock. The hub
decides when to call what (and runs big writes off the event loop).

Per document, with ``stem = names.to_stem(name)``::

    <stem>.snap       MAGIC_SNAP, version, u32 len, u32 crc32, body
                      body = u64 log_seq, u16 name_len, name, full Yjs state
    <stem>.<seq>.log  MAGIC_LOG, version, u16 name_len, name, then records
                      record = u32 len, u32 crc32(payload), payload (one update)

Loading reads the snapshot, then every log whose ``seq`` is at least the
snapshot's ``log_seq``, in order. A record that is cut short or fails its
checksum ends its log: it and anything after it are dropped (logged) and the
file is truncated there, so later appends stay readable. Compaction opens log
``seq + 1`` first, then writes the snapshot naming ``seq + 1`` atomically (temp
file, fsync, rename, fsync directory) and only then removes older logs; a crash
at any point leaves a state that replays to the same document, because Yjs
updates are idempotent. An unreadable snapshot is moved aside to
``<stem>.snap.corrupt`` and the document refuses to open until an operator
deals with it: serving it empty would let the empty state overwrite the real one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

from ..core import names
from ..core.errors import DocumentUnavailable
from .base import DocInfo, Stored, StoreLocked

__all__ = ["FileLog", "FileStore"]

log = logging.getLogger("collab.store")

MAGIC_SNAP = b"CSNP"
MAGIC_LOG = b"CLOG"
VERSION = 1
_RECORD = struct.Struct("<II")
_SNAP_HEAD = struct.Struct("<QH")


# -- file store -------------------------------------------------------------


def _frame(payload: bytes) -> bytes:
    return _RECORD.pack(len(payload), zlib.crc32(payload)) + payload


def _name_field(name: str) -> bytes:
    raw = name.encode()
    return struct.pack("<H", len(raw)) + raw


def _read_records(data: bytes, start: int) -> tuple[list[bytes], int]:
    """Return the complete, intact records from ``start`` and where they end."""
    records, pos = [], start
    while pos + _RECORD.size <= len(data):
        length, crc = _RECORD.unpack_from(data, pos)
        end = pos + _RECORD.size + length
        payload = data[pos + _RECORD.size : end]
        if end > len(data) or zlib.crc32(payload) != crc:
            break
        records.append(payload)
        pos = end
    return records, pos


def _log_header(name: str) -> bytes:
    return MAGIC_LOG + bytes([VERSION]) + _name_field(name)


def _header_end(data: bytes) -> int:
    """Offset where records start, or -1 if the header is not ours."""
    if len(data) < 7 or data[:4] != MAGIC_LOG or data[4] != VERSION:
        return -1
    (name_len,) = struct.unpack_from("<H", data, 5)
    return 7 + name_len if 7 + name_len <= len(data) else -1


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileLog:
    """Append handle on ``<stem>.<seq>.log``; creates it with a header."""

    def __init__(self, path: Path, name: str) -> None:
        self.path = path
        new = not path.exists()
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if new:
            os.write(self._fd, _log_header(name))
        self.size = os.fstat(self._fd).st_size
        self._dir_synced = not new

    def append(self, payload: bytes) -> None:
        """Write one record through to the OS, whole or not at all.

        Raises:
            OSError: the record could not be written (e.g. ENOSPC); the log is
                left as it was, so later records never follow a torn one.
        """
        record = _frame(payload)
        try:
            written = os.write(self._fd, record)
        except OSError:
            os.ftruncate(self._fd, self.size)
            raise
        if written != len(record):  # a nearly full disk writes short instead of failing
            os.ftruncate(self._fd, self.size)
            raise OSError(errno.ENOSPC, f"short write to {self.path.name}")
        self.size += len(record)

    def sync(self) -> None:
        os.fsync(self._fd)
        if not self._dir_synced:
            _fsync_dir(self.path.parent)
            self._dir_synced = True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class FileStore:
    """Snapshots and logs under one directory.

    ``read_only`` stores never truncate, move or write anything (``collab
    export`` next to a running server).
    """

    def __init__(self, root: Path | str, read_only: bool = False) -> None:
        self.root = Path(root)
        self.read_only = read_only
        if not read_only:
            self.root.mkdir(parents=True, exist_ok=True)
        self._lock_fd = -1

    def acquire(self) -> None:
        """Take the directory's lock so no second writer can use it.

        Raises:
            StoreLocked: another process holds it.
        """
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreLocked(
                f"data directory {self.root} is in use by another collab process"
            ) from None
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()

    # paths
    def _snap(self, stem: str) -> Path:
        return self.root / f"{stem}.snap"

    def _log(self, stem: str, seq: int) -> Path:
        return self.root / f"{stem}.{seq}.log"

    def _logs_from(self, stem: str, start: int) -> list[tuple[int, Path]]:
        """The logs ``start``, ``start + 1``, ... that exist, looked up by name.

        Logs from the snapshot's ``log_seq`` on are consecutive: one is created
        only just before the snapshot that names it. No directory scan, so
        opening a document costs the same however many documents there are.
        """
        found = []
        while (path := self._log(stem, start)).exists():
            found.append((start, path))
            start += 1
        return found

    def _remove_logs_below(self, stem: str, seq: int) -> None:
        while seq > 0 and (path := self._log(stem, seq - 1)).exists():
            path.unlink()
            seq -= 1

    def _snapshot_seq(self, snap: Path) -> int:
        try:
            with open(snap, "rb") as f:
                head = f.read(13 + 8)
        except FileNotFoundError:
            return 0
        return struct.unpack_from("<Q", head, 13)[0] if len(head) == 21 else 0

    def _logs(self, stem: str) -> list[tuple[int, Path]]:
        """Every log of ``stem``, found by scanning the directory (rare operations)."""
        found = []
        for path in self.root.glob(f"{stem}.*.log"):
            seq = path.name[len(stem) + 1 : -4]
            if seq.isdigit():
                found.append((int(seq), path))
        return sorted(found)

    # reading
    def load(self, name: str) -> Stored:
        """Read a document's snapshot and logs.

        Raises:
            DocumentUnavailable: the snapshot is unreadable (it has been moved
                aside) or was moved aside before; the document must not open.
        """
        stem = names.to_stem(name)
        snap = self._snap(stem)
        corrupt = snap.with_name(snap.name + ".corrupt")
        if corrupt.exists():
            raise DocumentUnavailable(f"snapshot of {name!r} is corrupt; see {corrupt}")
        stored = Stored()
        if snap.exists():
            state, stored.seq = self._read_snapshot(snap, corrupt, name)
            stored.updates.append(state)
        if not self.read_only:
            self._remove_logs_below(stem, stored.seq)  # compacted; removal was interrupted
        for seq, path in self._logs_from(stem, stored.seq):
            records = self._read_log(path, stored)
            stored.updates += records
            stored.records += len(records)
            stored.seq = seq
        return stored

    def _read_snapshot(self, snap: Path, corrupt: Path, name: str) -> tuple[bytes, int]:
        data = snap.read_bytes()
        ok = len(data) >= 13 and data[:4] == MAGIC_SNAP and data[4] == VERSION
        if ok:
            length, crc = _RECORD.unpack_from(data, 5)
            body = data[13 : 13 + length]
            ok = len(body) == length and zlib.crc32(body) == crc
        if not ok:
            if self.read_only:
                raise DocumentUnavailable(f"snapshot of {name!r} is corrupt")
            os.replace(snap, corrupt)
            log.error("snapshot %s is corrupt: moved to %s; document refused", snap, corrupt)
            raise DocumentUnavailable(f"snapshot of {name!r} is corrupt")
        seq, name_len = _SNAP_HEAD.unpack_from(body)
        return body[_SNAP_HEAD.size + name_len :], seq

    def _read_log(self, path: Path, stored: Stored) -> list[bytes]:
        data = path.read_bytes()
        start = _header_end(data)
        if start < 0:
            log.error("log %s has no valid header; ignoring its %d bytes", path, len(data))
            stored.dropped_bytes += len(data)
            if not self.read_only:
                path.replace(path.with_name(path.name + ".corrupt"))
            return []
        records, end = _read_records(data, start)
        if end < len(data):
            log.warning(
                "log %s: dropped %d bytes of torn or corrupt tail after %d records",
                path,
                len(data) - end,
                len(records),
            )
            stored.dropped_bytes += len(data) - end
            if not self.read_only:
                os.truncate(path, end)
        return records

    # writing
    def open_log(self, name: str, seq: int) -> FileLog:
        return FileLog(self.root / f"{names.to_stem(name)}.{seq}.log", name)

    def save_snapshot(self, name: str, state: bytes, seq: int) -> None:
        """Atomically replace the snapshot, then drop the logs it covers."""
        stem = names.to_stem(name)
        body = _SNAP_HEAD.pack(seq, len(name.encode())) + name.encode() + state
        data = MAGIC_SNAP + bytes([VERSION]) + _frame(body)
        snap = self._snap(stem)
        tmp = snap.with_name(snap.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, snap)
        _fsync_dir(self.root)
        self._remove_logs_below(stem, seq)

    def delete(self, name: str) -> bool:
        stem = names.to_stem(name)
        paths = [self._snap(stem), *(p for _, p in self._logs(stem))]
        existed = False
        for path in paths:
            if path.exists():
                path.unlink()
                existed = True
        if existed:
            _fsync_dir(self.root)
        return existed

    # listing
    def info(self, name: str) -> DocInfo | None:
        stem = names.to_stem(name)
        snap = self._snap(stem)
        corrupt = snap.with_name(snap.name + ".corrupt")  # still exists, if refused
        logs = self._logs_from(stem, self._snapshot_seq(snap))
        paths = [snap, corrupt, *(p for _, p in logs)]
        stats = [p.stat() for p in paths if p.exists()]
        if not stats:
            return None
        return DocInfo(name, sum(s.st_size for s in stats), max(s.st_mtime for s in stats))

    def list(self) -> list[DocInfo]:
        stems = set()
        for path in self.root.iterdir():
            if path.suffix in (".snap", ".log") or path.name.endswith(".snap.corrupt"):
                stems.add(path.name.split(".", 1)[0])
        found = []
        for stem in stems:
            name = names.from_stem(stem) or self._name_in_headers(stem)
            info = self.info(name) if name is not None else None
            if info is not None:
                found.append(info)
        return sorted(found, key=lambda d: d.name)

    def _name_in_headers(self, stem: str) -> str | None:
        for _, path in self._logs(stem):
            data = path.read_bytes()[:512]
            if _header_end(data) > 0:
                (length,) = struct.unpack_from("<H", data, 5)
                return data[7 : 7 + length].decode(errors="replace")
        snap = self._snap(stem)
        if snap.exists():
            data = snap.read_bytes()[: 13 + _SNAP_HEAD.size + 512]
            if len(data) > 13 + _SNAP_HEAD.size:
                _, length = _SNAP_HEAD.unpack_from(data, 13)
                start = 13 + _SNAP_HEAD.size
                return data[start : start + length].decode(errors="replace")
        return None
