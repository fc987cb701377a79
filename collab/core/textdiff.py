"""The smallest practical text edit from one string to another, and what it changes.

Rule: pure; no I/O, no clock. Used by ``PUT /api/docs/<name>/text`` and by
restoring a version: the edit is applied to the live ``Y.Text``, so text it
leaves alone keeps its CRDT items (and everyone's carets and relative
positions stay where they were).

``text_edits(old, new)``: strip the common prefix and suffix; if what is left
is small, diff it by characters; else diff it by lines, then by characters
inside each replaced block of at most ``CHAR_BLOCK`` characters (larger
blocks are replaced whole). Line diffs of very long texts fall back to
difflib's junk heuristic so the time stays bounded. Indices are ``str``
indices (code points); ``utf8_splices`` turns edits into the UTF-8 byte
offsets pycrdt's ``Text`` uses.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from typing import NamedTuple

__all__ = [
    "CHAR_BLOCK",
    "Edit",
    "apply_edits",
    "counts",
    "diff_ops",
    "text_edits",
    "unified",
    "utf8_splices",
]

CHAR_BLOCK = 2000  # replaced blocks up to this many characters a side are diffed by characters
_MAX_EXACT_LINES = 20000  # above this many lines a side, the line diff uses autojunk


class Edit(NamedTuple):
    """Replace ``old[start:end]`` by ``insert`` (indices into the old text)."""

    start: int
    end: int
    insert: str


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    lo, hi = 0, n  # binary search on slices: C-speed comparisons
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _common_suffix(a: str, b: str, limit: int) -> int:
    lo, hi = 0, min(len(a), len(b), limit)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[len(a) - mid :] == b[len(b) - mid :]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _chars(a: str, b: str, offset: int) -> Iterator[Edit]:
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            yield Edit(offset + i1, offset + i2, b[j1:j2])


def _lines(a: str, b: str, offset: int) -> Iterator[Edit]:
    la, lb = a.splitlines(keepends=True), b.splitlines(keepends=True)
    junk = max(len(la), len(lb)) > _MAX_EXACT_LINES
    matcher = difflib.SequenceMatcher(None, la, lb, autojunk=junk)
    pos_a = [0]
    for line in la:
        pos_a.append(pos_a[-1] + len(line))
    pos_b = [0]
    for line in lb:
        pos_b.append(pos_b[-1] + len(line))
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        sa, ea, sb, eb = pos_a[i1], pos_a[i2], pos_b[j1], pos_b[j2]
        if tag == "replace" and ea - sa <= CHAR_BLOCK and eb - sb <= CHAR_BLOCK:
            yield from _chars(a[sa:ea], b[sb:eb], offset + sa)
        else:
            yield Edit(offset + sa, offset + ea, b[sb:eb])


def text_edits(old: str, new: str) -> list[Edit]:
    """Edits, in ascending order and not overlapping, that turn ``old`` into ``new``.

    Applying them right to left (``apply_edits``) gives exactly ``new``.
    """
    if old == new:
        return []
    p = _common_prefix(old, new)
    s = _common_suffix(old, new, min(len(old), len(new)) - p)
    a, b = old[p : len(old) - s], new[p : len(new) - s]
    if not a or not b:
        return [Edit(p, p + len(a), b)]
    if len(a) <= CHAR_BLOCK and len(b) <= CHAR_BLOCK:
        return list(_chars(a, b, p))
    return list(_lines(a, b, p))


def apply_edits(old: str, edits: list[Edit]) -> str:
    """``old`` with ``edits`` applied (what a ``Y.Text`` ends up holding)."""
    out, pos = [], 0
    for edit in edits:
        out.append(old[pos : edit.start])
        out.append(edit.insert)
        pos = edit.end
    out.append(old[pos:])
    return "".join(out)


def utf8_splices(old: str, edits: list[Edit]) -> list[tuple[int, int, str]]:
    """``(byte_start, byte_end, insert)`` for each edit, right to left (apply in this order).

    pycrdt indexes a ``Text`` by UTF-8 byte offsets; one pass over ``old``.
    """
    out = []
    pos, byte = 0, 0
    for edit in edits:
        byte += len(old[pos : edit.start].encode())
        start = byte
        byte += len(old[edit.start : edit.end].encode())
        pos = edit.end
        out.append((start, byte, edit.insert))
    out.reverse()
    return out


def counts(old: str, edits: list[Edit]) -> tuple[int, int]:
    """``(added, removed)`` characters of ``edits`` on ``old``."""
    added = sum(len(e.insert) for e in edits)
    removed = sum(e.end - e.start for e in edits)
    return added, removed


def diff_ops(old: str, new: str) -> list[tuple[int, str]]:
    """The diff as ``[(op, text)]``: 0 kept, -1 removed, 1 added (diff-match-patch's convention)."""
    ops: list[tuple[int, str]] = []
    pos = 0

    def push(op: int, text: str) -> None:
        if not text:
            return
        if ops and ops[-1][0] == op:
            ops[-1] = (op, ops[-1][1] + text)
        else:
            ops.append((op, text))

    for edit in text_edits(old, new):
        push(0, old[pos : edit.start])
        push(-1, old[edit.start : edit.end])
        push(1, edit.insert)
        pos = edit.end
    push(0, old[pos:])
    return ops


def unified(old: str, new: str, from_name: str, to_name: str, context: int = 3) -> str:
    """A unified diff by lines (``diff -u``), headers ``--- from_name`` / ``+++ to_name``."""
    lines = difflib.unified_diff(
        old.splitlines(keepends=True),
        new.splitlines(keepends=True),
        from_name,
        to_name,
        n=context,
    )
    return "".join(
        line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines
    )
