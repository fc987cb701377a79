"""Seeded large Yjs documents: text plus other shared types, with what to check them by.

``build(seed, size)`` makes a document of about ``size`` bytes of encoded state:
three quarters text in ``content`` (words of a Zipf-distributed vocabulary,
inserted in pieces at seeded positions, so it has many items and compresses
about as well as prose), the rest in the ``meta`` Y.Map and the ``list``
Y.Array. ``facts`` of it is what a client that synced it must report (see
``digest`` in tests/js/peer.mjs): text length and SHA-256, map size, array
length. The same seed gives the same document.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pycrdt import Array, Doc, Map, Text

__all__ = ["BIG", "NAME", "Facts", "build", "facts", "prose", "serving"]

BIG = 50_000_000
NAME = "big"


@dataclass(frozen=True)
class Facts:
    """What identifies a document's content, as a client computes it."""

    text_length: int  # UTF-16 code units == characters here (ASCII)
    text_sha256: str
    map_size: int
    array_length: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "text_length": self.text_length,
            "text_sha256": self.text_sha256,
            "map_size": self.map_size,
            "array_length": self.array_length,
        }


def prose(rng: random.Random, size: int) -> str:
    """About ``size`` characters of ASCII words (a 2,000-word vocabulary, Zipf-like)."""
    letters = "etaoinshrdlucmfwypvbgkjqxz"
    vocab = [
        "".join(rng.choice(letters[: 8 + i % 18]) for _ in range(1 + int(rng.expovariate(0.3))))
        for i in range(2000)
    ]
    weights = [1.0 / (rank + 1) for rank in range(len(vocab))]
    out: list[str] = []
    total = 0
    while total < size:
        words = rng.choices(vocab, weights, k=4096)
        line = " ".join(words) + ".\n"
        out.append(line)
        total += len(line)
    return "".join(out)[:size]


def build(seed: int, size: int) -> tuple[bytes, Facts]:
    """A document of about ``size`` bytes: its whole state as one update, and its facts."""
    rng = random.Random(seed)
    doc: Doc[Any] = Doc(client_id=seed & 0x7FFFFFFF or 1)
    text = doc.get("content", type=Text)
    meta = doc.get("meta", type=Map)
    items = doc.get("list", type=Array)
    text_size = size * 3 // 4
    pool = prose(rng, min(text_size, 4 << 20) + 65536)
    piece = 64 << 10
    with doc.transaction():
        written = 0
        while written < text_size:
            n = min(piece, text_size - written)
            start = rng.randrange(0, len(pool) - n)
            text.insert(rng.randint(0, written), pool[start : start + n])
            written += n
    rest = size - text_size
    with doc.transaction():
        for i in range(rest // 2 // 2048):
            start = rng.randrange(0, len(pool) - 2048)
            meta[f"key-{i}"] = pool[start : start + 2000]
        batch: list[str] = []
        for _ in range(rest // 2 // 4096):  # few, large items: extend is quadratic in count
            start = rng.randrange(0, len(pool) - 4096)
            batch.append(pool[start : start + 4000])
        items.extend(batch)
    return doc.get_update(), facts(doc)


def facts(doc: Doc[Any]) -> Facts:
    """The facts of ``doc``'s ``content``, ``meta`` and ``list``."""
    content = str(doc.get("content", type=Text))
    return Facts(
        text_length=len(content),
        text_sha256=hashlib.sha256(content.encode()).hexdigest(),
        map_size=len(doc.get("meta", type=Map)),
        array_length=len(doc.get("list", type=Array)),
    )


@contextlib.contextmanager
def serving(root: Path, size: int = BIG, seed: int = 20261202) -> Iterator[tuple[Any, Facts]]:
    """A ``collab serve`` holding the document ``NAME`` of ``size`` bytes, imported.

    Imported with ``collab import`` (server stopped), so no client had to
    upload it; yields the running ``ServerProcess`` and the document's facts.
    """
    from .server import ROOT, ServerProcess

    state, made = build(seed=seed, size=size)
    ydoc = root / "big.ydoc"
    ydoc.write_bytes(state)
    data = root / "data"
    subprocess.run(
        [sys.executable, "-m", "collab", "import", str(ydoc), "--name", NAME, "--data-dir", data],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    server = ServerProcess(data).start()
    try:
        yield server, made
    finally:
        server.stop()
