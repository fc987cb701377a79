"""Snapshots and logs on disk: round trips, torn tails, corrupt snapshots, compaction."""

from __future__ import annotations

import os

import pytest
from pycrdt import Doc, Text

from collab.core.errors import DocumentUnavailable
from collab.storage import FileStore, MemoryStore, StoreLocked


def updates(n: int) -> list[bytes]:
    doc = Doc(client_id=1)
    text = doc.get("content", type=Text)
    out: list[bytes] = []
    doc.observe(lambda e: out.append(e.update))
    for i in range(n):
        text.insert(len(text), f"{i},")
    return out


def text_of(stored_updates: list[bytes]) -> str:
    doc = Doc()
    for u in stored_updates:
        doc.apply_update(u)
    return str(doc.get("content", type=Text))


def test_unknown_document_loads_empty(tmp_path):
    store = FileStore(tmp_path)
    assert store.load("nope").updates == [] and store.info("nope") is None


def test_appended_updates_load_back_in_order(tmp_path):
    store = FileStore(tmp_path)
    log = store.open_log("doc", 0)
    for u in updates(5):
        log.append(u)
    log.sync()
    log.close()
    assert text_of(FileStore(tmp_path).load("doc").updates) == "0,1,2,3,4,"


def test_snapshot_replaces_covered_logs(tmp_path):
    store = FileStore(tmp_path)
    us = updates(4)
    log0 = store.open_log("doc", 0)
    for u in us[:3]:
        log0.append(u)
    log1 = store.open_log("doc", 1)  # compaction opens the next log first
    log1.append(us[3])
    store.save_snapshot("doc", _state(us[:3]), 1)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != ".lock") == [
        "doc.1.log",
        "doc.snap",
    ]
    assert text_of(store.load("doc").updates) == "0,1,2,3,"


def test_crash_between_new_log_and_snapshot_replays_both_logs(tmp_path):
    store = FileStore(tmp_path)
    us = updates(3)
    log0 = store.open_log("doc", 0)
    log0.append(us[0])
    log0.append(us[1])
    store.open_log("doc", 1).append(us[2])  # snapshot never written
    stored = store.load("doc")
    assert text_of(stored.updates) == "0,1,2," and stored.seq == 1


@pytest.mark.parametrize("garbage", [b"", b"\x00", b"\xff" * 37])
def test_torn_last_record_is_dropped_at_every_offset(tmp_path, garbage):
    us = updates(3)
    reference = FileStore(tmp_path / "ref")
    log = reference.open_log("doc", 0)
    for u in us:
        log.append(u)
    full = (tmp_path / "ref" / "doc.0.log").read_bytes()
    last_record = 8 + len(us[-1])
    for cut in range(len(full) - last_record, len(full)):
        if (full[:cut] + garbage).startswith(full):
            continue  # the "garbage" happens to complete the record
        root = tmp_path / f"cut{cut}"
        root.mkdir()
        (root / "doc.0.log").write_bytes(full[:cut] + garbage)
        stored = FileStore(root).load("doc")
        assert text_of(stored.updates) == "0,1,", cut
        assert (root / "doc.0.log").stat().st_size == len(full) - last_record
        # appending after recovery stays readable
        FileStore(root).open_log("doc", 0).append(us[-1])
        assert text_of(FileStore(root).load("doc").updates) == "0,1,2,"


def test_corrupt_record_in_the_middle_drops_it_and_the_rest(tmp_path, caplog):
    store = FileStore(tmp_path)
    log = store.open_log("doc", 0)
    for u in updates(3):
        log.append(u)
    path = tmp_path / "doc.0.log"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # flip a byte inside the last payload
    path.write_bytes(bytes(data))
    assert text_of(store.load("doc").updates) == "0,1,"
    assert "torn or corrupt tail" in caplog.text


def test_corrupt_snapshot_is_moved_aside_and_the_document_refused(tmp_path, caplog):
    store = FileStore(tmp_path)
    store.save_snapshot("doc", _state(updates(2)), 0)
    snap = tmp_path / "doc.snap"
    snap.write_bytes(snap.read_bytes()[:-1] + b"X")
    with pytest.raises(DocumentUnavailable):
        store.load("doc")
    assert (tmp_path / "doc.snap.corrupt").exists() and not snap.exists()
    assert "corrupt" in caplog.text
    with pytest.raises(DocumentUnavailable):  # still refused: never served empty
        store.load("doc")


@pytest.mark.parametrize(
    "name", ["..", "../../etc/passwd", "/abs", "a/../../b", "%2e%2e", ".", "~h00", "x" * 200]
)
def test_no_name_leaves_the_data_directory(tmp_path, name):
    root = tmp_path / "data"
    store = FileStore(root)
    store.open_log(name, 0).append(updates(1)[0])
    store.save_snapshot(name, _state(updates(1)), 1)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert all(p.parent == root for p in files), files
    assert [d.name for d in store.list()] == [name]


def test_read_only_store_never_truncates(tmp_path):
    log = FileStore(tmp_path).open_log("doc", 0)
    log.append(updates(1)[0])
    path = tmp_path / "doc.0.log"
    with open(path, "ab") as f:
        f.write(b"\x01\x02")
    size = path.stat().st_size
    FileStore(tmp_path, read_only=True).load("doc")
    assert path.stat().st_size == size


def test_second_writer_is_locked_out(tmp_path):
    first = FileStore(tmp_path)
    first.acquire()
    with pytest.raises(StoreLocked), FileStore(tmp_path).lock():
        pass
    first.release()
    with FileStore(tmp_path).lock():
        pass


def test_delete_removes_every_file(tmp_path):
    store = FileStore(tmp_path)
    store.open_log("doc", 0).append(updates(1)[0])
    store.save_snapshot("doc", _state(updates(1)), 1)
    assert store.delete("doc")
    assert [p.name for p in tmp_path.iterdir()] == []
    assert not store.delete("doc")


def test_memory_store_behaves_like_the_file_store():
    store = MemoryStore()
    us = updates(3)
    store.open_log("doc", 0).append(us[0])
    store.open_log("doc", 1).append(us[1])
    store.save_snapshot("doc", _state(us[:1]), 1)
    assert text_of(store.load("doc").updates) == "0,1,"
    assert [d.name for d in store.list()] == ["doc"]
    assert store.delete("doc") and store.load("doc").updates == []


def _state(us: list[bytes]) -> bytes:
    doc = Doc()
    for u in us:
        doc.apply_update(u)
    return doc.get_update()


def test_log_size_tracks_the_file(tmp_path):
    log = FileStore(tmp_path).open_log("doc", 0)
    log.append(b"abc")
    assert log.size == os.path.getsize(tmp_path / "doc.0.log")


def test_logs_left_below_the_snapshot_are_removed_on_load(tmp_path):
    store = FileStore(tmp_path)
    us = updates(2)
    store.open_log("doc", 0).append(us[0])
    store.save_snapshot("doc", _state(us[:1]), 1)
    FileStore(tmp_path).open_log("doc", 0).append(us[0])  # as if its removal was cut short
    store.open_log("doc", 1).append(us[1])
    assert text_of(store.load("doc").updates) == "0,1,"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doc.1.log", "doc.snap"]
