"""The y-protocols wire format: bytes in, frozen messages out, and back.

Rule: pure. No I/O, no tornado, no asyncio, no CRDT calls; payloads stay opaque
bytes (``room`` gives them meaning). ``decode`` trusts nothing: every length and
varint is bounds-checked and any malformed input raises ``ProtocolError``.

Grammar (lib0 encoding; ``varuint`` is little-endian base-128, ``bytes`` and
``string`` are a varuint length then that many bytes, strings in UTF-8)::

    message      = varuint type, body
    type 0 sync  = varuint sync_type, bytes      ; 0 step 1 (state vector),
                                                 ; 1 step 2 (update), 2 update
    type 1 awareness       = bytes               ; an awareness update, below
    type 2 auth            = varuint 0, string   ; permission denied + reason
    type 3 query-awareness = (nothing)
    type 102 save          = bytes token         ; opt-in, below; token <= 32 bytes
    type 103 generation    = string generation   ; opt-in, below; <= 64 bytes

    awareness    = varuint count, count * (varuint client_id, varuint clock,
                                           string state_json)  ; "null" = gone

Types 102 and 103 are collab's own, outside y-protocols; a server never sends
them to a client that did not send them first (a stock y-websocket client logs
an error for a type it does not know). ``save``: a client asks "tell me once
everything I sent before this is durable"; the server answers with the same
bytes once it is (the shape of y-sweet's sync-status message 102).
``generation``: a client says which incarnation of the document its local copy
belongs to (``""``: none known); the server answers with the current one, or
closes with 4404 if the copy's is another (the document was deleted since).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum

from .errors import ProtocolError

__all__ = [
    "Auth",
    "AwarenessEntry",
    "AwarenessUpdate",
    "Generation",
    "MAX_GENERATION",
    "MAX_SAVE_TOKEN",
    "Message",
    "MessageType",
    "QueryAwareness",
    "Save",
    "SyncStep1",
    "SyncStep2",
    "SyncType",
    "Update",
    "decode",
    "encode_varuint",
    "decode_awareness",
    "encode",
    "encode_awareness",
    "read_varuint",
]

_MAX_VARUINT_BYTES = 8  # lib0 numbers are at most 53 bits
_MAX_SAFE_INTEGER = 2**53 - 1


class MessageType(IntEnum):
    SYNC = 0
    AWARENESS = 1
    AUTH = 2
    QUERY_AWARENESS = 3
    SAVE = 102  # collab's own: a durability acknowledgement (opt-in)
    GENERATION = 103  # collab's own: which incarnation of the document (opt-in)


class SyncType(IntEnum):
    STEP1 = 0
    STEP2 = 1
    UPDATE = 2


@dataclass(frozen=True, slots=True)
class SyncStep1:
    state_vector: bytes


@dataclass(frozen=True, slots=True)
class SyncStep2:
    update: bytes


@dataclass(frozen=True, slots=True)
class Update:
    update: bytes


@dataclass(frozen=True, slots=True)
class AwarenessUpdate:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Auth:
    """Permission denied, with a reason (the only auth message y-protocols defines)."""

    reason: str


@dataclass(frozen=True, slots=True)
class QueryAwareness:
    pass


@dataclass(frozen=True, slots=True)
class Save:
    """A client's "tell me when what I sent so far is durable"; the server's answer.

    ``token`` is opaque (the page sends a varuint counter) and echoed as is.
    """

    token: bytes


@dataclass(frozen=True, slots=True)
class Generation:
    """Which incarnation of the document: a client's local copy's, or the server's.

    A document's generation changes whenever it is deleted; ``""`` is none known.
    """

    generation: str


Message = (
    SyncStep1 | SyncStep2 | Update | AwarenessUpdate | Auth | QueryAwareness | Save | Generation
)

MAX_SAVE_TOKEN = 32  # bytes of a ``Save`` token
MAX_GENERATION = 64  # bytes of a ``Generation``


@dataclass(frozen=True, slots=True)
class AwarenessEntry:
    """One client's awareness state; ``state`` is JSON text, ``"null"`` when removed."""

    client_id: int
    clock: int
    state: str

    @property
    def removed(self) -> bool:
        return self.state == "null"


# -- encoding ---------------------------------------------------------------


def encode_varuint(n: int) -> bytes:
    """``n`` as a lib0 varuint (7 bits a byte, low first)."""
    out = bytearray()
    while n > 0x7F:
        out.append(0x80 | (n & 0x7F))
        n >>= 7
    out.append(n)
    return bytes(out)


def read_varuint(data: bytes, pos: int) -> tuple[int, int]:
    """The lib0 varuint at ``pos`` of ``data`` and the position after it.

    Raises:
        IndexError: it runs past the end of ``data``, or past 10 bytes.
    """
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise IndexError("varuint too long")


def _varbytes(data: bytes) -> bytes:
    return encode_varuint(len(data)) + data


_SYNC_PREFIX = {
    SyncStep1: bytes([MessageType.SYNC, SyncType.STEP1]),
    SyncStep2: bytes([MessageType.SYNC, SyncType.STEP2]),
    Update: bytes([MessageType.SYNC, SyncType.UPDATE]),
}


def encode(message: Message) -> bytes:
    """Return the wire bytes of one message."""
    match message:
        case SyncStep1(state_vector=data) | SyncStep2(update=data) | Update(update=data):
            # one copy of ``data`` (a step 2 can be many MB)
            return b"".join((_SYNC_PREFIX[type(message)], encode_varuint(len(data)), data))
        case AwarenessUpdate(payload):
            return bytes([MessageType.AWARENESS]) + _varbytes(payload)
        case Auth(reason):
            return bytes([MessageType.AUTH, 0]) + _varbytes(reason.encode())
        case QueryAwareness():
            return bytes([MessageType.QUERY_AWARENESS])
        case Save(token):
            return bytes([MessageType.SAVE]) + _varbytes(token)
        case Generation(generation):
            return bytes([MessageType.GENERATION]) + _varbytes(generation.encode())
    raise TypeError(f"not a message: {message!r}")


def encode_awareness(entries: list[AwarenessEntry]) -> bytes:
    """Return an awareness update payload holding ``entries``."""
    parts = [encode_varuint(len(entries))]
    for entry in entries:
        parts += [encode_varuint(entry.client_id), encode_varuint(entry.clock)]
        parts.append(_varbytes(entry.state.encode()))
    return b"".join(parts)


# -- decoding ---------------------------------------------------------------


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def varuint(self) -> int:
        n = shift = 0
        for _i in range(_MAX_VARUINT_BYTES):
            if self.pos >= len(self.data):
                raise ProtocolError("truncated varuint")
            byte = self.data[self.pos]
            self.pos += 1
            n |= (byte & 0x7F) << shift
            if byte < 0x80:
                if n > _MAX_SAFE_INTEGER:
                    raise ProtocolError("varuint out of range")
                return n
            shift += 7
        raise ProtocolError("varuint too long")

    def varbytes(self) -> bytes:
        length = self.varuint()
        end = self.pos + length
        if end > len(self.data):
            raise ProtocolError("length past end of message")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def string(self) -> str:
        try:
            return self.varbytes().decode()
        except UnicodeDecodeError:
            raise ProtocolError("string is not UTF-8") from None

    def end(self) -> None:
        if self.pos != len(self.data):
            raise ProtocolError("trailing bytes after message")


_SYNC_TYPES: dict[SyncType, type[SyncStep1 | SyncStep2 | Update]] = {
    SyncType.STEP1: SyncStep1,
    SyncType.STEP2: SyncStep2,
    SyncType.UPDATE: Update,
}


def decode(data: bytes) -> Message:
    """Parse one message.

    Raises:
        ProtocolError: the bytes are not exactly one well-formed message. The
            caller closes the connection with ``ProtocolError.close_code``.
    """
    if (  # a keystroke: decoded at a glance
        len(data) > 3
        and data[0] == MessageType.SYNC
        and data[1] == SyncType.UPDATE
        and data[2] < 0x80
        and len(data) == 3 + data[2]
    ):
        return Update(data[3:])
    reader = _Reader(data)
    kind = reader.varuint()
    message: Message
    if kind == MessageType.SYNC:
        sync_type = reader.varuint()
        if sync_type not in _SYNC_TYPES:
            raise ProtocolError(f"unknown sync message type {sync_type}")
        message = _SYNC_TYPES[SyncType(sync_type)](reader.varbytes())
    elif kind == MessageType.AWARENESS:
        message = AwarenessUpdate(reader.varbytes())
    elif kind == MessageType.AUTH:
        reader.varuint()
        message = Auth(reader.string())
    elif kind == MessageType.QUERY_AWARENESS:
        message = QueryAwareness()
    elif kind == MessageType.SAVE:
        message = Save(reader.varbytes())
        if len(message.token) > MAX_SAVE_TOKEN:
            raise ProtocolError(f"save token over {MAX_SAVE_TOKEN} bytes")
    elif kind == MessageType.GENERATION:
        message = Generation(reader.string())
        if len(message.generation.encode()) > MAX_GENERATION:
            raise ProtocolError(f"generation over {MAX_GENERATION} bytes")
    else:
        raise ProtocolError(f"unknown message type {kind}")
    reader.end()
    return message


def decode_awareness(payload: bytes) -> list[AwarenessEntry]:
    """Parse an awareness update payload; every state must be valid JSON.

    Raises:
        ProtocolError: malformed payload or a state that is not JSON (other
            clients would fail to parse it).
    """
    reader = _Reader(payload)
    count = reader.varuint()
    if count > len(payload):  # every entry takes at least 3 bytes
        raise ProtocolError("awareness count past end of message")
    entries = []
    for _ in range(count):
        client_id, clock, state = reader.varuint(), reader.varuint(), reader.string()
        try:
            json.loads(state)
        except (ValueError, RecursionError):
            raise ProtocolError("awareness state is not JSON") from None
        entries.append(AwarenessEntry(client_id, clock, state))
    reader.end()
    return entries
