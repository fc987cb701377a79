"""Version history, the pure part: what a version is, when one is cut, which are kept,
and the CRDT edit that restores one.

Rule: pure; no I/O, no clock (callers pass ``now``), no asyncio.

A version is an immutable checkpoint of one document: its Yjs state and
``content`` text at that moment, and ``VersionMeta``. Versions never depend
on each other, so reading one is one read and pruning one is one removal.

When (``version_due``): a quiet period after the last change, or a maximum
stretch after the first one, whichever comes first; the server also cuts when
the last editor leaves, when it stops, around every restore and when someone
names the current text (``REASONS``).

Which are kept (``versions_to_prune``): every version with a label, and every
restore and pre-restore version; automatic ones younger than ``keep_all``;
older automatic ones thinned to the last of each hour for a week, then the
last of each day; then the oldest automatic ones beyond ``max_versions``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from pycrdt import Doc, Text

from .room import TEXT_NAME
from .textdiff import text_edits, utf8_splices

__all__ = [
    "KEPT_REASONS",
    "REASONS",
    "Author",
    "VersionMeta",
    "restore_update",
    "version_due",
    "versions_to_prune",
]

REASONS = ("quiet", "max", "leave", "stop", "named", "pre-restore", "restore")
KINDS = {"named": "named", "pre-restore": "pre-restore", "restore": "restore"}  # else "auto"
KEPT_REASONS = frozenset({"pre-restore", "restore"})  # never pruned, as labelled ones
HOUR, DAY, WEEK = 3600.0, 86400.0, 7 * 86400.0
MAX_LABEL = 100  # characters


@dataclass(frozen=True, slots=True)
class Author:
    """Who wrote changes a version closes.

    ``user`` is the token's ``sub`` (checked by the server) or None; ``name``
    and ``color`` are what the writer's awareness showed (chosen by the client).
    """

    user: str | None = None
    name: str | None = None
    color: str | None = None

    @property
    def label(self) -> str:
        return self.user or self.name or "anonymous"


@dataclass(frozen=True, slots=True)
class VersionMeta:
    """One version's metadata (the index record and the API object).

    Times are Unix seconds. ``added``/``removed`` count characters against the
    previous version (None: not computed, the texts were too large).
    """

    id: int
    created: float
    reason: str
    label: str | None = None
    first_change: float | None = None
    last_change: float | None = None
    updates: int = 0
    chars: int = 0
    added: int | None = None
    removed: int | None = None
    authors: tuple[Author, ...] = field(default_factory=tuple)
    restored_from: int | None = None
    stored_bytes: int = 0

    @property
    def kind(self) -> str:
        """``auto`` (quiet, max, leave, stop), ``named``, ``pre-restore`` or ``restore``."""
        return KINDS.get(self.reason, "auto")

    @property
    def kept(self) -> bool:
        """Never pruned: named, or made by a restore."""
        return self.label is not None or self.reason in KEPT_REASONS

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["authors"] = [asdict(a) for a in self.authors]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VersionMeta:
        """Raises ``ValueError`` (or ``KeyError``/``TypeError``) on a malformed object."""
        authors = tuple(
            Author(a.get("user"), a.get("name"), a.get("color")) for a in data.get("authors", ())
        )
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        meta = cls(**{**known, "authors": authors})
        if not isinstance(meta.id, int) or meta.id < 1 or not isinstance(meta.created, float | int):
            raise ValueError("bad version id or time")
        return meta

    def with_label(self, label: str | None) -> VersionMeta:
        return replace(self, label=label)


def check_label(label: object) -> str | None:
    """``label`` as a version name: None, or 1-``MAX_LABEL`` characters, trimmed.

    Raises:
        ValueError: not a string (or null), empty, too long or with control characters.
    """
    if label is None:
        return None
    if not isinstance(label, str):
        raise ValueError("label must be a string or null")
    label = label.strip()
    if not 1 <= len(label) <= MAX_LABEL:
        raise ValueError(f"label must be 1-{MAX_LABEL} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in label):
        raise ValueError("label contains a control character")
    return label


def version_due(first_change: float, last_change: float, idle: float, max_interval: float) -> float:
    """When the changes made since ``first_change`` become a version (a time, not a delay)."""
    return min(last_change + idle, first_change + max_interval)


def versions_to_prune(
    metas: Sequence[VersionMeta],
    now: float,
    keep_all: float = DAY,
    max_versions: int = 500,
) -> list[int]:
    """Ids of the versions retention drops (see the module docstring), oldest first.

    ``metas`` in any order. The newest version is never dropped.
    """
    ordered = sorted(metas, key=lambda m: m.id)
    if not ordered:
        return []
    newest = ordered[-1].id
    drop: set[int] = set()
    last_in_bucket: dict[tuple[str, int], int] = {}
    for meta in ordered:  # by id = by time: the last one of each bucket wins
        age = now - meta.created
        if meta.kept or age < keep_all:
            continue
        bucket = ("h", int(meta.created // HOUR)) if age < WEEK else ("d", int(meta.created // DAY))
        if bucket in last_in_bucket:
            drop.add(last_in_bucket[bucket])
        last_in_bucket[bucket] = meta.id
    auto = [m.id for m in ordered if not m.kept and m.id not in drop]
    if max_versions > 0 and len(auto) > max_versions:
        drop.update(auto[: len(auto) - max_versions])
    drop.discard(newest)
    return sorted(drop)


def merge_authors(*groups: Iterable[Author]) -> tuple[Author, ...]:
    """Authors in first-seen order, one per identity; a named entry beats a bare one."""
    found: dict[str, Author] = {}
    for group in groups:
        for author in group:
            if author.user is None and author.name is None:
                continue  # nobody known (an anonymous API call): the list says so by being empty
            key = author.user if author.user is not None else f"~{author.name}"
            held = found.get(key)
            if held is None or (held.name is None and author.name is not None):
                found[key] = author
    return tuple(found.values())


def restore_update(base: bytes, state_vector: bytes, old: str, target: str) -> bytes:
    """The Yjs update that turns ``content`` from ``old`` into ``target``, as a minimal edit.

    Built on a fork: a fresh ``Doc`` holding ``base`` (the live state when
    ``old`` was read); the edits go in as one transaction and the result is
    what the fork has beyond ``state_vector``. Applied to the live document,
    edits made there meanwhile merge. Safe to call in a worker thread: the
    fork is made, used and dropped here; only bytes come and go.
    """
    fork: Doc[Any] = Doc()
    fork.apply_update(base)
    text = fork.get(TEXT_NAME, type=Text)
    current = str(text)
    if current != old:  # ``old`` is what the caller saw; trust the state
        old = current
    splices = utf8_splices(old, text_edits(old, target))
    with fork.transaction():
        for start, end, insert in splices:
            if end > start:
                del text[start:end]
            if insert:
                text.insert(start, insert)
    return fork.get_update(state_vector)
