"""Documents in a data directory: the ``Store`` of snapshots plus append-only logs.

Rule: no tornado, no sockets. ``FileStore`` holds the directory lock, the
store's own threads (``run``: every blocking call goes there) and the interval
syncer; ``filelog.FileLog`` is one open document, ``disk`` does the blocking
work (layout, repair on load) and ``records`` is the byte format.
``read_only`` stores never write, move or truncate anything (``collab export``
beside a running server). ``readiness`` probes the directory (``probe``) in the
store's threads at most every ``PROBE_INTERVAL`` seconds, and reports a log
write or fsync that failed (``fault``) until one of its kind succeeds again or
``FAULT_HOLD`` seconds have passed.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import fcntl
import logging
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from ..core import names
from . import probe
from . import records as fmt
from .base import DocInfo, FsyncPolicy, Presence, StoreLocked
from .disk import Directory, fsync_dir
from .filelog import GROUP_COMMIT_WINDOW, FileCursor, FileLog
from .generations import GenerationFiles, GenerationLog
from .pools import started_pool

__all__ = ["GROUP_COMMIT_WINDOW", "PROBE_INTERVAL", "FileCursor", "FileLog", "FileStore"]

PROBE_INTERVAL = 2.0  # seconds between readiness probes of the directory
PROBE_TIMEOUT = 5.0  # a probe that takes longer (a hung disk) reports not ready
# A failed log write or fsync keeps ``readiness`` failing this long after the last failure
# (unless one of the same kind succeeds first): the probe's small file may still fit on a
# disk too full for a record, or a probe's fsync succeed where a log's failed.
FAULT_HOLD = 10.0

log = logging.getLogger("collab.store")

T = TypeVar("T")


class FileStore:
    """Snapshots and logs under one directory; see ``base.Store``.

    Args:
        root: the data directory (created unless ``read_only``).
        read_only: never write, move or truncate anything.
        fsync: ``always`` (``durable`` once fsynced, by group commits),
            ``interval`` (fsync dirty logs every ``fsync_interval`` seconds) or
            ``never``; snapshots are always fsynced.
        min_free_bytes: ``readiness`` fails with less free space than this.
    """

    def __init__(
        self,
        root: Path | str,
        read_only: bool = False,
        fsync: FsyncPolicy = "interval",
        fsync_interval: float = 1.0,
        on_fsync: Callable[[float], None] = lambda seconds: None,
        min_free_bytes: int = 0,
    ) -> None:
        if fsync not in ("always", "interval", "never"):
            raise ValueError(f"fsync must be always, interval or never, not {fsync!r}")
        self.root = Path(root)
        self.read_only = read_only
        self.fsync: FsyncPolicy = fsync
        self.fsync_interval = fsync_interval
        self.on_fsync = on_fsync  # called with the seconds each group commit's fsync took
        self.damaged = 0
        self.presence: Presence | None = None  # one process holds the directory (its lock)
        if not read_only:
            self.root.mkdir(parents=True, exist_ok=True)
        self.disk = Directory(self.root, read_only)
        self.generations = GenerationFiles(self.root)  # one per document: see ``generations``
        self._lock_fd = -1
        self._pool: ThreadPoolExecutor | None = None
        self._open: dict[str, FileLog] = {}
        self._syncer: asyncio.TimerHandle | None = None
        self._syncing: set[asyncio.Task[None]] = set()
        self.min_free_bytes = min_free_bytes
        self._ready: str | None = None
        self._next_probe = 0.0
        self._probing: asyncio.Future[str | None] | None = None
        self.faults = 0  # log writes and fsyncs that failed
        self._entries = 0  # directory entries (new logs) created, numbered from 1
        self._entries_synced = 0  # every entry up to this one is durable (a directory fsync)
        self._dir_sync: asyncio.Future[None] | None = None
        self.failing: dict[str, tuple[str, float]] = {}  # "write"/"fsync" -> why, since when

    # -- the directory lock -------------------------------------------------

    def acquire(self) -> None:
        """Take the directory's lock so no second writer can use it.

        Raises:
            StoreLocked: another process holds it.
        """
        self._lock_fd = self._take_lock()

    def _take_lock(self) -> int:
        # Read-only: a descriptor open for writing would keep the file system
        # from being remounted read-only, and flock needs none.
        fd = os.open(self.root / probe.LOCK_NAME, os.O_RDONLY | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreLocked(
                f"data directory {self.root} is in use by another collab process"
            ) from None
        return fd

    def release(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()

    # -- the Store protocol -------------------------------------------------

    def log(self, name: str) -> FileLog:
        return GenerationLog(self, name)

    async def info(self, name: str) -> DocInfo | None:
        return await self.run(self._info, name)

    async def list(
        self, after: str | None = None, limit: int | None = None
    ) -> builtins.list[DocInfo]:
        return await self.run(self._list, after, limit)

    async def readiness(self) -> str | None:
        """None if the directory took a small fsynced write, has space and its lock, and no
        log write or fsync failed in the last ``FAULT_HOLD`` seconds (since one succeeded)."""
        if self.read_only:
            return "the store is read-only"
        loop = asyncio.get_running_loop()
        if self._probing is None and loop.time() >= self._next_probe:
            self._next_probe = loop.time() + PROBE_INTERVAL
            self._probing = asyncio.ensure_future(self.run(self._probe))
        probing = self._probing
        if probing is None:
            return self._ready or self._recent_fault(loop.time())
        try:
            await asyncio.wait_for(asyncio.shield(probing), PROBE_TIMEOUT)
        except TimeoutError:
            return f"data directory not answering: a probe took over {PROBE_TIMEOUT:g}s"
        except Exception:
            pass  # read below
        if self._probing is probing:
            self._probing = None
            exc = probing.exception()
            self._ready = probing.result() if exc is None else f"probe failed: {exc}"
            if self._ready is not None:
                log.warning("not ready: %s", self._ready)
        return self._ready or self._recent_fault(loop.time())

    def _recent_fault(self, now: float) -> str | None:
        for kind, (reason, when) in list(self.failing.items()):
            if now - when < FAULT_HOLD:
                return reason
            del self.failing[kind]
        return None

    def fault(self, kind: str, reason: str) -> None:
        """A log ``kind`` (``write``, ``fsync``) failed: not ready for a while (``FAULT_HOLD``)."""
        self.faults += 1
        self.failing[kind] = (reason, asyncio.get_running_loop().time())

    def mended(self, kind: str) -> None:
        """A log ``kind`` succeeded again: that fault no longer counts against readiness."""
        self.failing.pop(kind, None)

    async def close(self) -> None:
        """Close every open log (fsyncing it), stop the syncer and the threads, unlock."""
        if self._syncer is not None:
            self._syncer.cancel()
            self._syncer = None
        for doc in list(self._open.values()):
            try:
                await doc.close()
            except Exception:
                log.exception("could not close the log of %r", doc.name)
        await asyncio.gather(*self._syncing, return_exceptions=True)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.release()

    def _probe(self) -> str | None:
        """One readiness probe; a lost lock is taken again if nobody else has it."""
        reason = probe.check(self.root, self._lock_fd, self.min_free_bytes)
        if reason is not None and reason.startswith("store lock lost"):
            try:
                fd = self._take_lock()
            except (StoreLocked, OSError) as exc:
                log.error("%s, and cannot be taken again: %s", reason, exc)
            else:
                os.close(self._lock_fd)
                self._lock_fd = fd
                log.error("%s: taken again; check that no other server used %s", reason, self.root)
        return reason

    # -- for FileLog ----------------------------------------------------------

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking ``fn(*args)`` in the store's threads."""
        if self._pool is None:
            self._pool = started_pool(4, "collab-store")
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def created(self) -> int:
        """A new log's directory entry was just created: its number for ``sync_directory``."""
        self._entries += 1
        return self._entries

    async def sync_directory(self, entry: int) -> None:
        """Return once entry ``entry`` is durable: one directory fsync for every log
        created before it started, however many documents wait for it (single flight)."""
        while self._entries_synced < entry:
            if self._dir_sync is None:
                self._dir_sync = asyncio.ensure_future(self._sync_directory())
            await asyncio.shield(self._dir_sync)

    async def _sync_directory(self) -> None:
        covers = self._entries  # created before this fsync starts: it covers them
        try:
            await self.run(fsync_dir, self.root)
            self._entries_synced = max(self._entries_synced, covers)
        finally:
            self._dir_sync = None

    def claim(self, doc: FileLog) -> None:
        if self._open.setdefault(doc.name, doc) is not doc:
            raise RuntimeError(f"{doc.name!r} is open already in this store")

    def unclaim(self, doc: FileLog) -> None:
        if self._open.get(doc.name) is doc:
            del self._open[doc.name]

    def schedule_sync(self) -> None:
        """With ``fsync="interval"``, fsync every dirty log once ``fsync_interval`` from now."""
        if self.fsync == "interval" and self._syncer is None:
            loop = asyncio.get_running_loop()
            self._syncer = loop.call_later(self.fsync_interval, self._sync_dirty)

    def _sync_dirty(self) -> None:
        self._syncer = None  # the next append starts it again
        for doc in self._open.values():
            if doc.dirty:
                task = asyncio.ensure_future(self._sync_logged(doc))
                self._syncing.add(task)
                task.add_done_callback(self._syncing.discard)

    @staticmethod
    async def _sync_logged(doc: FileLog) -> None:
        try:
            await doc.sync()
        except Exception:
            log.exception("fsync of %r failed", doc.name)

    # -- listing --------------------------------------------------------------

    def _info(self, name: str) -> DocInfo | None:
        stem = names.to_stem(name)
        snap = self.disk.snap(stem)
        corrupt = snap.with_name(snap.name + ".corrupt")  # still there, if refused
        try:
            with open(snap, "rb") as f:
                base = fmt.parse_snapshot_head(f.read(1024))[0]
        except (OSError, fmt.Damaged, fmt.NewerFormat):
            base = 0
        paths = [snap, corrupt, *(p for _, p in self.disk.logs_from(stem, base))]
        stats = [p.stat() for p in paths if p.exists()]
        if not stats:
            return None
        return DocInfo(name, sum(s.st_size for s in stats), max(s.st_mtime for s in stats))

    def _list(self, after: str | None, limit: int | None) -> builtins.list[DocInfo]:
        stems = set()
        for path in self.root.iterdir():
            if path.suffix in (".snap", ".log") or path.name.endswith(".snap.corrupt"):
                stems.add(path.name.split(".", 1)[0])
        named = ((names.from_stem(stem) or self._name_in_headers(stem)) for stem in stems)
        found: builtins.list[DocInfo] = []
        for name in sorted(n for n in named if n is not None and (after is None or n > after)):
            if limit is not None and len(found) >= limit:
                break
            info = self._info(name)  # only for the page: a stat per file
            if info is not None:
                found.append(info)
        return found

    def _name_in_headers(self, stem: str) -> str | None:
        """The name a hashed stem came from, as its logs or snapshot record it."""
        heads = [p for _, p in self.disk.logs(stem)] + [self.disk.snap(stem)]
        for path in heads:
            try:
                with open(path, "rb") as f:
                    data = f.read(1024)
                if path.suffix == ".log":
                    return fmt.parse_log_header(data).name
                return fmt.parse_snapshot_head(data)[1]
            except (OSError, fmt.Damaged, fmt.NewerFormat):
                continue
        return None
