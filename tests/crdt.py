"""CRDT helpers for tests: Yjs updates, state vectors and seeded random editing.

Every document here keeps its text in the ``content`` Y.Text, as the server,
the editor page and ``tests/js/peer.mjs`` do.
"""

from __future__ import annotations

import asyncio
import random
from typing import Protocol

from pycrdt import Doc, Text, XmlElement, XmlFragment, XmlText

from collab.core import protocol
from collab.core.pieces import decode_state_vector
from collab.core.protocol import Update, read_varuint
from collab.core.protocol import encode_varuint as _varuint
from collab.core.room import Room

__all__ = [
    "client_blocks",
    "end_appends",
    "random_edits",
    "state_vector",
    "text_of",
    "typed_updates",
    "valid_update",
    "xml_end_appends",
]


def text_of(updates: list[bytes]) -> str:
    """The ``content`` text of a document made of ``updates``, applied in order."""
    doc: Doc = Doc()
    for update in updates:
        doc.apply_update(update)
    return str(doc.get("content", type=Text))


def valid_update(text: str) -> bytes:
    """A well-formed Yjs update that inserts ``text`` into a fresh document."""
    doc: Doc = Doc()
    doc.get("content", type=Text).insert(0, text)
    return doc.get_update()


def typed_updates(text: str, client_id: int = 7) -> tuple[Doc, list[bytes]]:
    """``text`` typed one character at a time: the document and one update per keystroke."""
    doc: Doc = Doc(client_id=client_id)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    content = doc.get("content", type=Text)
    for ch in text:
        content += ch
    return doc, updates


def end_appends(chunks: list[str], client_id: int) -> list[bytes]:
    """The updates of a client typing ``chunks`` one after another at the end of ``content``.

    Encoded directly (lib0 v1, as Yjs and yrs encode them: one string item
    whose left origin is the client's previous character), so a test can have
    a run of 40,000 appends without paying the writer's own O(run) cost for each.
    """
    updates, clock = [], 0
    for chunk in chunks:
        data = chunk.encode()
        head = _varuint(1) + _varuint(1) + _varuint(client_id) + _varuint(clock)
        if clock == 0:  # the first item names its parent, the root type
            item = b"\x04" + _varuint(1) + _varuint(7) + b"content"
        else:
            item = b"\x84" + _varuint(client_id) + _varuint(clock - 1)
        updates.append(head + item + _varuint(len(data)) + data + b"\x00")
        clock += len(chunk.encode("utf-16-le")) // 2
    return updates


def state_vector(doc: Doc) -> dict[int, int]:
    """Decode ``doc``'s state vector: client id -> clock (lib0 varuints)."""
    return decode_state_vector(doc.get_state())


class Editor(Protocol):
    """What ``random_edits`` needs of a client (``tests.yclient.YClient`` is one)."""

    text: Text
    received: list[bytes]


async def random_edits(client: Editor, seed: int, ops: int, label: str, pace: float = 0.0) -> int:
    """Seeded random inserts/deletes on ``client.text``, each sent as it happens.

    Mirrors ``tests/js/peer.mjs`` ``edit``: a fifth of the inserts go to
    position 0, where every client collides.

    Args:
        pace: seconds to pause after each edit (0: just yield), to keep pace
            with slower clients so the edits overlap in time.

    Returns:
        how many frames the client received while it was editing (more than
        zero shows the edits really were concurrent with the others').
    """
    received = len(client.received)
    rnd = random.Random(seed)
    text = client.text
    for i in range(ops):
        length = len(text)
        r = rnd.random()
        word = f"{label}{i} "
        if length > 0 and r < 0.3:
            pos = rnd.randrange(length)
            del text[pos : min(length, pos + 1 + rnd.randrange(6))]
        elif r < 0.5:
            text.insert(0, word)
        elif r < 0.6:
            text.insert(length, word)
        else:
            text.insert(rnd.randint(0, length), word)
        # Pacing, not a wait: yield so other clients' updates land between edits.
        await asyncio.sleep(pace)
    return len(client.received) - received


def xml_end_appends(
    chunks: list[str], client_id: int, root: str = "prosemirror"
) -> tuple[bytes, list[bytes]]:
    """A paragraph in the ``root`` Y.XmlFragment, then ``chunks`` typed at its end.

    Returns the update creating ``<paragraph>`` with an empty Y.XmlText in it
    (made by pycrdt, as y-prosemirror would make it) and one update per chunk,
    encoded as ``end_appends`` encodes them: the first names the XmlText's item
    as its parent, every later one has the client's previous character as its
    left origin.
    """
    doc: Doc = Doc(client_id=client_id)
    doc.get(root, type=XmlFragment).children.append(XmlElement("paragraph", contents=[XmlText()]))
    head = doc.get_update()
    clock = state_vector(doc)[client_id]
    parent = (client_id, clock - 1)  # the XmlText is the last item the paragraph created
    updates = []
    for chunk in chunks:
        data = chunk.encode()
        update = _varuint(1) + _varuint(1) + _varuint(client_id) + _varuint(clock)
        if clock == parent[1] + 1:
            update += b"\x04" + _varuint(0) + _varuint(parent[0]) + _varuint(parent[1])
        else:
            update += b"\x84" + _varuint(client_id) + _varuint(clock - 1)
        updates.append(update + _varuint(len(data)) + data + b"\x00")
        clock += len(chunk.encode("utf-16-le")) // 2
    return head, updates


def client_blocks(doc: Doc, client_id: int) -> int:
    """How many blocks (structs) ``doc`` keeps for ``client_id``, the highest client id in it.

    yrs merges a client's consecutive characters into one block, and encodes
    each block as one struct, highest client first (lib0 v1: ``clients
    (structs client clock struct*)*``); reading the first group's header needs
    no decoding of the structs themselves.
    """
    data = doc.get_update()
    _, pos = read_varuint(data, 0)  # how many clients
    structs, pos = read_varuint(data, pos)
    client, _ = read_varuint(data, pos)
    assert client == client_id, f"{client_id} is not the highest client id in the document"
    return structs


def feed(room: Room, peer: object, updates: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Send ``updates`` to ``room`` as a client would; return what it logged and relayed."""
    logged: list[bytes] = []
    relayed: list[bytes] = []
    for update in updates:
        effects = room.receive(peer, protocol.encode(Update(update)))
        if effects.update is not None:
            logged.append(effects.update)
        relayed += effects.relay
    return logged, relayed


def payloads(frames: list[bytes]) -> list[bytes]:
    """The updates in relayed update frames."""
    out = []
    for frame in frames:
        message = protocol.decode(frame)
        assert isinstance(message, Update)
        out.append(message.update)
    return out
