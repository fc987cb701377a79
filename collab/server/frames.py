"""Server-to-client WebSocket frames, built once per message.

A relayed message is framed once and the same bytes go to every connection:
the last message's frame is cached, so a fan-out loop frames it one time.
"""

from __future__ import annotations

import struct

__all__ = ["binary_frame"]

_cache: tuple[bytes | None, bytes] = (None, b"")  # not (b"", ...): every b"" is one object


def binary_frame(data: bytes) -> bytes:
    """The server-to-client WebSocket frame of ``data`` (cached for the last message)."""
    global _cache
    if _cache[0] is data:
        return _cache[1]
    n = len(data)
    if n < 126:
        head = struct.pack("!BB", 0x82, n)
    elif n <= 0xFFFF:
        head = struct.pack("!BBH", 0x82, 126, n)
    else:
        head = struct.pack("!BBQ", 0x82, 127, n)
    _cache = (data, head + data)
    return _cache[1]
