"""The byte format of version files and history indexes.

Rule: pure; no I/O, no os, no clock. ``history_file`` reads and writes what
this module makes. Integers are little-endian; JSON is UTF-8, keys sorted,
no spaces::

    version  = "CVER" 1:u8 length:u32 crc:u32 body        crc = crc32(body)
    body     = meta_len:u32 meta state_len:u32 zlib(state) zlib(text)
    index    = "CHIX" 1:u8 name_len:u16 name record*
    record   = length:u32 crc:u32 op                      crc = crc32(op)
    op       = {"op":"version","meta":META} | {"op":"label","id":N,"label":L|null}
             | {"op":"drop","ids":[N,...]}

``meta`` is ``VersionMeta.to_json()``. A version file is whole or refused
(``Damaged``). The index is a cache of the version files' own metadata plus
labels and drops: ``parse_index`` keeps the valid prefix and says where it
ends, so a torn tail is cut off; version files the index lost are indexed
again from their embedded metadata.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

from ..core.history import VersionMeta

__all__ = [
    "MAGIC_INDEX",
    "MAGIC_VERSION",
    "Damaged",
    "IndexContent",
    "apply_op",
    "encode_index_header",
    "encode_op",
    "encode_version",
    "parse_index",
    "parse_version",
    "parse_version_meta",
    "zip_payload",
]

MAGIC_VERSION = b"CVER"
MAGIC_INDEX = b"CHIX"
FORMAT = 1
_FRAME = struct.Struct("<II")  # length, crc32
_U32 = struct.Struct("<I")


class Damaged(ValueError):
    """Not a valid version file or index header (or of a newer format)."""


def _json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def zip_payload(state: bytes, text: str) -> tuple[bytes, bytes]:
    """``zlib(state)`` and ``zlib(text)`` (the costly part: run it off the event loop)."""
    return zlib.compress(state, 6), zlib.compress(text.encode(), 6)


def encode_version(meta: VersionMeta, zstate: bytes, ztext: bytes) -> bytes:
    """A version file of ``meta`` holding the compressed state and text."""
    raw = _json(meta.to_json())
    body = _U32.pack(len(raw)) + raw + _U32.pack(len(zstate)) + zstate + ztext
    return MAGIC_VERSION + bytes([FORMAT]) + _FRAME.pack(len(body), zlib.crc32(body)) + body


def _body(data: bytes) -> bytes:
    if len(data) < 5 + _FRAME.size or data[:4] != MAGIC_VERSION:
        raise Damaged("not a collab version file")
    if data[4] != FORMAT:
        raise Damaged(f"version file format v{data[4]} unknown")
    length, crc = _FRAME.unpack_from(data, 5)
    body = data[5 + _FRAME.size :]
    if len(body) != length or zlib.crc32(body) != crc:
        raise Damaged("checksum mismatch")
    return body


def _meta_at(body: bytes) -> tuple[VersionMeta, int]:
    try:
        (length,) = _U32.unpack_from(body, 0)
        meta = VersionMeta.from_json(json.loads(body[4 : 4 + length]))
    except (struct.error, ValueError, KeyError, TypeError) as exc:
        raise Damaged(f"bad metadata: {exc}") from None
    return meta, 4 + length


def parse_version_meta(data: bytes) -> VersionMeta:
    """The metadata of a whole version file (its checksum is checked)."""
    return _meta_at(_body(data))[0]


def parse_version(data: bytes) -> tuple[VersionMeta, bytes, str]:
    """``(meta, state, text)`` of a whole version file.

    Raises:
        Damaged: anything wrong with it.
    """
    body = _body(data)
    meta, pos = _meta_at(body)
    try:
        (length,) = _U32.unpack_from(body, pos)
        pos += 4
        state = zlib.decompress(body[pos : pos + length])
        text = zlib.decompress(body[pos + length :]).decode()
    except (struct.error, zlib.error, UnicodeDecodeError) as exc:
        raise Damaged(f"bad payload: {exc}") from None
    return meta, state, text


def encode_index_header(name: str) -> bytes:
    raw = name.encode()
    return MAGIC_INDEX + bytes([FORMAT]) + struct.pack("<H", len(raw)) + raw


def encode_op(op: dict[str, Any]) -> bytes:
    """One framed index record."""
    payload = _json(op)
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


@dataclass
class IndexContent:
    """What a (possibly torn) index holds."""

    name: str
    metas: dict[int, VersionMeta] = field(default_factory=dict)
    dropped: set[int] = field(default_factory=set)
    records: int = 0  # valid records read (live + dead: compaction decides by them)
    top: int = 0  # the highest id ever indexed (ids are never reused)
    end: int = 0  # where the valid prefix ends: truncate the file here


def apply_op(content: IndexContent, op: dict[str, Any]) -> None:
    """Fold one record into ``content``; unknown or malformed ones are ignored."""
    kind = op.get("op")
    if kind == "version":
        meta = VersionMeta.from_json(op["meta"])
        if meta.id not in content.dropped:
            content.metas[meta.id] = meta
        content.top = max(content.top, meta.id)
    elif kind == "label":
        held = content.metas.get(op["id"])
        if held is not None:
            content.metas[held.id] = held.with_label(op["label"])
    elif kind == "drop":
        for id in op["ids"]:
            content.metas.pop(id, None)
            content.dropped.add(id)


def parse_index(data: bytes) -> IndexContent:
    """Read an index; never raises past the header.

    Raises:
        Damaged: the header is not a collab history index.
    """
    if len(data) < 7 or data[:4] != MAGIC_INDEX or data[4] != FORMAT:
        raise Damaged("not a collab history index")
    (length,) = struct.unpack_from("<H", data, 5)
    if 7 + length > len(data):
        raise Damaged("cut short")
    try:
        name = data[7 : 7 + length].decode()
    except UnicodeDecodeError:
        raise Damaged("name is not UTF-8") from None
    content = IndexContent(name, end=7 + length)
    pos = content.end
    while pos + _FRAME.size <= len(data):
        size, crc = _FRAME.unpack_from(data, pos)
        payload = data[pos + _FRAME.size : pos + _FRAME.size + size]
        if len(payload) != size or zlib.crc32(payload) != crc:
            break
        try:
            op = json.loads(payload)
            apply_op(content, op)
        except (ValueError, KeyError, TypeError, AttributeError):
            break
        pos += _FRAME.size + size
        content.records += 1
        content.end = pos
    return content
