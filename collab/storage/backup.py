"""Consistent copies of documents in a data directory a server may be writing.

Rule: synchronous file I/O only (the ``collab`` commands call it); it takes no
lock, so it runs beside a server holding the directory. The byte format is
``records``, the layout ``disk``.

A running server changes a document's files in three ways only: it appends
records to its newest log (a reader may see a record half written), replaces
the snapshot by a rename (a reader sees the old file or the new one, whole),
and after a new snapshot removes the logs it covers. So ``read_document``
copies one document as: open the snapshot and note which file it is and its
``log_seq``; copy the logs from that number on, keeping only their complete,
checksummed records; then check that the snapshot path still names the same
file. If it does not, a compaction ran meanwhile (and may have removed a log
before it was read): read the document again. What is kept is the document
as it was at one moment, with every record written before the copy started.

``write_tree`` writes the copies as a data directory of their own (plus a
``collab-backup.json`` manifest): every file written and fsynced in a
temporary directory beside the destination, which is renamed into place
only when complete. ``restore`` copies documents from such a tree into a
data directory no server is using (the caller holds its lock).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..core import names
from ..core.errors import DocumentUnavailable
from . import records as fmt
from .base import Record
from .disk import fsync_dir, write_new

__all__ = [
    "MANIFEST",
    "Changing",
    "Conflict",
    "DocumentCopy",
    "read_document",
    "read_tree",
    "restore",
    "stems",
    "write_tree",
]

MANIFEST = "collab-backup.json"
_ATTEMPTS = 50  # reads of one document before giving up on a quiet moment


class Changing(OSError):
    """A document was compacted during every attempt to copy it."""


class Conflict(Exception):
    """The destination already has some of the documents (``names``)."""

    def __init__(self, conflicting: Sequence[str]) -> None:
        super().__init__(", ".join(conflicting))
        self.names = list(conflicting)


@dataclass
class DocumentCopy:
    """One document as it was at one moment: its files' bytes and what they hold."""

    stem: str
    name: str
    snapshot: bytes | None = None  # the snapshot file, whole
    log_seq: int = 0
    logs: list[tuple[int, bytes]] = field(default_factory=list)  # (seq, complete records only)
    state: bytes | None = None
    records: list[Record] = field(default_factory=list)
    dropped: int = 0  # bytes left out: a record being written, or damage

    @property
    def updates(self) -> list[bytes]:
        """The snapshot's state then every record: apply them in this order."""
        head = [self.state] if self.state is not None else []
        return head + [record.update for record in self.records]

    @property
    def size(self) -> int:
        return len(self.snapshot or b"") + sum(len(data) for _, data in self.logs)

    def files(self) -> Iterator[tuple[str, bytes]]:
        """``(file name, bytes)`` of each file of the copy, in a data directory's layout."""
        if self.snapshot is not None:
            yield f"{self.stem}.snap", self.snapshot
        for seq, data in self.logs:
            yield f"{self.stem}.{seq}.log", data


def stems(root: Path) -> list[str]:
    """The stem of every document with a snapshot or a log in ``root``, sorted."""
    found = set()
    for path in root.iterdir():
        if path.suffix in (".snap", ".log") and path.is_file():
            found.add(path.name.split(".", 1)[0])
    return sorted(found)


def _identity(stat: os.stat_result) -> tuple[int, int, int, int]:
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns


def _read_snapshot(path: Path) -> tuple[bytes, tuple[int, int, int, int]] | None:
    try:
        with open(path, "rb") as f:
            return f.read(), _identity(os.fstat(f.fileno()))
    except FileNotFoundError:
        return None


def _same_snapshot(path: Path, identity: tuple[int, int, int, int] | None) -> bool:
    try:
        return _identity(path.stat()) == identity
    except FileNotFoundError:
        return identity is None


def _name_of(stem: str, heads: Iterable[bytes]) -> str | None:
    """The name a stem stands for: decoded, or as a log or snapshot header records it."""
    name = names.from_stem(stem)
    if name is not None:
        return name
    for data in heads:
        with contextlib.suppress(fmt.Damaged):
            if data.startswith(fmt.MAGIC_LOG):
                return fmt.parse_log_header(data).name
            return fmt.parse_snapshot_head(data)[1]
    return None


def _keep_records(copy: DocumentCopy, seq: int, data: bytes) -> None:
    """Add log ``seq`` to ``copy`` with only its complete, checksummed records."""
    try:
        header = fmt.parse_log_header(data)
    except fmt.Damaged:  # being created, or damaged: no record in it is provable
        copy.logs.append((seq, fmt.encode_log_header(copy.name)))
        copy.dropped += len(data)
        return
    found = fmt.parse_records(data, header.start, header.version)
    copy.records += found.records
    copy.dropped += found.torn + found.lost
    if found.lost:  # damage inside: keep what is provably valid, as loading does
        kept = fmt.encode_log(copy.name, found.records, header.version)
    else:
        kept = data[: found.end]  # byte for byte, less a record being written
    copy.logs.append((seq, kept))


def read_document(root: Path, stem: str) -> DocumentCopy | None:
    """Copy the document ``stem`` of ``root`` as it was at one moment (see the module).

    Returns:
        None if it has no files (any more).

    Raises:
        DocumentUnavailable: its snapshot is corrupt (or set aside as such).
        records.NewerFormat: a file was written by a newer collab.
        Changing: it was compacted during every attempt.
    """
    snap_path = root / f"{stem}.snap"
    if snap_path.with_name(snap_path.name + ".corrupt").exists():
        raise DocumentUnavailable(f"{stem}.snap.corrupt exists: the document is refused")
    for _ in range(_ATTEMPTS):
        snap = _read_snapshot(snap_path)
        identity = snap[1] if snap is not None else None
        logs: list[tuple[int, bytes]] = []
        seq = 0
        if snap is not None:
            try:
                seq = fmt.parse_snapshot_head(snap[0])[0]
            except fmt.Damaged:
                raise DocumentUnavailable(f"snapshot {snap_path.name} is corrupt") from None
        while True:
            try:
                logs.append((seq, (root / f"{stem}.{seq}.log").read_bytes()))
            except FileNotFoundError:
                break
            seq += 1
        if not _same_snapshot(snap_path, identity):
            continue  # compacted meanwhile: the logs read may not follow this snapshot
        if snap is None and not logs:
            return None
        name = _name_of(stem, [data for _, data in logs] + ([snap[0]] if snap else []))
        if name is None:
            raise DocumentUnavailable(f"{stem}: no readable header names the document")
        copy = DocumentCopy(stem, name)
        if snap is not None:
            try:
                parsed = fmt.parse_snapshot(snap[0])
            except fmt.Damaged:
                raise DocumentUnavailable(f"snapshot {snap_path.name} is corrupt") from None
            copy.snapshot, copy.log_seq, copy.state = snap[0], parsed.log_seq, parsed.state
        for number, data in logs:
            _keep_records(copy, number, data)
        return copy
    raise Changing(f"{stem} was compacted during each of {_ATTEMPTS} attempts to copy it")


def write_tree(dest: Path, copies: Sequence[DocumentCopy], source: str) -> None:
    """Write ``copies`` as a new data directory ``dest``, all or nothing.

    Raises:
        FileExistsError: ``dest`` exists and is not an empty directory.
        OSError: it could not be written; nothing is left behind.
    """
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FileExistsError(f"{dest} exists and is not an empty directory")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)  # left by an earlier, interrupted run
    tmp.mkdir()
    try:
        for copy in copies:
            for file_name, data in copy.files():
                write_new(tmp / file_name, data)
        manifest = {
            "format": "collab-backup",
            "version": 1,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "source": source,
            "documents": [
                {"name": c.name, "records": len(c.records), "bytes": c.size} for c in copies
            ],
        }
        write_new(tmp / MANIFEST, json.dumps(manifest, indent=1).encode())
        fsync_dir(tmp)
        if dest.exists():
            dest.rmdir()  # empty, checked above
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(dest.parent)


def read_tree(root: Path) -> list[DocumentCopy]:
    """Every document of ``root`` (a backup, or a data directory no server is using).

    Raises:
        DocumentUnavailable, records.NewerFormat: a document cannot be read.
    """
    found = (read_document(root, stem) for stem in stems(root))
    return [copy for copy in found if copy is not None]


def _existing(root: Path, stem: str) -> list[Path]:
    """The files of ``stem`` in ``root`` (a corrupt snapshot set aside included)."""
    paths = [root / f"{stem}.snap", root / f"{stem}.snap.corrupt"]
    paths += [p for p in root.glob(f"{stem}.*.log") if p.name[len(stem) + 1 : -4].isdigit()]
    return [p for p in paths if p.exists()]


def restore(copies: Sequence[DocumentCopy], root: Path, force: bool = False) -> list[str]:
    """Write ``copies`` into data directory ``root``; the caller holds its lock.

    Each file is written to a temporary name, fsynced and renamed into place.

    Returns:
        The names of the documents that were replaced (``force``).

    Raises:
        Conflict: without ``force``, ``root`` has some of these documents
            already; nothing was written.
    """
    conflicting = [copy for copy in copies if _existing(root, copy.stem)]
    if conflicting and not force:
        raise Conflict([copy.name for copy in conflicting])
    for copy in copies:
        for path in _existing(root, copy.stem):
            path.unlink()  # every old file: a stale log past the new ones would be replayed
        for file_name, data in copy.files():
            tmp = root / f"{file_name}.tmp"
            tmp.unlink(missing_ok=True)
            write_new(tmp, data)
            os.replace(tmp, root / file_name)
    fsync_dir(root)
    return [copy.name for copy in conflicting]
