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

__all__ = [
    "COMPRESS_LEVEL",
    "COMPRESS_MIN_BYTES",
    "binary_frame",
    "cached_deflated_frame",
    "deflated_frame",
    "frame_head",
]

# Below this a message is sent as it is: the typing updates and awareness that
# make up nearly all traffic gain little and would pay deflate's setup per message.
COMPRESS_MIN_BYTES = 16 << 10
# zlib level 1: about 100 MB/s here and within ~10% of level 6's ratio on
# document states; a fresh client's step 2 is compressed once per document
# change, so speed matters on a fast link and the ratio on a slow one.
COMPRESS_LEVEL = 1

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
    compressor = zlib.compressobj(COMPRESS_LEVEL, zlib.DEFLATED, -window_bits)
    body = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    if body.endswith(_SYNC_TAIL):
        body = body[:-4]
    if len(body) < len(data):
        frame = frame_head(len(body), 0xC2) + body
    else:
        frame = frame_head(len(data)) + data
    _deflated[window_bits] = (data, frame)
    return frame
