"""Versions as files: ``<data>/history/<stem>/`` per document (``history_format``).

Rule: no tornado, no sockets. Blocking work runs in one thread of its own,
so history never queues behind (or ahead of) the documents' fsyncs, and the
files of one document are only ever touched by one thread.

Per document::

    <data>/history/<stem>/index      "CHIX" header, then framed JSON records
    <data>/history/<stem>/000042.ver one version: meta, zlib(state), zlib(text)

Writing a version: ``000042.ver.tmp``, fsync, rename, fsync the directory,
then append its record to ``index`` and fsync. A crash before the rename
leaves a ``.tmp`` (removed at load); after it, a version file the index does
not list yet, indexed again at load from its own metadata. A torn index tail
is cut off. A dropped version is recorded first, then unlinked. Deleting a
document's history renames its directory aside (``<stem>.deleted``) before
removing it, so a crash midway never leaves a partial history to be read.
The snapshot and log files of the documents are never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from ..core import names
from ..core.history import VersionMeta
from . import history_format as fmt
from .disk import fsync_dir, write_new
from .pools import started_pool

__all__ = ["FileHistory"]

log = logging.getLogger("collab.history")

T = TypeVar("T")
INDEX = "index"


class _Doc:
    """One document's history as loaded: its directory and index content."""

    def __init__(self, path: Path, content: fmt.IndexContent) -> None:
        self.path = path
        self.content = content


class FileHistory:
    """Every document's versions under ``<root>/history``; see ``history.HistoryStore``."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root) / "history"
        self.damaged = 0
        self._docs: dict[str, _Doc] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._swept = False

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._pool is None:
            self._pool = started_pool(1, "collab-history")
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # -- the HistoryStore protocol -----------------------------------------------

    async def versions(self, name: str) -> list[VersionMeta]:
        return await self._run(self._versions, name)

    async def save(self, name: str, meta: VersionMeta, state: bytes, text: str) -> VersionMeta:
        return await self._run(self._save, name, meta, state, text)

    async def read(self, name: str, id: int) -> tuple[bytes, str] | None:
        return await self._run(self._read, name, id)

    async def label(self, name: str, id: int, label: str | None) -> VersionMeta | None:
        return await self._run(self._label, name, id, label)

    async def drop(self, name: str, ids: Iterable[int]) -> None:
        await self._run(self._drop, name, list(ids))

    async def delete(self, name: str) -> None:
        await self._run(self._delete, name)

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    # -- in the history thread -----------------------------------------------------

    def _dir(self, name: str) -> Path:
        return self.root / names.to_stem(name)

    def _sweep(self) -> None:
        """Finish deletions a crash interrupted (once per process)."""
        self._swept = True
        if not self.root.is_dir():
            return
        for path in self.root.glob("*.deleted*"):
            shutil.rmtree(path, ignore_errors=True)

    def _doc(self, name: str) -> _Doc:
        doc = self._docs.get(name)
        if doc is None:
            if not self._swept:
                self._sweep()
            doc = self._docs[name] = self._load(name)
        return doc

    def _load(self, name: str) -> _Doc:
        path = self._dir(name)
        content = fmt.IndexContent(name)
        if not path.is_dir():
            return _Doc(path, content)
        index = path / INDEX
        try:
            data = index.read_bytes()
        except FileNotFoundError:
            data = b""
        if data:
            try:
                content = fmt.parse_index(data)
            except fmt.Damaged:
                log.warning("history index %s unreadable; indexing its versions again", index)
                data = b""
            else:
                if content.end < len(data):
                    log.warning(
                        "history index %s: dropped %d bytes of torn tail after %d records",
                        index, len(data) - content.end, content.records,
                    )  # fmt: skip
                    os.truncate(index, content.end)
        if not data:
            self._write_index(path, name, [])
            content = fmt.IndexContent(name, end=len(fmt.encode_index_header(name)))
        doc = _Doc(path, content)
        self._reconcile(doc)
        return doc

    def _reconcile(self, doc: _Doc) -> None:
        """Index version files the index lost; forget indexed versions whose file is gone."""
        content, files = doc.content, {}
        for entry in doc.path.iterdir():
            if entry.name.endswith(".tmp"):
                entry.unlink(missing_ok=True)  # a write a crash interrupted
            elif entry.suffix == ".ver" and entry.stem.isdigit():
                files[int(entry.stem)] = entry
        for id, path in sorted(files.items()):
            if id in content.dropped:
                path.unlink(missing_ok=True)  # dropped, then the crash came before the unlink
            elif id not in content.metas:
                try:
                    meta = fmt.parse_version_meta(path.read_bytes())
                except (OSError, fmt.Damaged) as exc:
                    self.damaged += 1
                    log.error("version file %s is damaged (%s): not listed", path, exc)
                    continue
                meta = dataclasses.replace(meta, id=id)
                log.info("indexing version %d of %r again from its file", id, content.name)
                self._append(doc, {"op": "version", "meta": meta.to_json()})
                content.metas[id] = meta
                content.top = max(content.top, id)
        for id in [id for id in content.metas if id not in files]:
            log.warning("version %d of %r is indexed but its file is gone", id, content.name)
            del content.metas[id]

    def _write_index(self, path: Path, name: str, metas: list[VersionMeta]) -> None:
        body = b"".join(encode_version_op(m) for m in metas)
        tmp = path / (INDEX + ".tmp")
        tmp.unlink(missing_ok=True)
        write_new(tmp, fmt.encode_index_header(name) + body)
        os.replace(tmp, path / INDEX)
        fsync_dir(path)

    def _append(self, doc: _Doc, op: dict[str, Any]) -> None:
        data = fmt.encode_op(op)
        fd = os.open(doc.path / INDEX, os.O_WRONLY | os.O_APPEND)
        try:
            if os.write(fd, data) != len(data):
                raise OSError("short write to the history index")
            os.fsync(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, doc.content.end)
            raise
        finally:
            os.close(fd)
        doc.content.end += len(data)
        doc.content.records += 1

    def _versions(self, name: str) -> list[VersionMeta]:
        return sorted(self._doc(name).content.metas.values(), key=lambda m: m.id)

    def _save(self, name: str, meta: VersionMeta, state: bytes, text: str) -> VersionMeta:
        doc = self._doc(name)
        if not doc.path.is_dir():
            self.root.mkdir(parents=True, exist_ok=True)
            doc.path.mkdir()
            fsync_dir(self.root)
            self._write_index(doc.path, name, [])
            doc.content = fmt.IndexContent(name, end=len(fmt.encode_index_header(name)))
        content = doc.content
        id = content.top + 1
        zstate, ztext = fmt.zip_payload(state, text)
        meta = dataclasses.replace(meta, id=id, stored_bytes=len(zstate) + len(ztext))
        final = doc.path / f"{id:06d}.ver"
        tmp = final.with_name(final.name + ".tmp")
        tmp.unlink(missing_ok=True)
        try:
            write_new(tmp, fmt.encode_version(meta, zstate, ztext))
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(doc.path)
        content.top = id  # taken, even if indexing fails: the file is indexed at load
        self._append(doc, {"op": "version", "meta": meta.to_json()})
        content.metas[id] = meta
        return meta

    def _read(self, name: str, id: int) -> tuple[bytes, str] | None:
        doc = self._doc(name)
        if id not in doc.content.metas:
            return None
        path = doc.path / f"{id:06d}.ver"
        try:
            _, state, text = fmt.parse_version(path.read_bytes())
        except (OSError, fmt.Damaged) as exc:
            self.damaged += 1
            log.error("version file %s cannot be read (%s)", path, exc)
            return None
        return state, text

    def _label(self, name: str, id: int, label: str | None) -> VersionMeta | None:
        doc = self._doc(name)
        held = doc.content.metas.get(id)
        if held is None:
            return None
        self._append(doc, {"op": "label", "id": id, "label": label})
        doc.content.metas[id] = meta = held.with_label(label)
        return meta

    def _drop(self, name: str, ids: list[int]) -> None:
        doc = self._doc(name)
        ids = [id for id in ids if id in doc.content.metas]
        if not ids:
            return
        self._append(doc, {"op": "drop", "ids": ids})
        for id in ids:
            del doc.content.metas[id]
            doc.content.dropped.add(id)
            (doc.path / f"{id:06d}.ver").unlink(missing_ok=True)
        fsync_dir(doc.path)
        live = len(doc.content.metas)
        if doc.content.records > 2 * live + 64:  # mostly dead records: rewrite it
            metas = sorted(doc.content.metas.values(), key=lambda m: m.id)
            top = doc.content.top
            self._write_index(doc.path, name, metas)
            rewritten = fmt.parse_index((doc.path / INDEX).read_bytes())
            rewritten.top = max(rewritten.top, top)
            doc.content = rewritten

    def _delete(self, name: str) -> None:
        self._docs.pop(name, None)
        path = self._dir(name)
        if not path.exists():
            return
        for i in range(1000):
            aside = path.with_name(f"{path.name}.deleted{i or ''}")
            if not aside.exists():
                break
        os.replace(path, aside)
        fsync_dir(self.root)
        shutil.rmtree(aside, ignore_errors=True)


def encode_version_op(meta: VersionMeta) -> bytes:
    return fmt.encode_op({"op": "version", "meta": meta.to_json()})
