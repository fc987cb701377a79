"""WebSocket on a plain socket, for tests that must send or see exact bytes.

``upgrade_request`` and ``raw_connect`` do the handshake by hand,
``client_frame`` builds a client-to-server frame bit by bit (so it can also
break the rules), and ``read_frames``/``parse_frames`` read what the server sent.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct

from websockets.utils import apply_mask

__all__ = [
    "FrameReader",
    "client_frame",
    "deflate_connect",
    "frame_payload",
    "parse_frames",
    "raw_connect",
    "read_frames",
    "upgrade_request",
]


def upgrade_request(port: int, path: str) -> bytes:
    """The HTTP/1.1 request that opens a WebSocket on ``path``."""
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


async def raw_connect(
    port: int, path: str, rcvbuf: int = 4096, early: bytes = b""
) -> socket.socket:
    """A WebSocket handshake on a plain socket with a small receive buffer.

    ``early`` is sent in the same write as the request (frames pipelined
    behind the upgrade). The response is left unread.
    """
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    await loop.sock_sendall(sock, upgrade_request(port, path) + early)
    return sock


async def read_frames(sock: socket.socket) -> list[tuple[int, bytes]]:
    """Everything the server sent until its close frame: (opcode, payload) per frame."""
    loop = asyncio.get_running_loop()
    data = bytearray()
    while chunk := await asyncio.wait_for(loop.sock_recv(sock, 1 << 16), 10):
        data += chunk
        if b"\r\n\r\n" in data:
            head, _, rest = bytes(data).partition(b"\r\n\r\n")
            frames, _ = parse_frames(rest)
            if frames and frames[-1][0] == 0x8:
                break
    assert head.startswith(b"HTTP/1.1 101")
    return frames


def parse_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bool]:
    """Unmasked frames in ``data`` and whether it ended on a frame boundary."""
    frames, pos = [], 0
    while pos + 2 <= len(data):
        opcode, n = data[pos] & 0x0F, data[pos + 1] & 0x7F
        pos += 2
        if n == 126:
            (n,) = struct.unpack("!H", data[pos : pos + 2])
            pos += 2
        elif n == 127:
            (n,) = struct.unpack("!Q", data[pos : pos + 8])
            pos += 8
        if pos + n > len(data):
            return frames, False
        frames.append((opcode, data[pos : pos + n]))
        pos += n
    return frames, pos == len(data)


def client_frame(first_byte: int, payload: bytes, masked: bool = True) -> bytes:
    """A client-to-server frame with a chosen first byte (FIN, RSV bits, opcode)."""
    n = len(payload)
    bit = 0x80 if masked else 0
    if n < 126:
        head = bytes([first_byte, bit | n])
    elif n <= 0xFFFF:
        head = struct.pack("!BBH", first_byte, bit | 126, n)
    else:
        head = struct.pack("!BBQ", first_byte, bit | 127, n)
    if not masked:
        return head + payload
    mask = b"\x01\x02\x03\x04"
    return head + mask + apply_mask(payload, mask)


async def deflate_connect(port: int, path: str) -> tuple[socket.socket, bytes]:
    """A handshake offering permessage-deflate; returns the socket and the response head."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), 10)
        assert chunk, "closed during the handshake"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return sock, head + b"\r\n\r\n" + rest


class FrameReader:
    """Raw frames (headers included) from a socket, after the response head ``first``."""

    def __init__(self, sock: socket.socket, first: bytes) -> None:
        self.sock, self.data = sock, first.partition(b"\r\n\r\n")[2]

    async def frame(self) -> bytes:
        loop = asyncio.get_running_loop()
        while True:
            data = self.data
            if len(data) >= 2:
                size, head = data[1] & 0x7F, 2
                if size == 126:
                    size, head = int.from_bytes(data[2:4], "big"), 4
                elif size == 127:
                    size, head = int.from_bytes(data[2:10], "big"), 10
                if len(data) >= head + size:
                    self.data = data[head + size :]
                    return data[: head + size]
            chunk = await asyncio.wait_for(loop.sock_recv(self.sock, 1 << 20), 10)
            assert chunk, "closed"
            self.data += chunk

    async def compressed(self) -> bytes:
        """The first frame of the next compressed message (RSV1 set)."""
        while not (frame := await self.frame())[0] & 0x40:
            pass
        return frame

    async def rest_of_message(self, first: bytes) -> tuple[list[bytes], bytes]:
        """Its raw frames, from ``first`` to FIN, and its payload (theirs joined)."""
        frames = [first]
        while not frames[-1][0] & 0x80:
            frame = await self.frame()
            if frame[0] & 0x0F == 0:  # a continuation (a ping may come between them)
                frames.append(frame)
        return frames, b"".join(frame_payload(f) for f in frames)


def frame_payload(frame: bytes) -> bytes:
    """The payload of one unmasked frame (header included in ``frame``)."""
    return frame[{126: 4, 127: 10}.get(frame[1] & 0x7F, 2) :]
