"""The byte format of snapshot and log files, and what survives damage.

Rule: pure; no I/O, no os, no clock, no asyncio. ``file.py`` reads and writes
the bytes this module makes and parses. Every integer is little-endian::

    log       = "CLOG" version:u8 name_len:u16 name record*
    record    = length:u32 crc:u32 payload          crc = crc32(payload), length = len(payload)
    payload   = update                                              (version 1)
              | time:f64 author_len:u16 author update               (version 2)
    snapshot  = "CSNP" 1:u8 length:u32 crc:u32 body                 crc = crc32(body)
    body      = log_seq:u64 name_len:u16 name state

``name`` and ``author`` are UTF-8, ``update`` is one non-empty Yjs update and
``state`` a full one. Logs are written as version 2 and version 1 logs still
load (their records get ``time=0.0``, ``author=""``); snapshots stay version 1.
A version newer than this code knows raises ``NewerFormat``: such a file is
refused, never set aside as corrupt.

``parse_records`` keeps every record that can be proven valid (its CRC holds
and its payload parses). A bad record is a *torn tail* (a crash while
appending) when it is cut short by the end of the data, or ends exactly there;
otherwise it is *damage*: parsing resynchronises on the first later offset
from which valid records run to the end (or into a torn tail), and the bytes
skipped are ``lost``.
"""

from __future__ import annotations

import functools
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from ..core.errors import DocumentUnavailable
from .base import Record

__all__ = [
    "LOG_VERSION",
    "MAGIC_LOG",
    "MAGIC_SNAP",
    "SNAP_VERSION",
    "Damaged",
    "LogHeader",
    "NewerFormat",
    "ParseResult",
    "Snapshot",
    "encode_log",
    "encode_log_header",
    "encode_record",
    "encode_snapshot",
    "snapshot_parts",
    "parse_log_header",
    "parse_records",
    "parse_snapshot",
    "parse_snapshot_head",
]

MAGIC_LOG = b"CLOG"
MAGIC_SNAP = b"CSNP"
LOG_VERSION = 2  # what new logs are written as; 1 still loads
SNAP_VERSION = 1
_FRAME = struct.Struct("<II")  # length, crc32
_V2_HEAD = struct.Struct("<dH")  # time, author_len
_SNAP_HEAD = struct.Struct("<QH")  # log_seq, name_len
_SNAP_BODY = 5 + _FRAME.size  # where a snapshot's body starts
_MAX_U16 = 0xFFFF


class Damaged(ValueError):
    """The bytes are not a valid log header or snapshot: set the file aside."""


class NewerFormat(DocumentUnavailable):
    """The file was written by a newer collab: refuse the document, touch nothing."""

    def __init__(self, kind: str, version: int) -> None:
        super().__init__(
            f"written by a newer collab ({kind} format v{version}); upgrade collab to open it"
        )
        self.kind = kind
        self.version = version


class LogHeader(NamedTuple):
    version: int
    name: str
    start: int  # offset of the first record


class Snapshot(NamedTuple):
    log_seq: int  # the first log not covered by ``state``
    name: str
    state: bytes


@dataclass(frozen=True)
class ParseResult:
    """What ``parse_records`` could prove valid.

    ``end`` is where the intact prefix stops: with ``lost == 0``, truncating
    the file to ``end`` drops exactly the ``torn`` tail. With ``lost > 0`` the
    caller rewrites the log from ``records``.
    """

    records: list[Record]
    end: int
    torn: int = 0  # bytes of an unfinished last record
    lost: int = 0  # bytes of damage skipped before the end


def _u16_field(text: str, what: str) -> bytes:
    raw = text.encode()
    if len(raw) > _MAX_U16:
        raise ValueError(f"{what} longer than {_MAX_U16} bytes")
    return struct.pack("<H", len(raw)) + raw


def _frame(payload: bytes) -> bytes:
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def encode_log_header(name: str, version: int = LOG_VERSION) -> bytes:
    """The first bytes of a new log of ``name``."""
    return MAGIC_LOG + bytes([version]) + _u16_field(name, "name")


def encode_record(record: Record, version: int = LOG_VERSION) -> bytes:
    """One framed record; version 1 keeps only the update.

    An author over 65535 bytes of UTF-8 is cut (at a character boundary).

    Raises:
        ValueError: the update is empty (it would not load back).
    """
    if not record.update:
        raise ValueError("an empty update cannot be logged")
    if version == 1:
        return _frame(record.update)
    author = _author_bytes(record.author)
    head = _V2_HEAD.pack(record.time, len(author)) + author
    update = record.update  # copied once, into the frame (a record can be many MB)
    crc = zlib.crc32(update, zlib.crc32(head))
    return b"".join((_FRAME.pack(len(head) + len(update), crc), head, update))


@functools.lru_cache(maxsize=1024)
def _author_bytes(author: str) -> bytes:
    """``author`` as UTF-8, cut to 65535 bytes at a character boundary (few, repeated)."""
    return author.encode()[:_MAX_U16].decode(errors="ignore").encode()


def encode_log(name: str, records: Iterable[Record], version: int = LOG_VERSION) -> bytes:
    """A whole log: its header, then ``records``."""
    return encode_log_header(name, version) + b"".join(encode_record(r, version) for r in records)


def _check_version(data: bytes, magic: bytes, kind: str, known: int) -> int:
    if len(data) < 5 or data[:4] != magic:
        raise Damaged(f"not a collab {kind}")
    if data[4] > known:
        raise NewerFormat(kind, data[4])
    if data[4] < 1:
        raise Damaged(f"unknown {kind} format v{data[4]}")
    return data[4]


def _name_at(data: bytes, pos: int, length: int) -> str:
    if pos + length > len(data):
        raise Damaged("cut short")
    try:
        return data[pos : pos + length].decode()
    except UnicodeDecodeError:
        raise Damaged("name is not UTF-8") from None


def parse_log_header(data: bytes) -> LogHeader:
    """Read a log's header.

    Raises:
        NewerFormat: a version newer than ``LOG_VERSION``.
        Damaged: not a log header, or cut short.
    """
    version = _check_version(data, MAGIC_LOG, "log", LOG_VERSION)
    if len(data) < 7:
        raise Damaged("cut short")
    (length,) = struct.unpack_from("<H", data, 5)
    return LogHeader(version, _name_at(data, 7, length), 7 + length)


def _record_at(view: memoryview, pos: int, version: int) -> tuple[Record | None, int]:
    """The valid record at ``pos`` (or None) and where it claims to end."""
    if pos + _FRAME.size > len(view):
        return None, len(view) + 1
    length, crc = _FRAME.unpack_from(view, pos)
    end = pos + _FRAME.size + length
    if end > len(view):
        return None, end
    payload = view[pos + _FRAME.size : end]
    if zlib.crc32(payload) != crc:
        return None, end
    if version == 1:
        return (Record(bytes(payload)) if length else None), end
    if length <= _V2_HEAD.size:
        return None, end
    time, author_len = _V2_HEAD.unpack_from(payload)
    update = payload[_V2_HEAD.size + author_len :]
    if not update:
        return None, end
    author = bytes(payload[_V2_HEAD.size : _V2_HEAD.size + author_len])
    return Record(bytes(update), time, author.decode(errors="replace")), end


def _chain(view: memoryview, pos: int, version: int) -> tuple[list[Record], int]:
    """The valid records from ``pos`` on, and where the first bad one starts."""
    records = []
    while pos < len(view):
        record, end = _record_at(view, pos, version)
        if record is None:
            break
        records.append(record)
        pos = end
    return records, pos


def _is_torn(view: memoryview, pos: int, version: int) -> bool:
    """True if the bad record at ``pos`` is cut short by, or ends at, the end."""
    return _record_at(view, pos, version)[1] >= len(view)


def _resync(view: memoryview, pos: int, version: int) -> tuple[int, list[Record], int] | None:
    """The first offset from ``pos`` whose valid records run to the end or a torn tail."""
    for start in range(pos, len(view) - _FRAME.size):
        if _record_at(view, start, version)[0] is None:
            continue
        records, stop = _chain(view, start, version)
        if stop == len(view) or _is_torn(view, stop, version):
            return start, records, stop
    return None


def parse_records(data: bytes, start: int, version: int) -> ParseResult:
    """Read the records of a log from ``start`` (``LogHeader.start``).

    Never raises: bad bytes are reported as ``torn`` or ``lost``; the caller
    truncates a torn tail, or sets a damaged file aside and rewrites it.
    """
    view = memoryview(data)
    records, end = _chain(view, start, version)
    if end == len(view):
        return ParseResult(records, end)
    found = _resync(view, end + 1, version)
    if found is None:
        if _is_torn(view, end, version):
            return ParseResult(records, end, torn=len(view) - end)
        return ParseResult(records, end, lost=len(view) - end)
    resumed, more, stop = found
    return ParseResult(records + more, end, torn=len(view) - stop, lost=resumed - end)


def encode_snapshot(name: str, log_seq: int, state: bytes) -> bytes:
    """A snapshot of ``name`` whose ``state`` covers every log before ``log_seq``."""
    return b"".join(snapshot_parts(name, log_seq, state))


def snapshot_parts(name: str, log_seq: int, state: bytes) -> list[bytes]:
    """``encode_snapshot``'s bytes in pieces, ``state`` not copied (write them in turn)."""
    head = struct.pack("<Q", log_seq) + _u16_field(name, "name")
    crc = zlib.crc32(state, zlib.crc32(head))
    frame = _FRAME.pack(len(head) + len(state), crc)
    return [MAGIC_SNAP + bytes([SNAP_VERSION]) + frame + head, state]


def parse_snapshot_head(data: bytes) -> tuple[int, str]:
    """``(log_seq, name)`` from the first bytes of a snapshot, CRC unchecked (listing).

    Raises:
        NewerFormat: a version newer than ``SNAP_VERSION``.
        Damaged: not a snapshot, or cut short.
    """
    _check_version(data, MAGIC_SNAP, "snapshot", SNAP_VERSION)
    if len(data) < _SNAP_BODY + _SNAP_HEAD.size:
        raise Damaged("cut short")
    log_seq, length = _SNAP_HEAD.unpack_from(data, _SNAP_BODY)
    return log_seq, _name_at(data, _SNAP_BODY + _SNAP_HEAD.size, length)


def parse_snapshot(data: bytes) -> Snapshot:
    """Read a whole snapshot and check its CRC.

    Raises:
        NewerFormat: a version newer than ``SNAP_VERSION``.
        Damaged: anything else wrong; set the file aside and refuse the document.
    """
    _check_version(data, MAGIC_SNAP, "snapshot", SNAP_VERSION)
    if len(data) < _SNAP_BODY:
        raise Damaged("cut short")
    length, crc = _FRAME.unpack_from(data, 5)
    body = memoryview(data)[_SNAP_BODY : _SNAP_BODY + length]  # (a state can be many MB)
    if len(body) != length or zlib.crc32(body) != crc or length < _SNAP_HEAD.size:
        raise Damaged("checksum mismatch")
    log_seq, name_len = _SNAP_HEAD.unpack_from(body)
    name = _name_at(bytes(body[_SNAP_HEAD.size : _SNAP_HEAD.size + name_len]), 0, name_len)
    return Snapshot(log_seq, name, bytes(body[_SNAP_HEAD.size + name_len :]))
