"""Server-to-client WebSocket frames, built once per message (and per compression setting).

A relayed message is framed once and the same bytes go to every connection:
the last message's frame is cached, so a fan-out loop frames it one time.

Compression (permessage-deflate, RFC 7692) is negotiated with
``server_no_context_takeover``: each compressed message stands alone, so its
bytes depend only on the message and the window size the client accepted, and
one compressed frame serves every peer with that window (``deflated_frame``
keeps the last large message's frame per window). Only messages of at least
``COMPRESS_MIN_BYTES`` are compressed; smaller ones go out as plain frames,
which a client with the extension reads as well (RSV1 clear).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from typing import Any, Protocol

__all__ = [
    "COMPRESS_LEVEL",
    "COMPRESS_MIN_BYTES",
    "binary_frame",
    "cached_deflated_frame",
    "compressor_for",
    "deflated_fragments",
    "deflated_frame",
    "frame_head",
]

# Below this a message is sent as it is: the typing updates and awareness that
# make up nearly all traffic gain little and would pay deflate's setup per message.
COMPRESS_MIN_BYTES = 16 << 10
# zlib level 1: about 170 MB/s here and within ~10% of level 6's ratio on
# document states; a fresh client's step 2 is compressed once per document
# change, so speed matters on a fast link and the ratio on a slow one. For the
# usual 32 KiB window, ISA-L's deflate (python-isal) at its level 1 makes the
# same kind of stream 3x faster (a 46 MB state: 85 ms against 272 ms, 5 % larger)
# and releases the GIL too; ISA-L always uses the whole window, so a client that
# asked for a smaller one gets zlib's.
COMPRESS_LEVEL = 1
# A large message is compressed as a fragmented one, a fragment per this much
# input, so the first is on the wire (and being inflated) while the rest are made.
FRAGMENT_INPUT_BYTES = 1 << 20

_isal: Any
try:
    from isal import isal_zlib as _isal
except ImportError:  # pragma: no cover - a platform without python-isal's wheels
    _isal = None


class Compressor(Protocol):
    def compress(self, data: bytes | memoryview, /) -> bytes: ...
    def flush(self, mode: int, /) -> bytes: ...


_cache: tuple[bytes | None, bytes] = (None, b"")  # not (b"", ...): every b"" is one object
_deflated: dict[int, tuple[bytes, bytes]] = {}  # window bits -> (message, its frame)
_SYNC_TAIL = b"\x00\x00\xff\xff"


def frame_head(size: int, first: int = 0x82) -> bytes:
    """The header of an unmasked frame of ``size`` bytes (``first``: FIN, RSV, opcode)."""
    if size < 126:
        return struct.pack("!BB", first, size)
    if size <= 0xFFFF:
        return struct.pack("!BBH", first, 126, size)
    return struct.pack("!BBQ", first, 127, size)


def binary_frame(data: bytes) -> bytes:
    """The server-to-client WebSocket frame of ``data`` (cached for the last message)."""
    global _cache
    if _cache[0] is data:
        return _cache[1]
    _cache = (data, frame_head(len(data)) + data)
    return _cache[1]


def cached_deflated_frame(data: bytes, window_bits: int) -> bytes | None:
    """The compressed frame of ``data`` for ``window_bits`` if it was built last, else None."""
    hit = _deflated.get(window_bits)
    return hit[1] if hit is not None and hit[0] is data else None


def compressor_for(window_bits: int) -> Compressor:
    """A raw deflate compressor for one message to a client with this window."""
    if _isal is not None and window_bits == 15:
        fast: Compressor = _isal.compressobj(COMPRESS_LEVEL, zlib.DEFLATED, -15)
        return fast
    return zlib.compressobj(COMPRESS_LEVEL, zlib.DEFLATED, -window_bits)


def deflated_frame(data: bytes, window_bits: int) -> bytes:
    """``data`` as one permessage-deflate frame (RSV1 set) for a client's window size.

    No context is kept between messages (``server_no_context_takeover``), so
    the result is the same for every connection with this window; it is kept
    for the last message per window. If compression does not make the message
    smaller, the plain frame is returned instead. Safe to call from a thread
    (zlib releases the GIL while it compresses).
    """
    cached = cached_deflated_frame(data, window_bits)
    if cached is not None:
        return cached
    compressor = compressor_for(window_bits)
    body = compressor.compress(data) + _flushed(compressor)
    if len(body) < len(data):
        frame = frame_head(len(body), 0xC2) + body
    else:
        frame = frame_head(len(data)) + data
    _deflated[window_bits] = (data, frame)
    return frame


def deflated_fragments(
    data: bytes | memoryview, window_bits: int, piece_bytes: int = FRAGMENT_INPUT_BYTES
) -> Iterator[bytes]:
    """``data`` as one permessage-deflate message in several frames, each as it is made.

    The first frame has RSV1 and the binary opcode, the others are
    continuations, and the last (the compressor's flush, without the sync
    tail) has FIN. Pure and safe in a thread: ``Deflation`` runs it there.
    """
    compressor = compressor_for(window_bits)
    view = memoryview(data)
    first = True
    for start in range(0, len(view), piece_bytes):
        body = compressor.compress(view[start : start + piece_bytes])
        if body:
            yield frame_head(len(body), 0x42 if first else 0x00) + body
            first = False
    tail = _flushed(compressor)
    yield frame_head(len(tail), 0xC2 if first else 0x80) + tail


def _flushed(compressor: Compressor) -> bytes:
    """The rest of a message's deflate stream, without the sync tail (RFC 7692 7.2.1)."""
    tail = compressor.flush(zlib.Z_SYNC_FLUSH)
    return tail[:-4] if tail.endswith(_SYNC_TAIL) else tail
