"""Large updates cut into pieces: applied in turn they make the same document, and
no piece waits for a later one; the room applies a large update that way."""

from __future__ import annotations

import random
from typing import Any

import pytest
from pycrdt import (
    Array,
    Doc,
    Map,
    Text,
    XmlElement,
    XmlFragment,
    XmlText,
    get_state,
    merge_updates,
)

from collab.core import protocol
from collab.core.errors import BadUpdate
from collab.core.pieces import split_update
from collab.core.protocol import Update
from collab.core.room import PIECE_BYTES, Room


def _edited(seed: int, clients: int = 3, rounds: int = 60) -> Doc[Any]:
    """A document several clients edited in turn: text with formats and embeds, a map,
    an array with a nested map, a rich-text fragment, deletions, non-ASCII text."""
    rng = random.Random(seed)
    docs: list[Doc[Any]] = [Doc(client_id=100 + i) for i in range(clients)]
    words = ["alpha", "βeta", "γάμμα", "emoji 😀", "plain", "日本語"]
    for step in range(rounds):
        doc = docs[step % clients]
        text = doc.get("content", type=Text)
        meta = doc.get("meta", type=Map)
        items = doc.get("items", type=Array)
        prose = doc.get("prosemirror", type=XmlFragment)
        with doc.transaction():
            now = str(text)  # (pycrdt's text indices are UTF-8 bytes: cut at characters)
            at = len(now[: rng.randint(0, len(now))].encode())
            text.insert(at, " ".join(rng.choices(words, k=20)))
            now = str(text)
            if len(now) > 40 and rng.random() < 0.4:
                first = rng.randint(0, len(now) - 20)
                start, stop = (len(now[:i].encode()) for i in (first, first + rng.randint(1, 15)))
                del text[start:stop]
            if rng.random() < 0.3:  # (formats in a text of their own: yrs 0.28 can panic
                styled = doc.get("styled", type=Text)  # deleting across them)
                styled.insert(len(styled), rng.choice(words), {"bold": rng.random() < 0.5})
            meta[f"k{rng.randint(0, 30)}"] = rng.choice([1, 2.5, "v", None, True, [1, "x"]])
            if rng.random() < 0.2:
                items.append(Map({"n": step, "s": "nested"}))
            else:
                items.append(f"item {step}")
            if step % 10 == 0:
                prose.children.append(XmlElement("paragraph", {}, [XmlText("para ")]))
        for other in docs:  # everyone sees everyone
            if other is not doc:
                other.apply_update(doc.get_update(other.get_state()))
    return docs[0]


def _facts(doc: Doc[Any]) -> tuple[Any, ...]:
    return (
        doc.get_state(),
        str(doc.get("content", type=Text)),
        doc.get("styled", type=Text).diff(),
        doc.get("meta", type=Map).to_py(),
        doc.get("items", type=Array).to_py(),
        str(doc.get("prosemirror", type=XmlFragment)),
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("piece", [64, 300, 2000])
def test_pieces_applied_in_turn_make_the_same_document_and_none_waits_for_a_later_one(
    seed: int, piece: int
) -> None:
    source = _edited(seed)
    update = source.get_update()
    pieces = split_update(update, piece)
    assert pieces is not None and len(pieces.parts) > 3 and pieces.new
    target: Doc[Any] = Doc()
    for k, part in enumerate(pieces.parts):
        target.apply_update(part)
        # Nothing pending: the document holds every struct the pieces so far carried.
        assert target.get_state() == get_state(merge_updates(*pieces.parts[: k + 1])), k
    assert _facts(target) == _facts(source)


def test_pieces_into_a_document_may_refer_to_what_it_has() -> None:
    source = _edited(4)
    half: Doc[Any] = Doc()
    half.apply_update(source.get_update())
    before = half.get_state()
    half.get("content", type=Text).insert(0, "x" * 5000)  # (single client: client 100)
    fresh = half.get_update(before)
    target: Doc[Any] = Doc()
    target.apply_update(source.get_update())
    pieces = split_update(fresh, 500, target.get_state())
    assert pieces is not None and pieces.new
    for part in pieces.parts:
        target.apply_update(part)
    assert _facts(target) == _facts(half)


def test_an_update_overlapping_the_document_is_not_new() -> None:
    source = _edited(5)
    update = source.get_update()
    target: Doc[Any] = Doc()
    target.apply_update(update)
    pieces = split_update(update, 300, target.get_state())
    assert pieces is not None and not pieces.new


def test_small_or_unreadable_updates_are_not_cut() -> None:
    source = _edited(6)
    update = source.get_update()
    assert split_update(update, len(update)) is None
    assert split_update(update[: len(update) // 2], 300) is None  # cut short
    assert split_update(b"\x01\x01\x07\x00\x1e" + update, 300) is None  # content ref 30


def _big_paste(client_id: int, size: int) -> bytes:
    doc: Doc[Any] = Doc(client_id=client_id)
    text = doc.get("content", type=Text)
    rng = random.Random(client_id)
    with doc.transaction():
        for _ in range(size // 1000):
            text.insert(rng.randint(0, len(text)), "".join(rng.choices("abcdefgh ", k=1000)))
    return doc.get_update()


def test_the_room_applies_a_large_update_in_pieces_and_relays_it_as_received() -> None:
    update = _big_paste(7, 3 * PIECE_BYTES)
    pieces = split_update(update, PIECE_BYTES)
    assert pieces is not None and len(pieces.parts) >= 3
    room = Room("doc")
    frame = protocol.encode(Update(update))
    effects = room.receive("peer", frame)
    assert effects.update == update and effects.relay == [frame] and effects.refused is None
    check: Doc[Any] = Doc()
    check.apply_update(update)
    assert room.text == str(check.get("content", type=Text))
    assert room.receive("other", frame).update is None  # a duplicate dies out


def test_a_large_update_refused_part_way_keeps_and_reports_what_went_in() -> None:
    update = bytearray(_big_paste(8, 3 * PIECE_BYTES))
    at = len(update) - 2000
    while update[at] >= 0x80 or not chr(update[at]).isalpha():  # a letter in the last piece
        at -= 1
    update[at] = 0xFF  # not UTF-8: yrs refuses that piece
    room = Room("doc")
    effects = room.receive("peer", protocol.encode(Update(bytes(update))))
    assert isinstance(effects.refused, BadUpdate)
    assert effects.update is not None and effects.relay  # what went in: stored and relayed
    replay: Doc[Any] = Doc()
    replay.apply_update(effects.update)
    assert str(replay.get("content", type=Text)) == room.text != ""
