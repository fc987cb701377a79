"""One client's WebSocket after the handshake: frames in, frames out, flow control.

Once ``YjsHandler`` has accepted the upgrade, the socket leaves Tornado for an
asyncio transport driven by ``WebSocket``. The websockets library's sans-I/O
``Protocol`` parses what arrives (masking, fragments, control frames, the size
limit, the closing handshake); each binary message goes to the session. What
the document sends was framed once (``binary_frame``) and is written as-is. No coroutine or
future lives per connection or per message, which is what makes an idle
connection a few KB and a message a few µs.

Flow control: once a reader's unsent output passes a quarter of
``max_pending_bytes`` the transport pauses us, and what follows is held in an
``Outbox`` (updates merge) until the socket drains; past the bound the
connection is closed with 1013.

Large messages: with permessage-deflate negotiated (``handler``), a message of
at least ``frames.COMPRESS_MIN_BYTES`` goes out compressed; the compressed frame
is built once per message and window size (``frames.deflated_frame``), in a
thread when it is big, while later messages for that socket wait in order. A
frame over ``STREAM_MIN_BYTES`` is written in ``STREAM_CHUNK_BYTES`` pieces as
the socket drains, so a 50 MB step 2 sent to ten fresh clients is held once,
not copied into ten write buffers; messages meanwhile wait in an ``Outbox``
(the same bound as a slow reader's), pings and close frames until the frame
is out.

Keep-alive: ``Sockets`` pings every live socket on one shared timer and drops
those that sent nothing, not even a pong, within ``ping_timeout``. A socket
whose output drained since the last ping counts as alive: a client reading a
large message cannot answer a ping queued behind it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from websockets.exceptions import PayloadTooBig
from websockets.exceptions import ProtocolError as WireProtocolError
from websockets.extensions.base import Extension
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode
from websockets.protocol import OPEN, SEND_EOF, Protocol, Side

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets without its C extension
    from websockets.utils import apply_mask

from ..core import limits, protocol
from ..core.auth import Permission
from ..core.config import Config
from ..core.errors import (
    BadFrame,
    CollabError,
    Forbidden,
    MessageTooBig,
    PolicyViolation,
    SlowConsumer,
    Unauthorized,
    UnsupportedData,
)
from ..storage.pools import started_pool
from .deflation import Deflation
from .frames import (
    COMPRESS_MIN_BYTES,
    binary_frame,
    cached_deflated_frame,
    deflated_frame,
    frame_head,
)
from .session import Peer, Session
from .split import SPLIT_MIN_BYTES, LinkRate, Split

__all__ = ["Gateway", "SocketLimits", "Sockets", "WebSocket"]

log = logging.getLogger("collab.handler")

CLOSE_TIMEOUT = 5.0  # seconds a client has to answer our close frame
_PING = b"\x89\x00"  # an empty ping frame
STREAM_MIN_BYTES = 1 << 20  # frames above this are written piecewise as the socket drains
STREAM_CHUNK_BYTES = 256 << 10
THREAD_MIN_BYTES = 256 << 10  # messages above this are compressed in a thread
LARGE_FRAME_BYTES = 1 << 20  # frames from a client above this are unmasked and inflated there too
_STEP2 = bytes([protocol.MessageType.SYNC, protocol.SyncType.STEP2])  # a step 2's first bytes
JOIN_BUFFER_BYTES = 1 << 20  # read from a client while it joins; then reading pauses until it has

# One thread compresses large messages (zlib releases the GIL): the loop goes on.
_deflater: concurrent.futures.ThreadPoolExecutor | None = None


class _WireLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The websockets library's log, without its line per closed connection."""

    def isEnabledFor(self, level: int) -> bool:
        return level >= logging.WARNING and self.logger.isEnabledFor(level)


wire_log = _WireLog(logging.getLogger("collab.wire"), {})


@dataclass(frozen=True, slots=True)
class SocketLimits:
    """What one connection may send and leave waiting (0 = no limit)."""

    rate_messages: float = 0.0
    rate_messages_burst: int = 0
    rate_bytes: float = 0.0
    rate_bytes_burst: int = 0
    max_pending_bytes: int = 0

    @classmethod
    def of(cls, config: Config) -> SocketLimits:
        return cls(
            config.rate_messages,
            config.rate_messages_burst,
            config.rate_bytes,
            max(config.rate_bytes_burst, limits.message_bound(config)),
            config.max_pending_bytes,
        )


@dataclass(frozen=True, slots=True)
class Gateway:
    """What a socket needs of the server, handed to it (never reached through a hub).

    Attributes:
        join: ``join(name, peer, permission, id, remote)`` lets the socket into a document.
        join_now: the same without waiting, or None if it would have to wait.
        limits: its rates and output bound.
        sockets: the keep-alive registry it joins.
        clock: wall time (Unix seconds), for token expiry.
        refused: called with the close code of every refusal (a metric).
    """

    join: Callable[[str, Peer, Permission, str, str], Awaitable[Session]]
    join_now: Callable[[str, Peer, Permission, str, str], Session | None]
    limits: SocketLimits
    sockets: Sockets
    clock: Callable[[], float]
    refused: Callable[[int], None]


class WebSocket(asyncio.Protocol):
    """A joined client: the ``Peer`` of one ``Session``.

    Created by the handler with the accepted handshake's response and whatever
    the client sent after it; ``start`` joins the document.
    """

    __slots__ = (
        "_bytes",
        "_closer",
        "_corked",
        "_deflation",
        "_eof_held",
        "_expiry",
        "_extensions",
        "_fragment",
        "_fragments",
        "_held",
        "_joining",
        "_large",
        "_link",
        "_max_size",
        "_messages",
        "_on_lost",
        "_part",
        "_rx",
        "_slow",
        "_split",
        "_stream",
        "_wire",
        "alive",
        "deflate",
        "gateway",
        "id",
        "ip",
        "outbox",
        "permission",
        "session",
        "transport",
    )

    _ids = iter(range(1, 1 << 62))

    def __init__(
        self,
        gateway: Gateway,
        permission: Permission,
        ip: str,
        max_size: int | None,
        on_lost: Callable[[], None],
        extensions: list[Extension] | None = None,
    ) -> None:
        limit, now = gateway.limits, time.monotonic()
        self.gateway = gateway
        self.permission = permission
        self.ip = ip
        self.id = f"c{next(WebSocket._ids)}"
        # websockets' parser, made once a frame needs it (``wire``): most clients
        # only ever send binary messages, which ``data_received`` reads itself.
        self._wire: Protocol | None = None
        self._max_size = max_size
        self._extensions = list(extensions or ())
        # The window bits of a negotiated permessage-deflate (0: none). websockets
        # decompresses what the client sends, bounded by ``max_size`` (a bomb is 1009).
        self.deflate = 0
        if extensions:
            for ext in extensions:
                if isinstance(ext, PerMessageDeflate):
                    self.deflate = ext.local_max_window_bits or 15
        self._held: limits.Outbox | None = None  # messages behind a compression or a stream
        self._stream: memoryview | None = None  # the rest of a large frame being written
        self._deflation: Deflation | None = None  # a large message going out compressed
        self._fragment = 0  # ...the index of its next fragment
        self._split: Split | None = None  # a large step 2 going out in parts
        self._part = 0  # ...the index of its next part
        self._link: LinkRate | None = None  # ...how fast its parts have left
        self._rx = b""  # the start of a frame not yet whole (``data_received``)
        self._slow = 0  # bytes websockets' parser is owed of its frame; < 0: all from now
        self._large: _LargeFrame | None = None  # a large frame from the client, being read
        self._joining = True  # what arrives before ``start`` has joined waits in ``_rx``
        self._eof_held = False  # ...and an end of stream, after it
        self._corked: list[bytes] | None = None  # frames written as one, during ``start``
        self.transport: asyncio.Transport | None = None
        self.session: Session | None = None
        self.outbox: limits.Outbox | None = None
        self.alive = True  # something arrived since the last keep-alive ping
        self._messages = limits.TokenBucket(limit.rate_messages, limit.rate_messages_burst, now)
        self._bytes = limits.TokenBucket(limit.rate_bytes, limit.rate_bytes_burst, now)
        self._fragments: list[bytes] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._closer: asyncio.TimerHandle | None = None
        self._on_lost: Callable[[], None] | None = on_lost

    @property
    def wire(self) -> Protocol:
        """websockets' sans-I/O protocol for this connection (made on first use)."""
        wire = self._wire
        if wire is None:
            wire = self._wire = Protocol(Side.SERVER, max_size=self._max_size, logger=wire_log)
            wire.extensions = self._extensions  # the same inflater as ``_open_large`` uses
        return wire

    @property
    def _open(self) -> bool:
        """Is the WebSocket open (no close frame sent or received, no protocol error)?"""
        wire = self._wire
        return wire is None or wire.state is OPEN

    # -- lifecycle ------------------------------------------------------------------

    async def start(self, name: str, greeting: bytes, early: bytes) -> None:
        """``begin``, and wait for the join if it has to wait."""
        joining = self.begin(name, greeting, early)
        if joining is not None:
            await joining

    def begin(self, name: str, greeting: bytes, early: bytes) -> asyncio.Task[None] | None:
        """Send ``greeting`` (the 101 response), join ``name``, then read.

        ``early`` is what the client sent right after its handshake; what arrives
        during the join waits for it, so no message meets an unloaded document.
        The join is done at once if the document is open and idle; the 101 and
        the join's first messages then go out in one write. Otherwise (a
        document loading) the 101 goes at once and the returned task, which
        the caller keeps, finishes the join.
        """
        assert self.transport is not None
        self._corked = [greeting]
        try:
            session = self.gateway.join_now(name, self, self.permission, self.id, self.ip)
        except Exception as exc:
            self._not_joined(name, exc)
        else:
            if session is None:
                self._uncork()  # the client may go on while the document loads
                return asyncio.ensure_future(self._join(name, early))
            self._joined(session)
        self._read_on(early)
        return None

    async def _join(self, name: str, early: bytes) -> None:
        try:
            session = await self.gateway.join(name, self, self.permission, self.id, self.ip)
        except Exception as exc:
            self._not_joined(name, exc)
        else:
            self._joined(session)
        self._read_on(early)

    def _not_joined(self, name: str, exc: Exception) -> None:
        self._uncork()
        if isinstance(exc, CollabError):
            self.refuse(exc)  # and read on, for the client's answer to the close
            return
        log.error("error joining %r", name, exc_info=exc)
        self.refuse(CollabError("internal error"))

    def _joined(self, session: Session) -> None:
        self.session = session
        self._uncork()
        if self.transport is None:  # gone while the document loaded
            self._leave()
            return
        if self.permission.expires is not None:
            delay = max(0.0, self.permission.expires - self.gateway.clock())
            loop = asyncio.get_running_loop()
            self._expiry = loop.call_later(delay, self.refuse, Unauthorized("token expired"))

    def _read_on(self, early: bytes) -> None:
        """Joined or refused: read ``early`` and what came during the join, then on."""
        if self.transport is None:
            return
        self.gateway.sockets.add(self)  # pinged from now on, while its answers are read
        self._joining = False
        waited, self._rx = self._rx, b""
        data = early + waited if waited else early
        if data:
            self.data_received(data)  # frames are ignored if refused, but parsed
        if self._eof_held and self.transport is not None:
            self._eof_held = False
            self.eof_received()
            self.transport.close()
        opening = self._large is not None and self._large.opening  # reads on once it is opened
        if self.transport is not None and not self.transport.is_closing() and not opening:
            self.transport.resume_reading()  # paused if much came during the join

    def _uncork(self) -> None:
        corked, self._corked = self._corked, None
        if corked and self.transport is not None and not self.transport.is_closing():
            self.transport.write(corked[0] if len(corked) == 1 else b"".join(corked))

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        bound = self.gateway.limits.max_pending_bytes
        if bound > 0:
            transport.set_write_buffer_limits(high=max(bound // 4, 1))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._held = self._stream = self._deflation = self._split = None
        for timer in (self._expiry, self._closer):
            if timer is not None:
                timer.cancel()
        self._expiry = self._closer = None
        self._leave()
        self.gateway.sockets.discard(self)
        if self._on_lost is not None:
            self._on_lost()
            self._on_lost = None

    def eof_received(self) -> bool | None:
        if self._joining:
            self._eof_held = True
            return True  # kept open: the end is read after what came before it
        if self._wire is None:
            return None  # only whole binary frames came: the transport closes itself
        self._wire.receive_eof()
        self._flush_wire()
        return None  # the transport closes itself

    # -- reading --------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        """Cut ``data`` into frames: small binary ones here, any other by websockets.

        The usual frame (a whole, masked binary message under 64 KiB, no RSV
        bit, outside a fragmented message, within the size limit) is unmasked
        and handed on directly. Every other frame (control, text, fragments,
        compressed, large, malformed) goes to websockets' parser byte for byte,
        and only whole: ``_slow`` counts what it is still owed of the current
        one, so both parsers always meet at a frame boundary. After a protocol
        error or the close, websockets takes everything (``_slow`` < 0).
        """
        self.alive = True
        if self._joining:
            self._rx += data
            if len(self._rx) > JOIN_BUFFER_BYTES and self.transport is not None:
                self.transport.pause_reading()  # until the join is done
            return
        if self._rx:
            data, self._rx = self._rx + data, b""
        pos, end = 0, len(data)
        while pos < end:
            wire = self._wire  # None until a frame needed it (or a close was sent)
            large = self._large
            if large is not None:  # the payload of a large frame: kept for the thread
                n = min(large.owed, end - pos)
                large.parts.append(data[pos : pos + n] if pos or n < end else data)
                large.owed -= n
                pos += n
                if not large.owed:
                    self._rx = data[pos:]  # read once the frame is opened
                    self._open_large(large)
                    return
                continue
            owed = self._slow
            if owed:
                n = end - pos if owed < 0 else min(owed, end - pos)
                if owed > 0:
                    self._slow = owed - n
                self._feed(data[pos : pos + n] if pos or n < end else data)
                pos += n
                continue
            if end - pos < 2:
                self._rx = data[pos:]
                return
            first, second = data[pos], data[pos + 1]
            size, head = second & 0x7F, 6
            if size == 126:
                if end - pos < 4:
                    self._rx = data[pos:]
                    return
                size, head = (data[pos + 2] << 8) | data[pos + 3], 8
            elif size == 127:
                if end - pos < 10:
                    self._rx = data[pos:]
                    return
                size, head = int.from_bytes(data[pos + 2 : pos + 10], "big"), 14
            limit = self._max_size
            fits = limit is None or size <= limit
            if not second & 0x80 or not fits or (wire is not None and wire.state is not OPEN):
                self._slow = -1  # websockets refuses it (1002, 1009) or is closing
                continue
            fragmented = wire is not None and wire.current_size is not None
            if first != 0x82 or head == 14 or fragmented:
                if (
                    head == 14
                    and size >= LARGE_FRAME_BYTES
                    and not fragmented
                    and (first == 0x82 or (first == 0xC2 and self.deflate))
                ):
                    if end - pos < head:
                        self._rx = data[pos:]
                        return
                    mask = data[pos + head - 4 : pos + head]
                    self._large = _LargeFrame(first == 0xC2, mask, size)
                    pos += head
                    continue
                self._slow = head + size  # one frame for websockets
                continue
            total = head + size
            if end - pos < total:
                self._rx = data[pos:]
                return
            message = apply_mask(data[pos + head : pos + total], data[pos + head - 4 : pos + head])
            pos += total
            self._message(message)
            if self.transport is None:
                return

    def _open_large(self, large: _LargeFrame) -> None:
        """Unmask (and inflate) a large binary frame in a thread; read on once it is done.

        A message of many MB costs tens of ms to unmask and inflate: done here it
        would hold every room. Reading pauses meanwhile, so what follows stays in order.
        """
        assert self.transport is not None
        self.transport.pause_reading()
        large.opening = True
        inflater = None
        if large.compressed:
            inflater = next(e for e in self._extensions if isinstance(e, PerMessageDeflate))
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(
            deflater(), _opened_frame, large.parts, large.mask, inflater, self._max_size
        )
        large.parts = []
        job.add_done_callback(self._large_opened)

    def _large_opened(self, job: asyncio.Future[bytes]) -> None:
        self._large = None
        if self.transport is None:
            return  # gone meanwhile
        try:
            message = job.result()
        except PayloadTooBig:
            self.refuse(MessageTooBig("message too big"))
        except WireProtocolError:
            self.refuse(BadFrame("decompression failed"))
        except Exception:
            log.exception("opening a large frame failed")
            self.refuse(CollabError("internal error"))
        else:
            if self._open:
                self._message(message)
        if self.transport is not None:
            self.transport.resume_reading()
            if self._rx:
                self.data_received(b"")

    def _feed(self, data: bytes) -> None:
        """Give ``data`` to websockets' parser; handle the frames it completes."""
        wire = self.wire
        wire.receive_data(data)
        for frame in wire.events_received():
            if self.session is not None:
                self._frame(frame)  # type: ignore[arg-type]  # a server protocol yields frames
        if wire.parser_exc is not None and self.session is not None:
            exc = wire.parser_exc
            code = wire.close_sent.code if wire.close_sent is not None else 1006
            self._log_refusal(str(exc) or type(exc).__name__, code)
            self._leave()
        self._flush_wire()
        if wire.parser_exc is not None or wire.state is not OPEN:
            self._slow = -1

    def _frame(self, frame: Frame) -> None:
        opcode, data = frame.opcode, bytes(frame.data)
        if opcode is Opcode.BINARY and frame.fin:
            self._message(data)
        elif opcode is Opcode.TEXT:
            self.refuse(UnsupportedData("text frames not supported"))
        elif opcode is Opcode.BINARY:
            self._fragments = [data]
        elif opcode is Opcode.CONT and self._fragments is not None:
            self._fragments.append(data)
            if frame.fin:
                message, self._fragments = b"".join(self._fragments), None
                self._message(message)
        elif opcode is Opcode.CLOSE:
            self._leave()

    def _message(self, message: bytes) -> None:
        session = self.session
        if session is None:
            return  # refused already: frames still in flight are ignored
        try:
            self._charge(len(message))
            session.receive(message)
        except CollabError as exc:
            self.refuse(exc)
        except Exception:
            log.exception("error handling a message for %r", session.name)
            self.refuse(CollabError("internal error"))

    def _charge(self, size: int) -> None:
        limit, now = self.gateway.limits, time.monotonic()
        if not self._messages.take(1, now):
            raise PolicyViolation(f"rate limit: over {limit.rate_messages:g} messages/s")
        if not self._bytes.take(size, now):
            raise PolicyViolation(f"rate limit: over {limit.rate_bytes:g} bytes/s")

    # -- writing (what the document calls) -------------------------------------------

    def send(self, data: bytes) -> None:
        """Write ``data`` as one binary frame, or hold it while the reader is behind."""
        if self._held is not None:  # behind a compression or a large frame
            if not self._held.put(data):
                self._held = None
                self._too_far_behind()
            return
        if self.outbox is not None:
            if not self.outbox.put(data):
                self.outbox = None
                self._too_far_behind()
            return
        transport = self.transport
        if transport is None or not self._open or transport.is_closing():
            return
        if len(data) >= SPLIT_MIN_BYTES and data[:2] == _STEP2:
            self._send_split(data)
        elif self.deflate and len(data) >= THREAD_MIN_BYTES:
            self._compress(data)
        elif self.deflate and len(data) >= COMPRESS_MIN_BYTES:
            self._write(
                cached_deflated_frame(data, self.deflate) or deflated_frame(data, self.deflate)
            )
        else:
            self._write(binary_frame(data))

    def _too_far_behind(self) -> None:
        bound = self.gateway.limits.max_pending_bytes
        self.refuse(SlowConsumer(f"too far behind: over {bound} bytes waiting"))

    def _write(self, frame: bytes) -> None:
        """Write a whole frame now, or start streaming a large one."""
        assert self.transport is not None
        if len(frame) <= STREAM_MIN_BYTES:
            if self._corked is not None:
                self._corked.append(frame)
            else:
                self.transport.write(frame)
            return
        self._hold_behind()
        self._stream = memoryview(frame)
        self._pump()

    def _pump(self) -> None:
        """Write what is in the way: the large frame's next pieces, the compressed message's
        next fragments, the split step 2's next parts; until the transport pushes back, the
        next fragment or the parts are still being made, or all is out."""
        while True:
            transport = self.transport
            if transport is None:
                return
            if self.outbox is not None:  # paused: ``resume_writing`` pumps on
                return
            if self._stream is not None:
                chunk, rest = self._stream[:STREAM_CHUNK_BYTES], self._stream[STREAM_CHUNK_BYTES:]
                self._stream = rest if len(rest) else None
                transport.write(chunk)
                continue
            deflation = self._deflation
            if deflation is not None:
                if deflation.failed:  # nothing may follow half a message but a close
                    self._deflation = self._split = self._held = None
                    self.refuse(CollabError("internal error"))
                    return
                if not self._open:  # a close frame went out between two fragments
                    self._deflation = self._split = None
                    break
                if self._fragment < len(deflation.frames):
                    frame = deflation.frames[self._fragment]
                    self._fragment += 1
                    self._stream = memoryview(frame)
                    continue
                if not deflation.done:
                    deflation.readers.add(self)  # ``fragment_ready`` pumps on
                    return
                self._deflation = None
                continue
            if self._split is None or not self._next_part(transport):
                break
        self._release()

    def _next_part(self, transport: asyncio.Transport) -> bool:
        """Start the next part of the split step 2; False once there is none (or it waits)."""
        split = self._split
        assert split is not None
        if not split.done:
            split.readers.add(self)  # ``fragment_ready`` pumps on once it is cut
            return False
        if self._part >= len(split.parts) or not self._open:
            self._split = self._link = None
            return True  # and the pump releases what waited
        part = split.parts[self._part]
        self._part += 1
        if self._link is None:  # judged from the first part on
            self._link = LinkRate(time.monotonic())
        link = self._link
        if self.deflate and (
            len(split.parts) == 1 or link.slow(time.monotonic(), transport.get_write_buffer_size())
        ):
            self._deflation = Deflation.of(part, self.deflate, deflater())
            self._fragment = 0
        else:
            head = frame_head(len(part))
            transport.write(head)
            self._stream = memoryview(part)
        link.sent += len(part)
        return True

    def fragment_ready(self) -> None:
        """The message being sent has another fragment, or the step 2 its parts."""
        self._pump()

    def _hold_behind(self) -> None:
        """A message is about to be written piecewise: what is sent meanwhile waits."""
        self._uncork()
        if self._held is None:
            self._held = limits.Outbox(self.gateway.limits.max_pending_bytes)

    def _release(self) -> None:
        """The frame in the way is out: send what waited behind it, in order."""
        held, self._held = self._held, None
        self._flush_wire()  # a pong or close frame queued meanwhile
        if held is not None:
            for message in held.take():
                self.send(message)

    def _send_split(self, data: bytes) -> None:
        """Send a large step 2 as the parts ``Split`` cuts it into, each compressed only
        once the link has shown it is slow (``LinkRate``); hold what follows until it is out."""
        self._hold_behind()
        self._split = Split.of(data, deflater())
        self._part = 0
        self._link = None
        self._pump()

    def _compress(self, data: bytes) -> None:
        """Send a large message compressed, each fragment as the deflate thread makes it
        (``Deflation``: once per message and window); hold what follows until it is out."""
        self._hold_behind()
        self._deflation = Deflation.of(data, self.deflate, deflater())
        self._fragment = 0
        self._pump()

    def pause_writing(self) -> None:
        if self.outbox is None and self._open:
            self.outbox = limits.Outbox(self.gateway.limits.max_pending_bytes)

    def resume_writing(self) -> None:
        self.alive = True  # the client is reading
        outbox, self.outbox = self.outbox, None
        if self._mid_message:
            if outbox is not None and self._held is not None:
                for message in outbox.take():  # none expected: sends wait in ``_held``
                    self._held.put(message)
            self._pump()
            return
        if outbox is not None:
            for message in outbox.take():
                self.send(message)

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake; the socket goes after the answer or a timeout."""
        if self.transport is None or not self._open:
            return
        self.outbox = None
        self.wire.send_close(code, reason.encode()[:120].decode(errors="ignore"))
        self._flush_wire()

    def refuse(self, exc: CollabError) -> None:
        """Close with ``exc``'s code and reason, once; log who and why."""
        if self.transport is None or not self._open:
            return
        self._log_refusal(exc.reason, exc.close_code)
        if isinstance(exc, Unauthorized | Forbidden) and not self._mid_message:
            # y-websocket reconnects on any close; the auth message says why.
            self._uncork()
            self.transport.write(binary_frame(protocol.encode(protocol.Auth(exc.reason))))
        self._leave()
        self.close(exc.close_code, exc.reason)

    def drop(self, reason: str) -> None:
        """Close at once, without a handshake (the peer is not answering)."""
        if self.transport is not None:
            fields = {"event": "connection_dropped", **self._fields(), "reason": reason}
            log.info("dropping %s on %r: %s", self._who(), self._room_name(), reason, extra=fields)
            self._leave()
            self.transport.abort()

    def ping(self) -> None:
        if self.transport is not None and self._open and self._stream is None:
            self.transport.write(_PING)

    # -- internals --------------------------------------------------------------------

    @property
    def _mid_message(self) -> bool:
        """Is a message partly written (no data frame may go out until it is done)?"""
        return self._stream is not None or self._deflation is not None or self._split is not None

    def _flush_wire(self) -> None:
        """Write what the protocol produced (pongs, close frames); end the TCP stream."""
        wire, transport = self._wire, self.transport
        if transport is None or wire is None:
            return  # no protocol yet: nothing of its to write
        if self._stream is None:  # else not in the middle of a frame: after it
            self._write_wire(transport)
        if wire.state is not OPEN and self._closer is None:
            # ...or a while after our close frame, if the client never reads or answers
            loop = asyncio.get_running_loop()
            self._closer = loop.call_later(CLOSE_TIMEOUT, transport.abort)

    def _write_wire(self, transport: asyncio.Transport) -> None:
        self._uncork()
        for data in self.wire.data_to_send():
            if data is SEND_EOF or not data:
                transport.close()  # once the buffer is flushed...
                break
            transport.write(data)

    def _leave(self) -> None:
        self._fragments = None
        if self.session is not None:
            session, self.session = self.session, None
            session.leave()

    def _log_refusal(self, reason: str, code: int) -> None:
        fields = {"event": "connection_closed", **self._fields(), "code": code, "reason": reason}
        who, name = self._who(), self._room_name()
        log.warning("closing %s on %r: %s (%d)", who, name, reason, code, extra=fields)
        self.gateway.refused(code)

    def _fields(self) -> dict[str, str]:
        """Who this is, for structured logs (``--log-format json``)."""
        fields = {"connection": self.id, "document": self._room_name(), "remote": self.ip}
        if self.permission.user is not None:
            fields["sub"] = self.permission.user
        return fields

    def _who(self) -> str:
        return f"{self.permission.user or '-'}@{self.ip}"

    def _room_name(self) -> str:
        return self.session.name if self.session is not None else "-"

    def __repr__(self) -> str:
        return f"<WebSocket {self._who()} {self._room_name()!r}>"


@dataclass(slots=True)
class _LargeFrame:
    """A large binary frame from a client, read in pieces (``WebSocket.data_received``)."""

    compressed: bool  # RSV1: permessage-deflate
    mask: bytes
    owed: int  # payload bytes still to come
    parts: list[bytes] = field(default_factory=list)
    opening: bool = False  # whole: being unmasked and inflated in the thread


def _opened_frame(
    parts: list[bytes], mask: bytes, inflater: PerMessageDeflate | None, max_size: int | None
) -> bytes:
    """The message in a large frame: unmasked, and inflated (at most ``max_size`` bytes).

    Runs in the deflate thread (apply_mask and zlib release the GIL or are fast C).

    Raises:
        PayloadTooBig: inflated, it would pass ``max_size``; ProtocolError: bad deflate data.
    """
    data = apply_mask(b"".join(parts), mask)
    if inflater is None:
        return data
    frame = inflater.decode(Frame(Opcode.BINARY, data, rsv1=True), max_size=max_size)
    return bytes(frame.data)


def deflater() -> concurrent.futures.ThreadPoolExecutor:
    """The thread that compresses large messages (started at the first call; the hub
    calls it when it starts, before any heavy work could delay a thread's start)."""
    global _deflater
    if _deflater is None:
        _deflater = started_pool(1, "collab-deflate")
    return _deflater


class Sockets:
    """The live sockets of one application: one keep-alive timer for them all.

    Every ``interval`` seconds each socket is pinged; one that has sent nothing
    (a pong counts) ``timeout`` seconds later is dropped.
    """

    def __init__(self, interval: float | None, timeout: float | None) -> None:
        self.interval = interval or 0.0
        self.timeout = min(timeout or 0.0, self.interval)  # 0: ping, never drop
        self.live: set[WebSocket] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._empty: asyncio.Future[None] | None = None

    def configure(self, interval: float | None, timeout: float | None) -> None:
        """Set the keep-alive timing (a host application's Tornado settings win)."""
        self.interval = interval or 0.0
        self.timeout = min(timeout or 0.0, self.interval)

    def add(self, ws: WebSocket) -> None:
        self.live.add(ws)
        if self._timer is None and self.interval > 0:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def discard(self, ws: WebSocket) -> None:
        self.live.discard(ws)
        if not self.live:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._empty is not None and not self._empty.done():
                self._empty.set_result(None)

    async def closed(self, timeout: float) -> None:
        """Wait until every socket is closed; past ``timeout`` seconds, drop the rest.

        For shutdown, after the hub has sent every socket its close frame.
        """
        if not self.live:
            return
        self._empty = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._empty), timeout)
        except TimeoutError:
            for ws in list(self.live):
                ws.drop("server shutting down")

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        if self.timeout >= self.interval > 0:
            self._check()  # the previous round's answers are due now
        for ws in list(self.live):
            ws.alive = False
            ws.ping()
        if 0 < self.timeout < self.interval:
            loop.call_later(self.timeout, self._check)
        self._timer = loop.call_later(self.interval, self._tick) if self.live else None

    def _check(self) -> None:
        """Drop the sockets silent since the last ping (new ones start alive)."""
        for ws in [ws for ws in self.live if not ws.alive]:
            ws.drop(f"no answer to a ping within {self.timeout:g}s")
