"""Document generations in a data directory: which incarnation of a name this is.

Rule: no tornado, no sockets; the blocking calls run in the store's threads.

A document's generation (``Loaded.generation``) changes whenever it is deleted
and never otherwise, so a browser that kept an offline copy can tell a document
deleted since (and maybe created again) from the one it copied. In a data
directory it is ``<stem>.gen``: the number of times the name was deleted, as
decimal text, written atomically (temp file, fsync, rename, fsync dir) before
the document's files are removed. No file: ``"0"``. The file outlives the
document on purpose (it is the tombstone); listings, backups and loading ignore
it. An unreadable one reads as ``""`` (unknown: no copy is ever refused for it).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..core import names
from .base import Loaded
from .disk import LogFile, fsync_dir, write_new
from .filelog import FileLog

__all__ = ["GenerationFiles", "GenerationLog"]

log = logging.getLogger("collab.store")

_MAX_BYTES = 32


class GenerationFiles:
    """The ``.gen`` files of one data directory (blocking calls)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, name: str) -> Path:
        return self.root / f"{names.to_stem(name)}.gen"

    def read(self, name: str) -> str:
        """The generation of ``name``: ``"0"`` if it was never deleted."""
        try:
            data = self.path(name).read_bytes()[: _MAX_BYTES + 1]
        except FileNotFoundError:
            return "0"
        text = data.decode(errors="replace").strip()
        if not text.isdigit() or len(data) > _MAX_BYTES:
            log.error("%s is damaged: no offline copy of %r is refused", self.path(name), name)
            return ""
        return str(int(text))

    def bump(self, name: str) -> str:
        """Start the next generation of ``name`` (it is being deleted); return it."""
        current = self.read(name)
        following = str(int(current or "0") + 1)
        path = self.path(name)
        tmp = path.with_name(path.name + ".tmp")
        tmp.unlink(missing_ok=True)  # left by a crash
        try:
            write_new(tmp, following.encode() + b"\n")
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(self.root)
        return following


class GenerationLog(FileLog):
    """A ``FileLog`` whose ``load`` tells the generation and whose ``delete`` ends it."""

    def _read(self, sync: bool) -> tuple[Loaded, list[LogFile], int, int]:
        generation = self.store.generations.read(self.name)  # in the same thread trip
        read = super()._read(sync)
        read[0].generation = generation
        return read

    async def delete(self) -> bool:
        # Bumped first: a crash half way leaves the document with a new
        # generation (copies refused), never gone with the old one (copies
        # taken back as if nothing had happened).
        if not self.store.read_only and await self.store.info(self.name) is not None:
            await self.store.run(self.store.generations.bump, self.name)
        return await super().delete()
