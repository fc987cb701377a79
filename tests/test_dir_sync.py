"""A new log's directory entry is fsynced before any record in it counts as durable, and one
directory fsync serves every document created before it started (``FileStore.sync_directory``).
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from collab.storage import file as file_store
from collab.storage.base import Record
from collab.storage.file import FileStore
from tests.wait import eventually


class Gate:
    """Directory fsyncs that wait, one by one, until ``open_one`` lets the next through."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.real = file_store.fsync_dir
        self.started = 0
        self.done = 0
        self._allowed = threading.Semaphore(0)
        monkeypatch.setattr(file_store, "fsync_dir", self)

    def __call__(self, path: Path) -> None:
        self.started += 1
        assert self._allowed.acquire(timeout=10), "a directory fsync was never let through"
        self.real(path)
        self.done += 1

    def open_one(self) -> None:
        self._allowed.release()


def record(i: int) -> Record:
    return Record(f"update {i}".encode(), 0.0, "t")


async def test_a_record_of_a_new_log_is_durable_only_after_its_directory_fsync(
    tmp_path, monkeypatch
):
    gate = Gate(monkeypatch)
    store = FileStore(tmp_path, fsync="always")
    log = store.log("doc")
    await log.load()
    cursor = log.append(record(1))
    flushing = asyncio.ensure_future(log.flush(cursor))
    await eventually(lambda: gate.started == 1)
    await asyncio.sleep(0.05)  # the file's own fsync is long done
    assert not log.durable(cursor) and not flushing.done()
    gate.open_one()
    await asyncio.wait_for(flushing, 10)
    assert log.durable(cursor)
    later = log.append(record(2))  # the entry is durable now: no second directory fsync
    await log.flush(later)
    assert gate.started == 1
    await store.close()


async def test_one_directory_fsync_covers_every_document_created_before_it(tmp_path, monkeypatch):
    gate = Gate(monkeypatch)
    store = FileStore(tmp_path, fsync="always")
    logs = [store.log(f"doc-{i}") for i in range(20)]
    await asyncio.gather(*(log.load() for log in logs))
    cursors = [log.append(record(i)) for i, log in enumerate(logs)]
    flushing = asyncio.gather(*(log.flush(c) for log, c in zip(logs, cursors, strict=True)))
    await eventually(lambda: gate.started == 1)
    gate.open_one()
    await asyncio.wait_for(flushing, 10)
    assert gate.started == 1  # not 20
    assert all(log.durable(c) for log, c in zip(logs, cursors, strict=True))
    await store.close()


async def test_a_directory_fsync_started_before_a_log_was_created_does_not_count_for_it(
    tmp_path, monkeypatch
):
    gate = Gate(monkeypatch)
    store = FileStore(tmp_path, fsync="always")
    first, second = store.log("first"), store.log("second")
    await first.load()
    await second.load()
    a = first.append(record(1))
    flushing_a = asyncio.ensure_future(first.flush(a))
    await eventually(lambda: gate.started == 1)  # under way before "second" has a log
    b = second.append(record(2))
    flushing_b = asyncio.ensure_future(second.flush(b))
    gate.open_one()
    await asyncio.wait_for(flushing_a, 10)
    await eventually(lambda: gate.started == 2)
    assert not second.durable(b) and not flushing_b.done()
    gate.open_one()
    await asyncio.wait_for(flushing_b, 10)
    assert second.durable(b)
    await store.close()


async def test_a_failed_directory_fsync_is_a_failed_commit(tmp_path, monkeypatch):
    def broken(path: Path) -> None:
        raise OSError(5, "Input/output error (test)")

    monkeypatch.setattr(file_store, "fsync_dir", broken)
    store = FileStore(tmp_path, fsync="always")
    log = store.log("doc")
    await log.load()
    cursor = log.append(record(1))
    with pytest.raises(OSError):
        await log.flush(cursor)
    assert not log.durable(cursor)
    assert store.faults == 1 and "fsync" in store.failing
    with pytest.raises(OSError):
        await log.close()
    await store.close()


@pytest.mark.parametrize("policy", ["always", "interval"])
async def test_loading_fsyncs_the_logs_a_killed_process_may_have_left_unsynced(
    tmp_path, monkeypatch, policy
):
    import os
    import stat

    first = FileStore(tmp_path, fsync="never")  # written, never fsynced: as after a SIGKILL
    log = first.log("doc")
    await log.load()
    log.append(record(1))
    await first.close()
    log_inode = os.stat(tmp_path / "doc.0.log").st_ino
    synced: list[int] = []
    real = os.fsync

    def counting(fd: int) -> None:
        info = os.fstat(fd)
        synced.append(info.st_ino if stat.S_ISREG(info.st_mode) else -1)
        real(fd)

    monkeypatch.setattr(os, "fsync", counting)
    store = FileStore(tmp_path, fsync=policy)
    loaded = await store.log("doc").load()
    assert len(loaded.records) == 1
    assert log_inode in synced and -1 in synced  # the log and the directory
    await store.close()
