"""History, the pure part: the minimal diff, the cut and retention policies, restore on a fork."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Assoc, Doc, Text

from collab.core.history import (
    Author,
    VersionMeta,
    check_label,
    merge_authors,
    restore_update,
    version_due,
    versions_to_prune,
)
from collab.core.room import Room
from collab.core.textdiff import (
    CHAR_BLOCK,
    Edit,
    apply_edits,
    counts,
    diff_ops,
    text_edits,
    unified,
    utf8_splices,
)

# Letters that make diffs interesting: emoji (astral, ZWJ sequence), CJK, combining marks, \r\n.
ALPHABET = ["a", "b", " ", "\n", "\r\n", "é", "e\u0301", "😀", "👩‍💻", "中", "文", "ñ", "x"]
texts = st.lists(st.sampled_from(ALPHABET), max_size=60).map("".join)


def one_item_per_character(old: str) -> tuple[Doc[Any], Text]:
    """A text whose every character is its own CRDT item (each typed by another client).

    pycrdt 0.14.13 counts a sticky index's offset *inside* an item in UTF-16
    units but everything else in UTF-8 bytes; with one item per character
    the offset inside is always 0 and the index is plainly a byte offset.
    """
    doc: Doc[Any] = Doc()
    text = doc.get("content", type=Text)
    for ch in old:
        other: Doc[Any] = Doc()
        other.apply_update(doc.get_update())
        typed = other.get("content", type=Text)
        typed.insert(len(str(typed).encode()), ch)
        doc.apply_update(other.get_update(doc.get_state()))
    assert str(text) == old
    return doc, text


def apply_to_ytext(old: str, new: str) -> tuple[str, Text, Doc[Any]]:
    doc: Doc[Any] = Doc()
    text = doc.get("content", type=Text)
    text += old
    with doc.transaction():
        for start, end, insert in utf8_splices(old, text_edits(old, new)):
            if end > start:
                del text[start:end]
            if insert:
                text.insert(start, insert)
    return str(text), text, doc


@settings(max_examples=300, deadline=None)
@given(texts, texts)
def test_the_edits_produce_exactly_the_target(old, new):
    edits = text_edits(old, new)
    assert apply_edits(old, edits) == new
    assert apply_to_ytext(old, new)[0] == new
    assert all(a.end <= b.start for a, b in itertools.pairwise(edits))


@settings(max_examples=200, deadline=None)
@given(texts, texts, texts, texts, st.data())
def test_a_position_in_unchanged_text_keeps_its_character(prefix, old_mid, new_mid, suffix, data):
    # «» mark where the change is: what is outside is unchanged text, unambiguously.
    old, new = f"{prefix}«{old_mid}»{suffix}", f"{prefix}«{new_mid}»{suffix}"
    kept = list(range(len(prefix) + 1)) + list(range(len(old) - len(suffix) - 1, len(old)))
    if not kept:
        return
    i = data.draw(st.sampled_from(kept))
    doc, text = one_item_per_character(old)
    sticky = text.sticky_index(len(old[:i].encode()), Assoc.AFTER)
    with doc.transaction():
        for start, end, insert in utf8_splices(old, text_edits(old, new)):
            if end > start:
                del text[start:end]
            if insert:
                text.insert(start, insert)
    assert str(text) == new
    at = sticky.get_index()
    assert new.encode()[at:].decode()[0] == old[i]  # the same character, not a copy of it


def test_one_character_changed_in_a_long_text_touches_only_it():
    old = "".join(f"line {n} with 中文 and 😀\r\n" for n in range(5000))
    new = old.replace("line 2500 with", "line 2500 wiTh").replace("line 10 ", "line ten ")
    edits = text_edits(old, new)
    assert apply_edits(old, edits) == new
    assert counts(old, edits) == (4, 3)  # "T", "ten" in; "t", "10" out


def test_a_replaced_block_above_the_character_limit_is_replaced_whole():
    old = "start\n" + "a" * (CHAR_BLOCK + 10) + "\nend\n"
    new = "start\n" + "b" * (CHAR_BLOCK + 10) + "\nend\n"
    edits = text_edits(old, new)
    assert apply_edits(old, edits) == new
    assert len(edits) == 1 and edits[0].insert.startswith("b")


@pytest.mark.parametrize(
    ("old", "new", "edits"),
    [
        ("", "", []),
        ("same", "same", []),
        ("", "new", [Edit(0, 0, "new")]),
        ("gone", "", [Edit(0, 4, "")]),
        ("héllo wörld", "héllo brave wörld", [Edit(6, 6, "brave ")]),
        ("a😀b", "a😃b", [Edit(1, 2, "😃")]),
        ("x\r\ny", "x\ny", [Edit(1, 2, "")]),
    ],
)
def test_text_edits_table(old, new, edits):
    assert text_edits(old, new) == edits


def test_utf8_splices_are_byte_offsets_right_to_left():
    assert utf8_splices("é😀xy", [Edit(1, 2, "A"), Edit(3, 4, "B")]) == [(7, 8, "B"), (2, 6, "A")]


def test_diff_ops_and_unified():
    assert diff_ops("hello world", "hello brave world") == [
        (0, "hello "),
        (1, "brave "),
        (0, "world"),
    ]
    assert diff_ops("", "") == []
    patch = unified("a\nb\n", "a\nc\n", "a/doc@1", "b/doc@current")
    assert patch == "--- a/doc@1\n+++ b/doc@current\n@@ -1,2 +1,2 @@\n a\n-b\n+c\n"


def test_room_replace_text_keeps_untouched_items_in_place():
    room = Room("r")
    room.replace_text("first line\nmiddle\nlast line\n")
    text = room.doc.get("content", type=Text)
    first = text.sticky_index(2, Assoc.AFTER)  # "r" of "first"
    last = text.sticky_index(len("first line\nmiddle\nla"), Assoc.AFTER)  # "s" of "last"
    effects = room.replace_text("First line\nmiddle\nlast line!\n")
    assert effects.update is not None
    assert room.text == "First line\nmiddle\nlast line!\n"
    assert room.text[first.get_index()] == "r"
    assert room.text[last.get_index()] == "s"


def test_restore_update_on_a_fork_merges_edits_made_meanwhile():
    live: Doc[Any] = Doc()
    text = live.get("content", type=Text)
    text += "one two three four"
    base, sv, old = live.get_update(), live.get_state(), str(text)
    text.insert(len(old), " five")  # typed while the restore was being computed
    update = restore_update(base, sv, old, "one 2 three")
    live.apply_update(update)
    assert str(text) == "one 2 three five"


# -- policies -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "last", "idle", "longest", "due"),
    [
        (0, 0, 60, 600, 60),  # one change: quiet period
        (0, 100, 60, 600, 160),  # bursts keep pushing it
        (0, 590, 60, 600, 600),  # but never past the maximum stretch
        (10, 900, 60, 600, 610),
        (0, 0, 0.3, 600, 0.3),
    ],
)
def test_version_due(first, last, idle, longest, due):
    assert version_due(first, last, idle, longest) == pytest.approx(due)


H, D = 3600.0, 86400.0
NOW = 100 * D


def metas(*rows: tuple[int, float, str | None, str]) -> list[VersionMeta]:
    return [VersionMeta(id, NOW - age, reason, label) for id, age, label, reason in rows]


@pytest.mark.parametrize(
    ("rows", "keep_all", "cap", "dropped"),
    [
        # young versions are all kept
        ([(1, 3 * H, None, "quiet"), (2, 2 * H, None, "quiet"), (3, H, None, "quiet")], D, 500, []),
        # older than keep_all: the last of each hour stays (ids 1,2 share an hour)
        (
            [
                (1, D + 2 * H + 1800, None, "quiet"),
                (2, D + 2 * H + 60, None, "quiet"),
                (3, H, None, "quiet"),
            ],
            D,
            500,
            [1],
        ),
        # named, restore and pre-restore versions are never thinned
        (
            [
                (1, D + 2 * H + 90, "Draft", "named"),
                (2, D + 2 * H + 60, None, "pre-restore"),
                (3, D + 2 * H + 30, None, "restore"),
                (4, D + 2 * H, None, "quiet"),
                (5, 60, None, "quiet"),
            ],
            D,
            500,
            [],
        ),
        # older than a week: the last of each day
        (
            [
                (1, 9 * D + 3 * H, None, "max"),
                (2, 9 * D + 2 * H, None, "quiet"),
                (3, 60, None, "quiet"),
            ],
            D,
            500,
            [1],
        ),
        # the cap drops the oldest automatic ones, never the newest nor named ones
        (
            [
                (1, 50, "Keep", "named"),
                (2, 40, None, "quiet"),
                (3, 30, None, "quiet"),
                (4, 20, None, "leave"),
            ],
            D,
            1,
            [2, 3],
        ),
        ([(1, 10 * D, None, "quiet")], 0, 0, []),  # the only (newest) version stays
        ([], D, 500, []),
    ],
)
def test_versions_to_prune(rows, keep_all, cap, dropped):
    assert versions_to_prune(metas(*rows), NOW, keep_all, cap) == dropped


def test_labels_and_authors():
    assert check_label("  Draft 2 ") == "Draft 2"
    assert check_label(None) is None
    for bad in ("", " ", "x" * 101, "a\nb", 3):
        with pytest.raises(ValueError):
            check_label(bad)
    found = merge_authors(
        [Author("ann"), Author(None, "Bob", "#ff0000"), Author()],
        [Author("ann", "Ann", "#00ff00"), Author(None, "Bob")],
    )
    assert found == (Author("ann", "Ann", "#00ff00"), Author(None, "Bob", "#ff0000"))


def test_meta_json_round_trip():
    meta = VersionMeta(
        7,
        1.5,
        "named",
        "Draft",
        1.0,
        1.25,
        3,
        10,
        4,
        1,
        (Author("ann", "Ann", "#123456"),),
        None,
        99,
    )
    assert VersionMeta.from_json(meta.to_json()) == meta
    with pytest.raises(ValueError):
        VersionMeta.from_json({**meta.to_json(), "id": 0})
