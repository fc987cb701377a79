"""Blocking work on a data directory: read and repair a document, create logs, snapshots.

Rule: synchronous file I/O only, called in ``FileStore``'s threads (``append``
alone calls ``write_whole`` on the event loop). The byte format is ``records``.

Per document, with ``stem = names.to_stem(name)``: ``<stem>.snap`` names the
first log it does not cover, ``log_seq``; ``<stem>.<seq>.log`` are the logs
from there on, found by probing consecutive numbers (no directory scan, so
opening costs the same however many documents there are). ``read`` repairs
what a crash leaves: a torn last record is truncated (warning); a damaged log
is copied aside to ``<file>.corrupt`` (``.corrupt.N``) and rewritten with every
record that is provably valid (error, counted as damaged); an unreadable
snapshot is moved aside to ``<stem>.snap.corrupt`` and the document refused
until an operator deals with it, since serving it empty would let the empty
state overwrite the real one. A file of a newer format is refused and left as
it is. A ``read_only`` directory is never written, moved or truncated.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..core import names
from ..core.errors import DocumentUnavailable
from . import records as fmt
from .base import Loaded

__all__ = [
    "Directory",
    "LogFile",
    "create_log",
    "fsync_dir",
    "records_after",
    "write_new",
    "write_whole",
]

log = logging.getLogger("collab.store")


@dataclass(eq=False)
class LogFile:
    """One ``<stem>.<seq>.log`` of an open document; records are numbered per load."""

    seq: int
    path: Path
    version: int
    start: int  # header length
    size: int  # bytes in the file
    first: int  # number of its first record
    written: int  # number of its last record (``first - 1``: none yet)
    synced: int  # its records up to this one are fsynced
    fd: int = -1  # open (O_APPEND) while it may still need writing or fsyncing
    dir_synced: bool = True  # its directory entry is durable
    entry: int = 0  # when not: its number among the entries the store created (``FileStore``)
    torn: bool = False  # a failed write could not be truncated back

    @property
    def dirty(self) -> bool:
        return self.fd >= 0 and self.synced < self.written


def write_whole(file: LogFile, data: bytes) -> None:
    """Append ``data`` to ``file``, whole or not at all.

    Raises:
        OSError: not written (a short write is ENOSPC); the file is as it was,
            unless truncating it back failed too (then ``file.torn``).
    """
    try:
        if os.write(file.fd, data) != len(data):  # a nearly full disk writes short
            raise OSError(errno.ENOSPC, f"short write to {file.path.name}")
    except OSError:
        file.torn = True
        os.ftruncate(file.fd, file.size)  # if this fails too, ``torn`` stays set
        file.torn = False
        raise
    file.size += len(data)


def create_log(path: Path, seq: int, name: str, first: int, body: bytes = b"") -> LogFile:
    """Create log ``path`` holding a header and ``body`` (framed records).

    Raises:
        OSError: it exists already or could not be written; nothing is left behind.
    """
    header = fmt.encode_log_header(name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
    file = LogFile(seq, path, fmt.LOG_VERSION, len(header), 0, first, first - 1, first - 1, fd)
    file.dir_synced = False
    try:
        write_whole(file, header + body)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    return file


def records_after(upto: int, files: Sequence[LogFile]) -> bytes:
    """The records numbered above ``upto`` in ``files``, framed as version 2.

    A record copied into a later file (by an earlier compaction) is taken from there.

    Raises:
        OSError: a file no longer holds what was written to it.
    """
    out = []
    for i, file in enumerate(files):
        stop = files[i + 1].first if i + 1 < len(files) else file.written + 1
        low = max(upto + 1, file.first)
        if low >= stop:
            continue
        with open(file.path, "rb") as f:
            data = f.read(file.size)
        found = fmt.parse_records(data, file.start, file.version)
        count = file.written - file.first + 1
        if len(data) != file.size or len(found.records) != count or found.lost or found.torn:
            raise OSError(errno.EIO, f"{file.path.name} changed on disk")
        out += [fmt.encode_record(r) for r in found.records[low - file.first : stop - file.first]]
    return b"".join(out)


def fsync_dir(path: Path) -> None:
    """fsync directory ``path`` (so names created, renamed or removed in it last)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_new(path: Path, data: bytes | Sequence[bytes]) -> None:
    """Create ``path`` (it must not exist) holding ``data`` (or its pieces, in turn), fsynced."""
    with open(path, "xb") as f:
        if isinstance(data, bytes):
            f.write(data)
        else:
            f.writelines(data)
        f.flush()
        os.fsync(f.fileno())


def _replace(path: Path, data: bytes | Sequence[bytes]) -> None:
    """Replace ``path`` by ``data`` atomically: temp file, fsync, rename, fsync dir."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)  # left by a crash
    try:
        write_new(tmp, data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def _set_aside(path: Path, data: bytes) -> str:
    """Keep ``data`` (a damaged file) as ``<path>.corrupt`` or ``.corrupt.N``."""
    for i in itertools.count():
        aside = path.with_name(path.name + (".corrupt" if i == 0 else f".corrupt.{i}"))
        with contextlib.suppress(FileExistsError):
            write_new(aside, data)
            return aside.name
    raise AssertionError("unreachable")


class Directory:
    """The files of every document under ``root``."""

    def __init__(self, root: Path, read_only: bool) -> None:
        self.root = root
        self.read_only = read_only

    def snap(self, stem: str) -> Path:
        return self.root / f"{stem}.snap"

    def log_path(self, name: str, seq: int) -> Path:
        return self.root / f"{names.to_stem(name)}.{seq}.log"

    def logs_from(self, stem: str, seq: int) -> Iterator[tuple[int, Path]]:
        """The logs ``seq``, ``seq + 1``, ... that exist, looked up by name."""
        while (path := self.root / f"{stem}.{seq}.log").exists():
            yield seq, path
            seq += 1

    def logs(self, stem: str) -> list[tuple[int, Path]]:
        """Every log of ``stem``, found by scanning the directory (rare operations)."""
        found = []
        for path in self.root.glob(f"{stem}.*.log"):
            seq = path.name[len(stem) + 1 : -4]
            if seq.isdigit():
                found.append((int(seq), path))
        return sorted(found)

    def _remove_logs_below(self, stem: str, seq: int) -> None:
        while seq > 0 and (path := self.root / f"{stem}.{seq - 1}.log").exists():
            path.unlink()
            seq -= 1

    def read(self, name: str, sync: bool = False) -> tuple[Loaded, list[LogFile], int, int]:
        """Read and repair ``name``; open its newest log for appending if it is version 2.

        ``sync``: fsync its logs and the directory before returning, so that what is
        served from now on is on disk even if it was only in the page cache (a killed
        process's last records, not fsynced yet), and so is a repair.

        Returns:
            What loaded, its log files, the number of the next log, how many
            files were damaged.

        Raises:
            DocumentUnavailable: the snapshot is corrupt (now or before), or a
                file is of a newer format (``records.NewerFormat``).
        """
        stem = names.to_stem(name)
        loaded, damaged, base = Loaded(), 0, 0
        snap = self.snap(stem)
        corrupt = snap.with_name(snap.name + ".corrupt")
        if corrupt.exists():
            raise DocumentUnavailable(f"snapshot of {name!r} is corrupt; see {corrupt.name}")
        if snap.exists():
            base, loaded.state = self._read_snapshot(snap, corrupt, name)
        if not self.read_only:
            self._remove_logs_below(stem, base)  # compacted; the removal was interrupted
        files: list[LogFile] = []
        for seq, path in self.logs_from(stem, base):
            first = len(loaded.records) + 1
            version, start, size, bad = self._read_log(path, name, loaded)
            last = len(loaded.records)
            files.append(LogFile(seq, path, version, start, size, first, last, last))
            damaged += bad
        if sync and files and not self.read_only:
            for file in files:
                fd = os.open(file.path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            fsync_dir(self.root)
        if files and files[-1].version == fmt.LOG_VERSION and not self.read_only:
            try:
                files[-1].fd = os.open(files[-1].path, os.O_WRONLY | os.O_APPEND)
            except OSError as exc:  # read-only file system, lost permissions: it still reads
                log.warning("log %s cannot be opened for writing (%s); read only for now",
                            files[-1].path, exc.strerror)  # fmt: skip
        return loaded, files, files[-1].seq + 1 if files else base, damaged

    def _read_snapshot(self, snap: Path, corrupt: Path, name: str) -> tuple[int, bytes]:
        try:
            snapshot = fmt.parse_snapshot(snap.read_bytes())
        except fmt.NewerFormat:
            log.error("snapshot %s is of a newer format; document %r refused", snap, name)
            raise
        except fmt.Damaged as exc:
            if not self.read_only:
                os.replace(snap, corrupt)
                fsync_dir(self.root)
            log.error("snapshot %s is corrupt (%s): moved aside; document refused", snap, exc)
            raise DocumentUnavailable(f"snapshot of {name!r} is corrupt") from None
        return snapshot.log_seq, snapshot.state

    def _read_log(self, path: Path, name: str, loaded: Loaded) -> tuple[int, int, int, int]:
        """Add the records of ``path`` to ``loaded``; return version, start, size, damaged."""
        data = path.read_bytes()
        try:
            header = fmt.parse_log_header(data)
        except fmt.NewerFormat:
            log.error("log %s is of a newer format; document %r refused", path, name)
            raise
        except fmt.Damaged:
            return self._replace_header(path, name, data, loaded)
        found = fmt.parse_records(data, header.start, header.version)
        loaded.records += found.records
        loaded.dropped_bytes += found.torn + found.lost
        if found.lost:
            kept = fmt.encode_log(name, found.records, header.version)
            aside = "left alone (read-only)"
            if not self.read_only:
                aside = _set_aside(path, data)
                _replace(path, kept)
            log.error(
                "log %s is damaged: %d bytes lost, %d records kept; the damaged file is %s",
                path, found.lost + found.torn, len(found.records), aside,
            )  # fmt: skip
            return header.version, header.start, len(kept), 1
        if found.torn:
            log.warning(
                "log %s: dropped %d bytes of torn tail after %d records",
                path, found.torn, len(found.records),
            )  # fmt: skip
            if not self.read_only:
                os.truncate(path, found.end)
        return header.version, header.start, found.end, 0

    def _replace_header(
        self, path: Path, name: str, data: bytes, loaded: Loaded
    ) -> tuple[int, int, int, int]:
        """A log without a valid header holds no provable record: start it afresh."""
        fresh = fmt.encode_log_header(name)
        torn = any(fmt.encode_log_header(name, v).startswith(data) for v in (1, fmt.LOG_VERSION))
        if torn:
            log.warning("log %s was cut short while being created; starting it afresh", path)
        else:
            aside = "left alone (read-only)" if self.read_only else _set_aside(path, data)
            log.error("log %s has no valid header: %d bytes lost; it is %s", path, len(data), aside)
        loaded.dropped_bytes += len(data)
        if not self.read_only:
            _replace(path, fresh)
        return fmt.LOG_VERSION, len(fresh), len(fresh), 0 if torn else 1

    def write_snapshot(self, name: str, state: bytes, seq: int, fd: int) -> None:
        """Fsync log ``seq`` (``fd``), then write the snapshot naming it; drop older logs."""
        os.fsync(fd)  # it holds the only copy of records about to be removed with old logs
        stem = names.to_stem(name)
        _replace(self.snap(stem), fmt.snapshot_parts(name, seq, state))
        try:
            self._remove_logs_below(stem, seq)
        except OSError:  # loading removes them; the snapshot is in place
            log.warning("could not remove the compacted logs of %r", name, exc_info=True)

    def remove(self, name: str) -> bool:
        """Remove the snapshot and every log of ``name`` (``.corrupt`` files stay)."""
        stem = names.to_stem(name)
        existed = False
        for path in [self.snap(stem), *(p for _, p in self.logs(stem))]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                existed = True
        if existed:
            fsync_dir(self.root)
        return existed

    def fsync_files(self, fds: list[int], new_entries: bool) -> None:
        for fd in fds:
            os.fsync(fd)
        if new_entries:
            fsync_dir(self.root)
