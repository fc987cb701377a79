"""The file store: repair on load, the v1 format, locks, group commits, compaction on disk."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import shutil
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Doc, Text

from collab.core.errors import DocumentUnavailable
from collab.storage import records as fmt
from collab.storage.base import Loaded, Record, StoreLocked
from collab.storage.file import FileStore
from tests.crdt import text_of

FIXTURES = Path(__file__).parent / "fixtures"
HEADER = len(fmt.encode_log_header("doc"))


def edits(n: int) -> list[Record]:
    doc = Doc(client_id=1)
    text = doc.get("content", type=Text)
    out: list[bytes] = []
    doc.observe(lambda e: out.append(e.update))
    for i in range(n):
        text.insert(len(text), f"{i},")
    return [Record(u, 1000.0 + i, "ann") for i, u in enumerate(out)]


def state_of(records: list[Record]) -> bytes:
    return _doc_of([r.update for r in records]).get_update()


def _doc_of(updates: list[bytes]) -> Doc[Any]:
    doc: Doc[Any] = Doc()
    for update in updates:
        doc.apply_update(update)
    return doc


async def write(root: Path, name: str, records: list[Record], **options: Any) -> None:
    store = FileStore(root, **options)
    log = store.log(name)
    await log.load()
    for record in records:
        log.append(record)
    await store.close()


async def load(root: Path, name: str = "doc", **options: Any) -> tuple[Loaded, FileStore]:
    store = FileStore(root, **options)
    log = store.log(name)
    try:
        return await log.load(), store
    finally:
        await store.close()


def files(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name != ".lock")


def hold(monkeypatch: pytest.MonkeyPatch, name: str, when: Callable[..., bool]) -> HeldCall:
    """Make ``os.<name>`` wait (in its thread) whenever ``when(*args)`` is true."""
    held = HeldCall(getattr(os, name), when)
    monkeypatch.setattr(os, name, held)
    return held


class HeldCall:
    def __init__(self, real: Callable[..., Any], when: Callable[..., bool]) -> None:
        self.real, self.when = real, when
        self.entered, self.release = threading.Event(), threading.Event()
        self.calls = 0

    def __call__(self, *args: Any) -> Any:
        if self.when(*args):
            self.calls += 1
            self.entered.set()
            assert self.release.wait(10)
        return self.real(*args)

    async def reached(self) -> None:
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, self.entered.wait, 10)


# -- layout and compaction ----------------------------------------------------


async def test_compaction_replaces_the_logs_it_covers(tmp_path):
    store = FileStore(tmp_path)
    log = store.log("doc")
    await log.load()
    us = edits(4)
    upto = [log.append(r) for r in us[:3]][-1]
    log.append(us[3])
    await log.compact(state_of(us[:3]), upto)
    assert files(tmp_path) == ["doc.1.log", "doc.snap"]
    assert log.size == os.path.getsize(tmp_path / "doc.1.log") - HEADER  # the carried record
    await store.close()
    loaded, _ = await load(tmp_path)
    assert text_of(loaded.updates) == "0,1,2,3," and loaded.records == us[3:]


async def test_a_crash_between_new_log_and_snapshot_replays_both_logs(tmp_path):
    us = edits(3)
    (tmp_path / "doc.0.log").write_bytes(fmt.encode_log("doc", us[:2]))
    (tmp_path / "doc.1.log").write_bytes(fmt.encode_log("doc", us[1:]))  # carried, then more
    loaded, _ = await load(tmp_path)
    assert text_of(loaded.updates) == "0,1,2,"
    await write(tmp_path, "doc", edits(4)[3:])
    assert files(tmp_path) == ["doc.0.log", "doc.1.log"]  # appended to the newest


async def test_logs_left_below_the_snapshot_are_removed_on_load(tmp_path):
    us = edits(2)
    (tmp_path / "doc.snap").write_bytes(fmt.encode_snapshot("doc", 1, state_of(us[:1])))
    (tmp_path / "doc.0.log").write_bytes(fmt.encode_log("doc", us[:1]))  # removal cut short
    (tmp_path / "doc.1.log").write_bytes(fmt.encode_log("doc", us[1:]))
    loaded, _ = await load(tmp_path)
    assert text_of(loaded.updates) == "0,1,"
    assert files(tmp_path) == ["doc.1.log", "doc.snap"]


async def test_log_size_counts_the_records_only(tmp_path):
    store = FileStore(tmp_path)
    log = store.log("doc")
    await log.load()
    log.append(Record(b"abc"))
    assert log.size == os.path.getsize(tmp_path / "doc.0.log") - HEADER > 0
    await store.close()


async def test_records_appended_while_compaction_runs_survive(tmp_path, monkeypatch):
    us = edits(5)
    store = FileStore(tmp_path, fsync="always")
    log = store.log("doc")
    await log.load()
    upto = [log.append(r) for r in us[:2]][-1]
    log.append(us[2])
    opening = hold(monkeypatch, "open", lambda p, flags, *a: str(p).endswith(".1.log"))
    replacing = hold(monkeypatch, "replace", lambda src, dst: str(dst).endswith(".snap"))
    compacting = asyncio.ensure_future(log.compact(state_of(us[:2]), upto))
    await opening.reached()  # the logs are read; the next one is being created
    log.append(us[3])
    opening.release.set()
    await replacing.reached()  # appends go to the new log; the snapshot is being written
    log.append(us[4])
    replacing.release.set()
    await compacting
    await store.close()
    loaded, _ = await load(tmp_path)
    assert loaded.records == us[2:] and text_of(loaded.updates) == "0,1,2,3,4,"


async def test_a_failed_open_then_a_failed_snapshot_hide_no_log(tmp_path, monkeypatch):
    us = edits(3)
    store = FileStore(tmp_path)
    log = store.log("doc")
    await log.load()
    first = log.append(us[0])
    real_open = os.open

    def refuse_next_log(path: Any, flags: int, *args: Any) -> int:
        if str(path).endswith(".1.log"):
            raise OSError(errno.ENOSPC, "No space left on device (test)")
        return real_open(path, flags, *args)

    with monkeypatch.context() as patch:
        patch.setattr(os, "open", refuse_next_log)
        with pytest.raises(OSError):
            await log.compact(state_of(us[:1]), first)
    second = log.append(us[1])
    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", _raise_enospc)
        with pytest.raises(OSError):
            await log.compact(state_of(us[:2]), second)
    log.append(us[2])
    await store.close()
    assert files(tmp_path) == ["doc.0.log", "doc.1.log"]
    loaded, _ = await load(tmp_path)
    assert text_of(loaded.updates) == "0,1,2,"


async def test_a_cancelled_compaction_still_finishes(tmp_path, monkeypatch):
    us = edits(3)
    store = FileStore(tmp_path)
    log = store.log("doc")
    await log.load()
    first = log.append(us[0])
    opening = hold(monkeypatch, "open", lambda p, flags, *a: str(p).endswith(".1.log"))
    compacting = asyncio.ensure_future(log.compact(state_of(us[:1]), first))
    await opening.reached()
    compacting.cancel()
    opening.release.set()
    with pytest.raises(asyncio.CancelledError):
        await compacting
    second = log.append(us[1])
    await log.compact(state_of(us[:2]), second)  # waits for the first, then runs
    log.append(us[2])
    await store.close()
    assert files(tmp_path) == ["doc.2.log", "doc.snap"]
    assert (await load(tmp_path))[0].records == us[2:]


def _raise_enospc(*args: Any) -> None:
    raise OSError(errno.ENOSPC, "No space left on device (test)")


# -- repair on load -------------------------------------------------------------


@pytest.mark.parametrize("garbage", [b"", b"\x00", b"\xff" * 37])
async def test_a_torn_last_record_is_dropped_at_every_offset(tmp_path, garbage, caplog):
    us = edits(3)
    full = fmt.encode_log("doc", us)
    last_record = len(fmt.encode_record(us[-1]))
    for cut in range(len(full) - last_record, len(full)):
        if (full[:cut] + garbage).startswith(full):
            continue  # the "garbage" happens to complete the record
        root = tmp_path / f"cut{cut}"
        root.mkdir()
        (root / "doc.0.log").write_bytes(full[:cut] + garbage)
        loaded, store = await load(root)
        assert text_of(loaded.updates) == "0,1,", cut
        assert (root / "doc.0.log").stat().st_size == len(full) - last_record
        if not garbage:  # a crash while appending: truncated, not damage
            assert store.damaged == 0 and files(root) == ["doc.0.log"]
        await write(root, "doc", us[-1:])  # appending after recovery stays readable
        assert text_of((await load(root))[0].updates) == "0,1,2,"
    assert "torn tail" in caplog.text


async def test_a_corrupt_last_record_is_a_torn_tail(tmp_path, caplog):
    await write(tmp_path, "doc", edits(3))
    path = tmp_path / "doc.0.log"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # inside the last payload
    path.write_bytes(bytes(data))
    loaded, store = await load(tmp_path)
    assert text_of(loaded.updates) == "0,1," and store.damaged == 0
    assert "torn tail" in caplog.text and files(tmp_path) == ["doc.0.log"]


async def test_a_log_cut_inside_its_header_starts_afresh(tmp_path):
    full = fmt.encode_log_header("doc")
    for cut in range(len(full)):
        root = tmp_path / f"cut{cut}"
        root.mkdir()
        (root / "doc.0.log").write_bytes(full[:cut])
        loaded, store = await load(root)
        assert loaded.updates == [] and store.damaged == 0 and files(root) == ["doc.0.log"]
        await write(root, "doc", edits(1))
        assert text_of((await load(root))[0].updates) == "0,"


async def test_damage_mid_log_keeps_the_records_after_it(tmp_path, caplog):
    us = edits(5)
    await write(tmp_path, "doc", us)
    path = tmp_path / "doc.0.log"
    frames = [fmt.encode_record(r) for r in us]
    damaged = bytearray(path.read_bytes())
    damaged[HEADER + len(frames[0]) + len(frames[1]) + 12] ^= 0x55  # inside record 2
    path.write_bytes(bytes(damaged))
    with caplog.at_level(logging.ERROR, "collab.store"):
        loaded, store = await load(tmp_path)
    assert loaded.records == us[:2] + us[3:] and loaded.dropped_bytes == len(frames[2])
    assert store.damaged == 1
    assert f"{path} is damaged: {len(frames[2])} bytes lost" in caplog.text
    assert (tmp_path / "doc.0.log.corrupt").read_bytes() == damaged
    assert path.read_bytes() == fmt.encode_log("doc", us[:2] + us[3:])
    loaded, store = await load(tmp_path)  # repaired for good
    assert loaded.records == us[:2] + us[3:] and store.damaged == 0
    path.write_bytes(bytes(damaged))
    await load(tmp_path)
    assert (tmp_path / "doc.0.log.corrupt.1").read_bytes() == damaged


async def test_a_log_without_a_header_is_set_aside_and_later_logs_still_load(tmp_path):
    us = edits(2)
    (tmp_path / "doc.0.log").write_bytes(b"not a log at all")
    (tmp_path / "doc.1.log").write_bytes(fmt.encode_log("doc", us))
    for damaged in (1, 0):  # the second load finds it repaired, with no gap
        loaded, store = await load(tmp_path)
        assert loaded.records == us and store.damaged == damaged
    assert (tmp_path / "doc.0.log.corrupt").read_bytes() == b"not a log at all"


async def test_a_corrupt_snapshot_is_moved_aside_and_the_document_refused(tmp_path, caplog):
    snap = tmp_path / "doc.snap"
    snap.write_bytes(fmt.encode_snapshot("doc", 0, state_of(edits(2)))[:-1] + b"X")
    with pytest.raises(DocumentUnavailable):
        await load(tmp_path)
    assert files(tmp_path) == ["doc.snap.corrupt"] and "corrupt" in caplog.text
    with pytest.raises(DocumentUnavailable):  # still refused: never served empty
        await load(tmp_path)
    info = await FileStore(tmp_path).info("doc")
    assert info is not None and info.size == len(snap.with_suffix(".snap.corrupt").read_bytes())


@pytest.mark.parametrize(
    "path, data",
    [
        ("doc.0.log", fmt.encode_log_header("doc", 3) + b"\x00" * 20),
        ("doc.snap", b"CSNP\x02" + fmt.encode_snapshot("doc", 0, b"\x00\x00")[5:]),
    ],
)
async def test_a_newer_format_is_refused_and_left_alone(tmp_path, path, data):
    (tmp_path / path).write_bytes(data)
    store = FileStore(tmp_path)
    with pytest.raises(fmt.NewerFormat, match=r"written by a newer collab .*; upgrade collab"):
        await store.log("doc").load()
    assert files(tmp_path) == [path] and (tmp_path / path).read_bytes() == data
    assert store.damaged == 0
    await store.close()


# -- the v1 format ----------------------------------------------------------------


async def test_v1_data_loads_and_new_records_are_v2(tmp_path):
    root = tmp_path / "data"
    shutil.copytree(FIXTURES / "v1-data", root)
    expected = json.loads((FIXTURES / "v1-data.json").read_text())
    store = FileStore(root)
    assert [d.name for d in await store.list()] == sorted(expected)
    added = {}
    for name, text in expected.items():
        log = store.log(name)
        loaded = await log.load()
        doc = _doc_of(loaded.updates)
        assert str(doc.get("content", type=Text)) == text
        before = doc.get_state()
        content = doc.get("content", type=Text)
        content.insert(len(content), " +v2")
        added[name] = Record(doc.get_update(before), 1234.5, "bob")
        log.append(added[name])
        await log.close()
    await store.close()
    assert (root / "notes.1.log").read_bytes() == (FIXTURES / "v1-data/notes.1.log").read_bytes()
    assert (root / "notes.2.log").read_bytes()[4] == 2  # a new log, never v2 records in v1
    for name, text in expected.items():
        loaded, _ = await load(root, name)
        assert loaded.records[-1] == added[name]
        assert text_of(loaded.updates) == text + " +v2"


# -- append, durability -------------------------------------------------------------


async def test_group_commit_holds_durable_until_the_fsync_returns(tmp_path, monkeypatch):
    store = FileStore(tmp_path, fsync="always")
    log = store.log("doc")
    await log.load()
    fsync = hold(monkeypatch, "fsync", lambda fd: stat.S_ISREG(os.fstat(fd).st_mode))
    us = edits(40)
    first = [log.append(r) for r in us[:20]]
    flushes = [asyncio.ensure_future(log.flush(c)) for c in first]
    await fsync.reached()
    later = [log.append(r) for r in us[20:]]  # while the fsync runs
    assert not any(log.durable(c) for c in first + later)
    fsync.release.set()
    await asyncio.gather(*flushes)
    assert all(log.durable(c) for c in first) and not log.durable(later[0])
    assert fsync.calls == 1  # one fsync for all twenty
    await log.flush()
    assert all(log.durable(c) for c in later) and fsync.calls == 2
    await store.close()


async def test_a_failed_snapshot_still_fsyncs_the_old_log(tmp_path, monkeypatch):
    store = FileStore(tmp_path, fsync="always")
    log = store.log("doc")
    await log.load()
    us = edits(2)
    upto = log.append(us[0])
    pending = log.append(us[1])
    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", _raise_enospc)
        with pytest.raises(OSError):
            await log.compact(state_of(us[:1]), upto)
    assert log.durable(pending)
    await store.close()


async def test_the_interval_syncer_fsyncs_without_a_flush(tmp_path, monkeypatch):
    store = FileStore(tmp_path, fsync="interval", fsync_interval=0.01)
    log = store.log("doc")
    await log.load()
    fsync = hold(monkeypatch, "fsync", lambda fd: stat.S_ISREG(os.fstat(fd).st_mode))
    fsync.release.set()
    cursor = log.append(edits(1)[0])
    assert log.durable(cursor)  # written to the OS is enough with "interval"
    await fsync.reached()
    await store.close()
    assert fsync.calls >= 1 and store._syncer is None


async def test_a_failed_fsync_refuses_later_appends(tmp_path, monkeypatch):
    store = FileStore(tmp_path, fsync="always")
    log = store.log("doc")
    await log.load()
    cursor = log.append(edits(1)[0])
    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", lambda fd: _raise_enospc())
        with pytest.raises(OSError):
            await log.flush(cursor)
    assert not log.durable(cursor)
    with pytest.raises(OSError):
        log.append(edits(2)[1])
    with pytest.raises(OSError):
        await log.close()
    await store.close()


async def test_a_short_write_is_undone_and_raised_as_enospc(tmp_path, monkeypatch):
    store = FileStore(tmp_path)
    log = store.log("doc")
    await log.load()
    us = edits(2)
    log.append(us[0])
    size = os.path.getsize(tmp_path / "doc.0.log")
    real_write = os.write
    with monkeypatch.context() as patch:
        patch.setattr(os, "write", lambda fd, data: real_write(fd, data[: len(data) // 2]))
        with pytest.raises(OSError) as caught:
            log.append(us[1])
    assert caught.value.errno == errno.ENOSPC
    assert os.path.getsize(tmp_path / "doc.0.log") == size
    log.append(us[1])
    await store.close()
    assert (await load(tmp_path))[0].records == us


# -- the directory --------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["..", "../../etc/passwd", "/abs", "a/../../b", "%2e%2e", ".", "~h00", "x" * 200]
)
async def test_no_name_leaves_the_data_directory(tmp_path, name):
    root = tmp_path / "data"
    store = FileStore(root)
    log = store.log(name)
    await log.load()
    upto = log.append(edits(1)[0])
    await log.compact(state_of(edits(1)), upto)
    log.append(edits(2)[1])
    entries = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert all(p.parent == root for p in entries), entries
    assert [d.name for d in await store.list()] == [name]
    await store.close()


async def test_info_and_list_recover_hashed_names_from_headers(tmp_path):
    long = "é" * 100  # too long for a file name: stored under a hash
    await write(tmp_path, long, edits(1))
    assert [p.startswith("~h") for p in files(tmp_path)] == [True]
    store = FileStore(tmp_path)
    assert [d.name for d in await store.list()] == [long]
    info = await store.info(long)
    assert info is not None and info.size == sum(p.stat().st_size for p in tmp_path.iterdir())


async def test_opening_a_document_scans_no_directory(tmp_path, monkeypatch):
    for name in ("a", "b", "doc"):
        await write(tmp_path, name, edits(2))

    def no_scan(*args: Any) -> Any:
        raise AssertionError("scanned the directory")

    for owner, attr in ((Path, "iterdir"), (Path, "glob"), (os, "listdir"), (os, "scandir")):
        monkeypatch.setattr(owner, attr, no_scan)
    loaded, _ = await load(tmp_path)
    assert text_of(loaded.updates) == "0,1,"


async def test_a_read_only_store_never_writes(tmp_path):
    us = edits(3)
    await write(tmp_path, "doc", us[:1])
    with open(tmp_path / "doc.0.log", "ab") as f:
        f.write(b"\x01\x02")  # a torn tail
    damaged = bytearray(fmt.encode_log("mid", us))
    damaged[HEADER + 12] ^= 0x55  # damage inside the first record
    (tmp_path / "mid.0.log").write_bytes(bytes(damaged))
    (tmp_path / "bad.snap").write_bytes(b"CSNP\x01 not a snapshot")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    store = FileStore(tmp_path, read_only=True)
    log = store.log("doc")
    assert text_of((await log.load()).updates) == "0,"
    with pytest.raises(OSError):
        log.append(us[1])
    assert (await store.log("mid").load()).records == us[1:]
    with pytest.raises(DocumentUnavailable):
        await store.log("bad").load()
    await store.close()
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    loaded, _ = await load(tmp_path / "missing", read_only=True)
    assert loaded.updates == [] and not (tmp_path / "missing").exists()


async def test_a_second_writer_is_locked_out(tmp_path):
    first = FileStore(tmp_path)
    first.acquire()
    with pytest.raises(StoreLocked), FileStore(tmp_path).lock():
        pass
    await first.close()  # releases the lock
    with FileStore(tmp_path).lock():
        pass


async def test_one_log_per_document_at_a_time(tmp_path):
    store = FileStore(tmp_path)
    await store.log("doc").load()
    with pytest.raises(RuntimeError):
        await store.log("doc").load()
    await store.close()
    await store.log("doc").load()  # closing the store closed it
    await store.close()


async def test_delete_removes_the_snapshot_and_every_log(tmp_path):
    store = FileStore(tmp_path)
    log = store.log("doc")
    await log.load()
    upto = log.append(edits(1)[0])
    await log.compact(state_of(edits(1)), upto)
    log.append(edits(2)[1])
    (tmp_path / "doc.0.log").write_bytes(fmt.encode_log("doc", edits(1)))  # a leftover
    assert await log.delete()
    assert files(tmp_path) == ["doc.gen"]  # its generation stays: the tombstone
    assert not await store.log("doc").delete()
    await store.close()
