"""A large Yjs update cut into pieces that apply one after another to the same result.

Rule: pure. No I/O, no pycrdt: this module reads the lib0 v1 encoding.

Why: pycrdt holds the GIL for the whole of one ``apply_update``; applying a
50 MB snapshot at once holds every other room for 0.1 s or more. Applied
piece by piece, the loop runs between the pieces.

A v1 update is its structs, grouped by client (each group: count, client,
first clock, then the structs, whose clocks follow from their lengths), then
its delete set. A struct is encoded on its own (its clock is implicit), so a
piece is a run of whole structs copied as they are, under a new group head:

    update  = groups:varuint (count:varuint client:varuint clock:varuint struct*)* ds
    struct  = info:u8 (GC: len | Skip: len | Item)
    item    = [origin:id] [right_origin:id] [parent: 1 name:string | 0 id] [sub:string] content

A piece never needs one after it: a cut is made only where every struct so far
has what it refers to (its origins, its parent, the previous clock of its
client) in an earlier piece, in the same piece or in the receiving document.
Where no cut is safe, the rest stays together. The delete set goes with the
last piece, once every item it may name is there.
"""

from __future__ import annotations

from dataclasses import dataclass

from .protocol import encode_varuint, read_varuint

__all__ = ["Pieces", "decode_state_vector", "split_update"]

_GC, _SKIP = 0, 10
_CONTENT = 0x1F
_HAS_ORIGIN, _HAS_RIGHT, _HAS_SUB = 0x80, 0x40, 0x20
_XML_ELEMENT, _XML_HOOK = 3, 5  # type refs followed by a name
_CONTINUATION = bytes(range(0x80, 0xC0))  # UTF-8 bytes that start no character
_NOT_FOUR_BYTE_LEAD = bytes(b for b in range(256) if not 0xF0 <= b <= 0xF7)


@dataclass(frozen=True, slots=True)
class Pieces:
    """An update cut for applying in turn."""

    parts: list[bytes]
    new: bool  # no struct of it was in the document already (each client's start ≥ its clock)


class _Unknown(Exception):
    """Something this reader does not know (a newer content type): do not cut."""


class _Reader:
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def uint(self) -> int:
        value, self.pos = read_varuint(self.data, self.pos)
        return value

    def skip_varint(self) -> None:
        """A signed varint (lib0): every byte but the last has its top bit set."""
        data, pos = self.data, self.pos
        while data[pos] & 0x80:
            pos += 1
        self.pos = pos + 1

    def skip(self, n: int) -> None:
        if self.pos + n > len(self.data):
            raise IndexError("past the end")
        self.pos += n

    def string_bytes(self) -> bytes:
        n = self.uint()
        start = self.pos
        self.skip(n)
        return self.data[start : self.pos]

    def skip_string(self) -> None:
        self.skip(self.uint())

    def skip_any(self, depth: int = 0) -> None:
        if depth > 64:
            raise _Unknown("nested too deep")
        tag = self.data[self.pos]
        self.pos += 1
        if tag in (127, 126, 121, 120):  # undefined, null, false, true
            return
        if tag == 125:
            self.skip_varint()
        elif tag == 124:
            self.skip(4)
        elif tag in (123, 122):
            self.skip(8)
        elif tag in (119, 116):  # a string, bytes
            self.skip_string()
        elif tag == 118:  # an object
            for _ in range(self.uint()):
                self.skip_string()
                self.skip_any(depth + 1)
        elif tag == 117:  # an array
            for _ in range(self.uint()):
                self.skip_any(depth + 1)
        else:
            raise _Unknown(f"any tag {tag}")


def _utf16_length(raw: bytes) -> int:
    """The UTF-16 length of UTF-8 ``raw`` (Yjs counts a string's clock in UTF-16 units)."""
    if raw.isascii():
        return len(raw)
    return len(raw.translate(None, _CONTINUATION)) + len(raw.translate(None, _NOT_FOUR_BYTE_LEAD))


def _content_length(r: _Reader, ref: int) -> int:
    """Skip an item's content of type ``ref``; return how many clocks it spans."""
    if ref == 1:  # deleted
        return r.uint()
    if ref == 2:  # JSON values
        n = r.uint()
        for _ in range(n):
            r.skip_string()
        return n
    if ref in (3, 4):  # binary, string
        raw = r.string_bytes()
        return 1 if ref == 3 else _utf16_length(raw)
    if ref == 5:  # embed
        r.skip_string()
        return 1
    if ref == 6:  # format: key, value
        r.skip_string()
        r.skip_string()
        return 1
    if ref == 7:  # a shared type
        type_ref = r.uint()
        if type_ref in (_XML_ELEMENT, _XML_HOOK):
            r.skip_string()
        elif type_ref > 6:
            raise _Unknown(f"type ref {type_ref}")
        return 1
    if ref == 8:  # any values
        n = r.uint()
        for _ in range(n):
            r.skip_any()
        return n
    if ref == 9:  # a subdocument
        r.skip_string()
        r.skip_any()
        return 1
    raise _Unknown(f"content ref {ref}")


def decode_state_vector(vector: bytes) -> dict[int, int]:
    """A state vector's clock per client (compare these, not the bytes: their order
    is not fixed).

    Raises:
        ValueError: not a state vector.
    """
    r = _Reader(vector)
    try:
        state = {r.uint(): r.uint() for _ in range(r.uint())}
    except (_Unknown, IndexError):
        raise ValueError("not a state vector") from None
    if r.pos != len(vector):
        raise ValueError("bytes after the state vector")
    return state


def split_update(update: bytes, piece_bytes: int, present: bytes = b"\x00") -> Pieces | None:
    """``update`` as pieces of about ``piece_bytes`` or more, to apply in order.

    ``present``: the state vector of the document they go into (what their
    structs may refer to without it being in an earlier piece). Returns None
    when it is small, cannot be cut at all, or holds something this reader
    does not know: apply it whole.
    """
    if len(update) <= piece_bytes:
        return None
    try:
        pieces = _split(update, piece_bytes, decode_state_vector(present))
    except (_Unknown, IndexError, ValueError):
        return None
    return pieces if len(pieces.parts) > 1 else None


@dataclass(slots=True)
class _Struct:
    clock: int
    end: int  # the clock after it
    start: int  # its bytes in the update: [start, stop)
    stop: int
    refs: list[tuple[int, int]]  # (client, clock) it refers to


def _read_structs(
    update: bytes, frontier: dict[int, int]
) -> tuple[dict[int, list[_Struct]], int, bool]:
    """Every client's structs in order, where the delete set starts, and whether
    no struct was in the document already (``frontier``: its state)."""
    r = _Reader(update)
    clients: dict[int, list[_Struct]] = {}
    new = True
    for _ in range(r.uint()):
        count, client, clock = r.uint(), r.uint(), r.uint()
        if client in clients:
            raise _Unknown("a client twice")
        new = new and clock >= frontier.get(client, 0)
        structs = clients[client] = []
        for index in range(count):
            start = r.pos
            info = update[r.pos]
            r.pos += 1
            ref = info & _CONTENT
            refs: list[tuple[int, int]] = []
            if index == 0 and clock > 0:
                refs.append((client, clock - 1))  # a client's structs build on its earlier ones
            if ref == _SKIP:
                raise _Unknown("a skip (a gap in a merged update)")
            if ref == _GC:
                length = r.uint()
            else:
                if info & _HAS_ORIGIN:
                    refs.append((r.uint(), r.uint()))
                if info & _HAS_RIGHT:
                    refs.append((r.uint(), r.uint()))
                if not info & (_HAS_ORIGIN | _HAS_RIGHT):
                    if r.uint() == 1:
                        r.skip_string()  # a root's name
                    else:
                        refs.append((r.uint(), r.uint()))  # the parent item
                    if info & _HAS_SUB:
                        r.skip_string()
                length = _content_length(r, ref)
            structs.append(_Struct(clock, clock + length, start, r.pos, refs))
            clock += length
    return clients, r.pos, new


def _split(update: bytes, piece_bytes: int, frontier: dict[int, int]) -> Pieces:
    """Pieces of ``piece_bytes`` or more, each holding only structs whose references
    are in the document (``frontier``: per client, the clock below which it holds
    every struct) or in an earlier piece or this one. Clients take turns: a client
    waits while its next struct refers to one not taken yet, and goes on once it is.
    """
    clients, ds_start, new = _read_structs(update, frontier)
    delete_set = update[ds_start:]
    _check_delete_set(delete_set)
    next_index = dict.fromkeys(clients, 0)
    waiting: dict[int, list[int]] = {}  # client -> clients waiting for it to advance
    ready = list(clients)
    pieces: list[bytes] = []
    runs: dict[int, tuple[int, int]] = {}  # this piece: client -> (first, last + 1) index
    size = 0

    def blocker(struct: _Struct) -> int | None:
        for client, clock in struct.refs:
            if clock >= frontier.get(client, 0):
                return client
        return None

    while ready:
        client = ready.pop()
        structs, i = clients[client], next_index[client]
        while i < len(structs):
            struct = structs[i]
            wanted = blocker(struct)
            if wanted is not None:
                waiting.setdefault(wanted, []).append(client)
                break
            first, _ = runs.get(client, (i, i))
            runs[client] = (first, i + 1)
            size += struct.stop - struct.start
            frontier[client] = max(frontier.get(client, 0), struct.end)
            i += 1
            if size >= piece_bytes:
                pieces.append(_piece(_groups(update, clients, runs), b"\x00"))
                runs, size = {}, 0
        next_index[client] = i
        ready.extend(waiting.pop(client, ()))
    left = {c: (i, len(clients[c])) for c, i in next_index.items() if i < len(clients[c])}
    for client, (i, end) in left.items():  # refer to what no piece holds: together, last
        first, _ = runs.get(client, (i, i))
        runs[client] = (first, end)
    pieces.append(_piece(_groups(update, clients, runs), delete_set))
    return Pieces(pieces, new)


def _groups(
    update: bytes, clients: dict[int, list[_Struct]], runs: dict[int, tuple[int, int]]
) -> list[bytes]:
    out = []
    for client, (first, end) in runs.items():
        structs = clients[client]
        head, last = structs[first], structs[end - 1]
        out.append(_group(end - first, client, head.clock, update[head.start : last.stop]))
    return out


def _check_delete_set(data: bytes) -> None:
    r = _Reader(data)
    for _ in range(r.uint()):
        r.uint()
        for _ in range(r.uint()):
            r.uint()
            r.uint()
    if r.pos != len(data):
        raise _Unknown("bytes after the delete set")


def _group(count: int, client: int, clock: int, structs: bytes) -> bytes:
    return encode_varuint(count) + encode_varuint(client) + encode_varuint(clock) + structs


def _piece(groups: list[bytes], delete_set: bytes) -> bytes:
    return b"".join([encode_varuint(len(groups)), *groups, delete_set])
