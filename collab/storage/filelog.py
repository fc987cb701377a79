"""One open document of a ``FileStore``: appends, group commits, compaction.

Rule: asyncio on the event loop, blocking work in the store's own threads
(``FileStore.run``); ``append`` alone writes on the loop (one ``os.write``).

Records are numbered from 1 in the order this log loaded or appended them; a
cursor is that number. A document's records live in consecutive log files
(``LogFile``); the newest is open for appending (version 2). Durability is a
number too: every record up to ``_synced`` is in the snapshot or fsynced, so
``durable`` is one comparison. Compaction opens log ``seq + 1`` first, copies
into it the records after ``upto`` (those in files, then those appended while
it ran), switches appends to it, writes the snapshot naming it and only then
removes the older logs. Until the snapshot is in place both copies of those
records exist, and replaying both is harmless: Yjs updates are idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import os
import time
from typing import TYPE_CHECKING, NamedTuple

from . import records as fmt
from .base import Cursor, Loaded, LogWatcher, Record
from .disk import LogFile, create_log, records_after, write_whole

if TYPE_CHECKING:
    from .file import FileStore

__all__ = ["GROUP_COMMIT_WINDOW", "FileCursor", "FileLog"]

# Group commits of one log start at most this often (seconds). An fsync takes
# ~0.2 ms of wall time and ~0.07 ms of CPU; back to back under load they would
# eat half a core, while a 2 ms window lets each cover more records.
GROUP_COMMIT_WINDOW = 0.002


class FileCursor(NamedTuple):
    """After record ``n`` of one ``FileLog`` (opaque to callers; one per update)."""

    n: int


class FileLog:
    """One document of a ``FileStore``; see ``base.DocumentLog`` for the contract."""

    def __init__(self, store: FileStore, name: str) -> None:
        self.name = name
        self.store = store
        self._lock = asyncio.Lock()  # compaction, close and delete, one at a time
        self._reset()

    def _reset(self) -> None:
        self._loaded = False
        self._files: list[LogFile] = []
        self._next_seq = 0  # the log the next one created gets: never skips a number
        self._n = 0  # records loaded or appended
        self._covered = 0  # records held by the snapshot on disk
        self._synced = 0  # every record up to this one is fsynced (or in the snapshot)
        self._size = 0
        self._carry: list[bytes] | None = None  # appended while compaction reads the logs
        self._inflight: asyncio.Future[None] | None = None
        self._commit_started = -GROUP_COMMIT_WINDOW
        self._failed: OSError | None = None

    @property
    def size(self) -> int:
        return self._size

    @property
    def dirty(self) -> bool:
        """True if something written is not fsynced yet (the interval syncer asks)."""
        return any(file.dirty for file in self._files)

    async def load(self) -> Loaded:
        if self._loaded:
            raise RuntimeError(f"log of {self.name!r} is loaded already")
        self.store.claim(self)
        try:
            # A killed process may have left records in the page cache only: on disk before
            # anyone is sent them (``--fsync never`` promises nothing of the kind).
            sync = self.store.fsync != "never"
            loaded, files, next_seq, damaged = await self.store.run(self._read, sync)
        except BaseException:
            self.store.unclaim(self)
            raise
        self.store.damaged += damaged
        self._files, self._next_seq = files, next_seq
        self._n = self._synced = len(loaded.records)
        self._size = sum(file.size - file.start for file in files)
        self._loaded = True
        loaded.cursor = FileCursor(self._n)
        return loaded

    def _read(self, sync: bool) -> tuple[Loaded, list[LogFile], int, int]:
        """What ``load`` reads, in one of the store's threads (one round trip)."""
        return self.store.disk.read(self.name, sync)

    def append(self, record: Record) -> Cursor:
        try:
            file = self._writable()
        except OSError as exc:
            if exc.errno != errno.EIO or self._failed is None:  # not a fault noted already
                self.store.fault("write", f"cannot create a log of {self.name!r}: {_why(exc)}")
            raise
        frame = fmt.encode_record(record, file.version)
        try:
            write_whole(file, frame)
        except OSError as exc:
            if file.torn:
                self._failed = exc  # nothing may follow the torn record: reload from disk
            self.store.fault("write", f"cannot write to the log of {self.name!r}: {_why(exc)}")
            raise
        if self.store.failing:
            self.store.mended("write")
        self._size += len(frame)
        self._n = file.written = self._n + 1
        if self._carry is not None:
            self._carry.append(frame)
        self.store.schedule_sync()
        return FileCursor(self._n)

    def durable(self, cursor: Cursor) -> bool:
        return self.store.fsync != "always" or self._number(cursor) <= self._synced

    async def flush(self, cursor: Cursor | None = None) -> None:
        if self.store.fsync == "always":
            await self._wait_synced(self._n if cursor is None else self._number(cursor))

    async def sync(self) -> None:
        """Fsync everything written so far (one group commit); the interval syncer calls it."""
        await self._wait_synced(self._n)

    async def compact(self, state: bytes, upto: Cursor) -> None:
        n = self._number(upto)
        # Not cancellable half way: the threads would go on with what was started.
        await asyncio.shield(asyncio.ensure_future(self._compact(state, n)))

    async def _compact(self, state: bytes, n: int) -> None:
        async with self._lock:
            self._check()
            if n <= self._covered:
                return  # the snapshot on disk holds as much already
            if self._current() is None:
                self._open_next()  # where appends go while this runs
            new = await self._start_next(n)
            mark = self._n
            try:
                await self.store.run(
                    self.store.disk.write_snapshot, self.name, state, new.seq, new.fd
                )
            except BaseException:
                await self._seal(keep=new)  # both logs stay and replay
                raise
            new.synced, new.dir_synced = max(new.synced, mark), True
            await self._drain()
            for file in self._files[:-1]:
                if file.fd >= 0:
                    os.close(file.fd)
            self._files, self._covered, self._size = [new], n, new.size - new.start
            self._recount()

    async def delete(self) -> bool:
        if self.store.read_only:
            raise OSError(errno.EROFS, "the store is read-only")
        self.store.claim(self)
        async with self._lock:
            await self._drain()
            self._close_files()
            try:
                return await self.store.run(self.store.disk.remove, self.name)
            finally:
                self.store.unclaim(self)

    def watch(self, watcher: LogWatcher) -> None:
        pass  # no other process writes to a locked data directory

    async def close(self) -> None:
        if not self._loaded:
            return
        async with self._lock:
            try:
                if self.store.fsync != "never":
                    await self._wait_synced(self._n)
            finally:
                await self._drain()
                self._close_files()
                self.store.unclaim(self)

    # -- internals ----------------------------------------------------------

    def _number(self, cursor: Cursor) -> int:
        if not isinstance(cursor, FileCursor) or cursor.n > self._n:
            raise ValueError(f"{cursor!r} is not a cursor of this log of {self.name!r}")
        return cursor.n

    def _check(self) -> None:
        if not self._loaded:
            raise RuntimeError(f"load the log of {self.name!r} first")
        if self.store.read_only:
            raise OSError(errno.EROFS, "the store is read-only")
        if self._failed is not None:
            raise OSError(errno.EIO, f"an earlier write or fsync of {self.name!r} failed")

    def _current(self) -> LogFile | None:
        last = self._files[-1] if self._files else None
        return last if last is not None and last.fd >= 0 else None

    def _writable(self) -> LogFile:
        self._check()
        return self._current() or self._open_next()

    def _open_next(self) -> LogFile:
        """Create the next log (never appends version 2 records to a version 1 file)."""
        path = self.store.disk.log_path(self.name, self._next_seq)
        file = create_log(path, self._next_seq, self.name, self._n + 1)
        file.entry = self.store.created()
        self._files.append(file)
        self._next_seq += 1
        return file

    async def _start_next(self, upto: int) -> LogFile:
        """Open the next log holding every record after ``upto``; append to it from now."""
        files = [dataclasses.replace(file) for file in self._files]  # as of now
        seq = self._next_seq
        path = self.store.disk.log_path(self.name, seq)
        self._carry = []
        try:
            body = await self.store.run(records_after, upto, files)
            new = await self.store.run(create_log, path, seq, self.name, upto + 1, body)
            new.entry = self.store.created()
            try:
                write_whole(new, b"".join(self._carry))
            except BaseException:
                os.close(new.fd)
                path.unlink(missing_ok=True)
                raise
        finally:
            self._carry = None
        new.written = self._n
        self._files.append(new)
        self._next_seq = seq + 1  # only now: a failed open must not skip a number
        self._size = sum(file.size - file.start for file in self._files)
        return new

    async def _seal(self, keep: LogFile) -> None:
        """After a failed snapshot: fsync the old logs as promised, then close them."""
        if self.store.fsync != "never":
            with contextlib.suppress(OSError):  # in ``_failed``; the snapshot's error is raised
                await self._wait_synced(self._n)
        await self._drain()
        for file in self._files:
            if file is not keep and file.fd >= 0:
                os.close(file.fd)
                file.fd = -1

    def _close_files(self) -> None:
        for file in self._files:
            if file.fd >= 0:
                os.close(file.fd)
        self._reset()

    async def _drain(self) -> None:
        """Wait until no fsync is running, so no file is closed under it."""
        while self._inflight is not None:
            with contextlib.suppress(OSError):  # recorded in ``_failed``
                await asyncio.shield(self._inflight)

    async def _wait_synced(self, target: int) -> None:
        while self._synced < target:
            if self._failed is not None:
                raise OSError(errno.EIO, f"an fsync of {self.name!r} failed") from self._failed
            if self._inflight is None:
                if not self.dirty:
                    raise RuntimeError(f"records of {self.name!r} were closed unsynced")
                self._inflight = asyncio.ensure_future(self._commit())
            await asyncio.shield(self._inflight)

    async def _commit(self) -> None:
        """One group commit: fsync every file written since its last fsync."""
        loop = asyncio.get_running_loop()
        try:
            wait = self._commit_started + GROUP_COMMIT_WINDOW - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)  # records arriving meanwhile join this commit
            self._commit_started = loop.time()
            dirty = [(file, file.written) for file in self._files if file.dirty]
            fds = [file.fd for file, _ in dirty]
            entry = max((file.entry for file, _ in dirty if not file.dir_synced), default=0)
            start = time.perf_counter()
            try:
                await self.store.run(self.store.disk.fsync_files, fds, False)
                if entry:
                    # Then the new logs' directory entries: one fsync for every document
                    # waiting (``sync_directory``). After the file's, not beside it: a
                    # journalling file system has mostly committed the entry by then.
                    await self.store.sync_directory(entry)
            except OSError as exc:
                self._failed = exc  # after a failed fsync, data may be gone: reload it
                self.store.fault("fsync", f"fsync of the log of {self.name!r} failed: {_why(exc)}")
                raise
            self.store.on_fsync(time.perf_counter() - start)
            if self.store.failing:
                self.store.mended("fsync")
            for file, mark in dirty:
                file.synced, file.dir_synced = max(file.synced, mark), True
            self._recount()
        finally:
            self._inflight = None

    def _recount(self) -> None:
        done = self._covered
        for file in self._files:
            if file.first <= done + 1:
                done = max(done, file.synced)
        self._synced = done


def _why(exc: OSError) -> str:
    """``No space left on device (short write to x.0.log)``: the errno's words, then any detail."""
    if not exc.errno:
        return str(exc)
    words = os.strerror(exc.errno)
    return words if exc.strerror in (None, words) else f"{words} ({exc.strerror})"
