"""The operator's commands: ``export``, ``import``, ``backup`` and ``restore``.

``cli`` registers them (``add_parsers``) and runs them (``run``). Which of them
may run beside a server using the data directory:

* ``export`` and ``backup`` take no lock: they read each document as it was
  at one moment (``storage.backup.read_document``), so a running server may
  keep writing;
* ``restore`` and ``import`` take the directory's lock, and refuse (status 1,
  saying so) while a server holds it: they write files a server would not
  know about. To add a document to a running server, use its HTTP API.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from pycrdt import Doc

from .core import names
from .core.errors import CollabError, DocumentUnavailable
from .core.room import Room
from .server.audit import AuditLog
from .server.extensions import AuditEvent
from .storage import backup
from .storage.base import Record, StoreLocked
from .storage.file import FileStore
from .storage.records import NewerFormat
from .storage.redis.store import RedisMisconfigured, RedisStore

__all__ = ["COMMANDS", "add_parsers", "run"]

COMMANDS = ("export", "import", "backup", "restore")


def add_parsers(commands: Any, data_dir: str) -> None:
    """Add the commands to ``commands`` (an ``add_subparsers`` result); ``data_dir``: default."""
    sub = commands.add_parser(
        "export", help="write a document's text or Yjs state (server may run)"
    )
    sub.add_argument("name", help="document name")
    sub.add_argument(
        "--format",
        choices=("text", "ydoc"),
        default="text",
        help="text: the content Y.Text as UTF-8; ydoc: the whole Yjs state (every shared type) "
        "as one binary update, for import",
    )
    sub.add_argument("--output", "-o", help="write to this file (default: standard output)")
    sub.add_argument("--data-dir", default=data_dir)
    sub.add_argument("--redis-url", help="read it from this cluster's Redis instead")

    sub = commands.add_parser(
        "import",
        help="add a document from a ydoc file (server stopped), or move every document "
        "of --data-dir into --redis-url (cluster servers may run)",
    )
    sub.add_argument(
        "file", nargs="?", help="a Yjs update holding the whole state (export --format ydoc)"
    )
    sub.add_argument("--name", help="the document to create (with a file)")
    how = sub.add_mutually_exclusive_group()
    how.add_argument("--merge", action="store_true", help="merge into an existing document")
    how.add_argument("--replace", action="store_true", help="replace an existing document")
    sub.add_argument("--data-dir", default=data_dir)
    sub.add_argument("--redis-url", help="write into this cluster's Redis")

    sub = commands.add_parser("backup", help="copy every document consistently (server may run)")
    sub.add_argument("dest", help="a new (or empty) directory for the copy")
    sub.add_argument("--data-dir", default=data_dir)

    sub = commands.add_parser("restore", help="copy documents of a backup back (server stopped)")
    sub.add_argument("src", help="a directory written by collab backup")
    sub.add_argument("--force", action="store_true", help="replace documents that exist already")
    sub.add_argument("--data-dir", default=data_dir)


def run(args: argparse.Namespace) -> int:
    """Run command ``args.command``; print what was done, or why not to stderr.

    Returns:
        The exit status: 0 done, 1 refused or failed.
    """
    try:
        if args.command == "export":
            if args.redis_url:
                return asyncio.run(
                    _export_redis(args.redis_url, args.name, args.format, args.output)
                )
            return _export(Path(args.data_dir), args.name, args.format, args.output)
        if args.command == "import":
            if args.redis_url:
                return asyncio.run(
                    _import_redis(args.redis_url, Path(args.data_dir), args.file, args.name,
                                  args.merge, args.replace)
                )  # fmt: skip
            if args.file is None or args.name is None:
                _say("collab import: give a FILE and --name (or --redis-url to move a data dir)")
                return 1
            return _import(
                Path(args.data_dir), Path(args.file), args.name, args.merge, args.replace
            )
        if args.command == "backup":
            return _backup(Path(args.data_dir), Path(args.dest))
        return _restore(Path(args.src), Path(args.data_dir), args.force)
    except (OSError, StoreLocked, CollabError, NewerFormat, RedisMisconfigured) as exc:
        _say(f"collab {args.command}: {exc}")
        return 1


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def _audit(action: str, names_: list[str]) -> None:
    """One ``collab.audit`` line per document, naming the operating-system user."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    who, trail = getpass.getuser(), AuditLog()
    for name in names_:
        trail.on_audit(AuditEvent(action, name, who, "local", None, time.time()))


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _export(root: Path, name: str, form: str, output: str | None) -> int:
    copy = backup.read_document(root, names.to_stem(names.validate(name)))
    if copy is None:
        _say(f"collab: no document {name!r} in {root}")
        return 1
    return _write_out(name, copy.updates, form, output)


async def _export_redis(url: str, name: str, form: str, output: str | None) -> int:
    """Read ``name`` from Redis in one transaction (safe while servers run)."""
    store = RedisStore(url, durability="relaxed")
    try:
        name = names.validate(name)
        if await store.info(name) is None:
            _say(f"collab: no document {name!r} in {url}")
            return 1
        loaded = await store.log(name).load()
    finally:
        await store.close()
    return _write_out(name, loaded.updates, form, output)


async def _import_redis(
    url: str, root: Path, file: str | None, name: str | None, merge: bool, replace: bool
) -> int:
    """Write a ydoc file, or every document of ``root``, into a cluster's Redis.

    Servers may run: each document is added as one update (live processes
    relay it), or, with ``replace``, deleted first (its clients get 4404).
    """
    if file is not None:
        if name is None:
            _say("collab import: a FILE needs --name")
            return 1
        sources = [(names.validate(name), [Path(file).read_bytes()])]
    else:
        sources = []
        files = FileStore(root, read_only=True)
        try:
            infos = await files.list()
        finally:
            await files.close()
        for info in infos:
            copy = backup.read_document(root, names.to_stem(info.name))
            if copy is not None:
                sources.append((info.name, copy.updates))
    store = RedisStore(url)
    refused = 0
    try:
        for doc_name, updates in sources:
            room = Room(doc_name)
            try:
                room.restore(updates)
            except ValueError as exc:
                _say(f"collab import: {doc_name!r} is not a Yjs update ({exc})")
                refused += 1
                continue
            exists = await store.info(doc_name) is not None
            if exists and not (merge or replace):
                _say(f"collab import: {doc_name!r} exists in Redis; pass --merge or --replace")
                refused += 1
                continue
            if exists and replace:
                await store.log(doc_name).delete()
            log = store.log(doc_name)
            await log.load()
            state = room.doc.get_update()
            cursor = log.append(Record(state, time.time(), "import"))
            await log.flush(cursor)
            await log.close()
            print(f"imported {doc_name!r} into {url}")
        _audit("import", [n for n, _ in sources])
    finally:
        await store.close()
    return 1 if refused else 0


def _write_out(name: str, updates: list[bytes], form: str, output: str | None) -> int:
    room = Room(name)
    room.restore(updates)
    data = room.text.encode() if form == "text" else room.doc.get_update()
    if output is not None:
        _write_atomically(Path(output), data)
    elif form == "ydoc" and sys.stdout.isatty():
        _say("collab: a ydoc export is binary: redirect it, or use --output FILE")
        return 1
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return 0


def _import(root: Path, file: Path, name: str, merge: bool, replace: bool) -> int:
    name = names.validate(name)
    update = file.read_bytes()
    try:
        Doc().apply_update(update)  # refuse anything but a Yjs update before touching the store
    except ValueError as exc:
        _say(f"collab import: {file} is not a Yjs update ({exc})")
        return 1
    store = FileStore(root, fsync="always")
    try:
        with store.lock():
            created = asyncio.run(_write_document(store, name, update, merge, replace))
    except StoreLocked:
        _say(
            f"collab import: {root} is in use by a running server; stop it first "
            "(import writes the data directory directly)"
        )
        return 1
    except FileExistsError as exc:
        _say(f"collab import: {exc}")
        return 1
    _audit("import", [name])
    print(f"{created} {name!r} in {root}")
    return 0


async def _write_document(
    store: FileStore, name: str, update: bytes, merge: bool, replace: bool
) -> str:
    """Store ``update`` as the state of ``name``; returns what was done."""
    try:
        log = store.log(name)
        loaded = await log.load()
        exists = loaded.state is not None or bool(loaded.records)
        done = "imported"
        if exists and not (merge or replace):
            raise FileExistsError(
                f"document {name!r} exists; pass --merge (CRDT merge) or --replace"
            )
        room = Room(name)
        if exists and merge:
            room.restore(loaded.updates)
            done = "merged into"
        elif exists:
            await log.delete()
            log = store.log(name)
            loaded = await log.load()
            done = "replaced"
        room.doc.apply_update(update)
        state = room.doc.get_update()
        cursor = log.append(Record(state, time.time(), "import"))
        await log.flush(cursor)
        await log.compact(state, cursor)
        await log.close()
        return done
    finally:
        await store.close()


def _backup(root: Path, dest: Path) -> int:
    if not root.is_dir():
        _say(f"collab backup: no data directory {root}")
        return 1
    if dest.resolve().is_relative_to(root.resolve()):
        _say("collab backup: the destination must not be inside the data directory")
        return 1
    copies, failed = [], []
    for stem in backup.stems(root):
        try:
            copy = backup.read_document(root, stem)
        except (DocumentUnavailable, NewerFormat, backup.Changing) as exc:
            failed.append(f"{stem}: {exc}")
            continue
        if copy is not None:
            copies.append(copy)
    backup.write_tree(dest, copies, str(root.resolve()))
    records = sum(len(c.records) for c in copies)
    size = sum(c.size for c in copies)
    print(f"backed up {len(copies)} documents ({records} log records, {size} bytes) to {dest}")
    dropped = [c for c in copies if c.dropped]
    for copy in dropped:
        print(f"  {copy.name!r}: left out {copy.dropped} bytes of an unfinished or damaged record")
    for line in failed:
        _say(f"collab backup: not copied: {line}")
    return 1 if failed else 0


def _restore(src: Path, root: Path, force: bool) -> int:
    if not src.is_dir():
        _say(f"collab restore: no backup directory {src}")
        return 1
    copies = backup.read_tree(src)  # every file checked before anything is written
    store = FileStore(root)
    try:
        with store.lock():
            replaced = backup.restore(copies, root, force)
    except StoreLocked:
        _say(f"collab restore: {root} is in use by a running server; stop it first")
        return 1
    except backup.Conflict as exc:
        listed = ", ".join(repr(n) for n in exc.names)
        _say(
            f"collab restore: {root} already has {len(exc.names)} of these documents "
            f"({listed}); nothing was restored. Pass --force to replace them."
        )
        return 1
    _audit("restore", [copy.name for copy in copies])
    print(f"restored {len(copies)} documents from {src} into {root}")
    if replaced:
        print(f"replaced (--force): {', '.join(repr(n) for n in replaced)}")
    return 0
