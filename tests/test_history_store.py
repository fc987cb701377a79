"""Version stores: the byte format (golden bytes), the file store's repairs, the contract."""

from __future__ import annotations

import asyncio
import zlib
from pathlib import Path

import pytest

from collab.core.history import Author, VersionMeta
from collab.storage import history_format as fmt
from collab.storage.history import HistoryStore, MemoryHistory
from collab.storage.history_file import FileHistory

META = VersionMeta(
    1, 2.5, "named", "Draft", 1.0, 2.0, 3, 5, 5, 0, (Author("ann", "Ann", "#123456"),)
)
META_JSON = (
    b'{"added":5,"authors":[{"color":"#123456","name":"Ann","user":"ann"}],"chars":5,'
    b'"created":2.5,"first_change":1.0,"id":1,"label":"Draft","last_change":2.0,'
    b'"reason":"named","removed":0,"restored_from":null,"stored_bytes":0,"updates":3}'
)


def test_version_file_golden_bytes():
    zstate, ztext = b"ZS", b"ZT"  # payloads are opaque to the framing
    body = len(META_JSON).to_bytes(4, "little") + META_JSON + b"\x02\x00\x00\x00ZSZT"
    golden = b"CVER\x01" + len(body).to_bytes(4, "little") + zlib.crc32(body).to_bytes(4, "little")
    assert fmt.encode_version(META, zstate, ztext) == golden + body
    data = fmt.encode_version(META, *fmt.zip_payload(b"\x01\x02state", "héllo"))
    assert fmt.parse_version(data) == (META, b"\x01\x02state", "héllo")
    assert fmt.parse_version_meta(data) == META
    for bad in (data[:-1], data[:4] + b"\x02" + data[5:], data[:20] + b"X" + data[21:], b""):
        with pytest.raises(fmt.Damaged):
            fmt.parse_version(bad)


def test_index_golden_bytes_and_ops():
    header = fmt.encode_index_header("a/b")
    assert header == b"CHIX\x01\x03\x00a/b"
    op = fmt.encode_op({"op": "label", "id": 1, "label": None})
    payload = b'{"id":1,"label":null,"op":"label"}'
    assert (
        op
        == len(payload).to_bytes(4, "little") + zlib.crc32(payload).to_bytes(4, "little") + payload
    )
    data = (
        header
        + fmt.encode_op({"op": "version", "meta": META.to_json()})
        + fmt.encode_op({"op": "version", "meta": {**META.to_json(), "id": 2, "label": None}})
        + fmt.encode_op({"op": "label", "id": 2, "label": "Two"})
        + fmt.encode_op({"op": "drop", "ids": [1]})
    )
    content = fmt.parse_index(data)
    assert content.name == "a/b" and content.end == len(data) and content.records == 4
    assert list(content.metas) == [2] and content.metas[2].label == "Two"
    assert content.dropped == {1} and content.top == 2


def test_a_torn_index_keeps_its_valid_prefix_at_every_cut():
    records = [
        fmt.encode_op({"op": "version", "meta": {**META.to_json(), "id": i}}) for i in (1, 2, 3)
    ]
    header = fmt.encode_index_header("doc")
    data = header + b"".join(records)
    bounds = [len(header) + sum(len(r) for r in records[:k]) for k in range(4)]
    for cut in range(len(header), len(data) + 1):
        content = fmt.parse_index(data[:cut])
        whole = max(k for k, b in enumerate(bounds) if b <= cut)
        assert content.end == bounds[whole]
        assert sorted(content.metas) == list(range(1, whole + 1))
    for cut in range(len(header)):
        with pytest.raises(fmt.Damaged):
            fmt.parse_index(data[:cut])


# -- the stores' contract -------------------------------------------------------------


@pytest.fixture(params=["file", "memory"])
def store(request, tmp_path) -> HistoryStore:
    return FileHistory(tmp_path) if request.param == "file" else MemoryHistory()


def run(coro):
    return asyncio.run(coro)


def test_store_contract(store):
    async def go():
        first = await store.save("doc", VersionMeta(0, 1.0, "quiet"), b"S1", "one")
        second = await store.save("doc", VersionMeta(0, 2.0, "quiet"), b"S2", "two 😀")
        assert (first.id, second.id) == (1, 2) and first.stored_bytes > 0
        assert await store.read("doc", 2) == (b"S2", "two 😀")
        assert await store.read("doc", 3) is None
        assert await store.read("other", 1) is None
        labelled = await store.label("doc", 1, "First")
        assert labelled is not None and labelled.label == "First"
        assert await store.label("doc", 9, "x") is None
        await store.drop("doc", [1])
        assert [m.id for m in await store.versions("doc")] == [2]
        third = await store.save("doc", VersionMeta(0, 3.0, "quiet"), b"S3", "three")
        assert third.id == 3  # never reused
        await store.delete("doc")
        assert await store.versions("doc") == []
        assert await store.read("doc", 3) is None
        await store.close()

    run(go())


def test_file_store_survives_a_reopen_and_repairs(tmp_path: Path):
    async def write():
        store = FileHistory(tmp_path)
        for i in range(1, 4):
            await store.save("doc", VersionMeta(0, float(i), "quiet"), b"S%d" % i, f"text {i}")
        await store.label("doc", 2, "Two")
        await store.close()

    run(write())
    folder = tmp_path / "history" / "doc"
    index = folder / "index"
    whole = index.read_bytes()
    index.write_bytes(whole[:-5])  # a torn last record (the label)
    (folder / "000004.ver.tmp").write_bytes(b"half a version")  # a write cut short
    (folder / "000003.ver").write_bytes(b"CVER\x01garbage")  # damaged on disk, indexed

    async def reopen():
        store = FileHistory(tmp_path)
        metas = await store.versions("doc")
        assert [m.id for m in metas] == [1, 2, 3]
        assert metas[1].label is None  # the torn label record was cut off
        assert await store.read("doc", 3) is None and store.damaged == 1
        assert await store.read("doc", 1) == (b"S1", "text 1")
        await store.close()

    run(reopen())
    assert not (folder / "000004.ver.tmp").exists()
    assert len(index.read_bytes()) < len(whole)


def test_file_store_indexes_a_version_file_the_index_lost(tmp_path: Path):
    async def write():
        store = FileHistory(tmp_path)
        await store.save("doc", VersionMeta(0, 1.0, "quiet"), b"S1", "one")
        await store.save("doc", VersionMeta(0, 2.0, "named", "Two"), b"S2", "two")
        await store.close()

    run(write())
    index = Path(tmp_path / "history" / "doc" / "index")
    data = index.read_bytes()
    whole = fmt.parse_index(data)
    assert whole.records == 2
    second = whole.end - len(fmt.encode_op({"op": "version", "meta": whole.metas[2].to_json()}))
    index.write_bytes(data[: second + 10])  # the crash came while record 2 was written

    async def reopen():
        store = FileHistory(tmp_path)
        metas = await store.versions("doc")
        assert [(m.id, m.label) for m in metas] == [(1, None), (2, "Two")]
        assert await store.read("doc", 2) == (b"S2", "two")
        third = await store.save("doc", VersionMeta(0, 3.0, "quiet"), b"S3", "three")
        assert third.id == 3
        await store.close()

    run(reopen())


def test_deleting_removes_the_folder_and_a_crash_midway_leaves_nothing_readable(tmp_path: Path):
    async def go():
        store = FileHistory(tmp_path)
        await store.save("a/b", VersionMeta(0, 1.0, "quiet"), b"S", "x")
        await store.delete("a/b")
        assert list((tmp_path / "history").iterdir()) == []
        await store.close()

    run(go())
    aside = tmp_path / "history" / "doc.deleted"  # a delete the process did not finish
    aside.mkdir()
    (aside / "000001.ver").write_bytes(b"old")

    async def later():
        store = FileHistory(tmp_path)
        assert await store.versions("doc") == []
        await store.close()

    run(later())
    assert not aside.exists()


def test_the_index_is_rewritten_when_mostly_dead(tmp_path: Path):
    async def go():
        store = FileHistory(tmp_path)
        for i in range(80):
            await store.save("doc", VersionMeta(0, float(i), "quiet"), b"S", str(i))
            if i >= 2:
                await store.drop("doc", [i])  # keep only the first and the newest
        metas = await store.versions("doc")
        assert [m.id for m in metas] == [1, 80]
        await store.close()
        reopened = FileHistory(tmp_path)
        assert [m.id for m in await reopened.versions("doc")] == [1, 80]
        assert (await reopened.save("doc", VersionMeta(0, 99.0, "quiet"), b"S", "z")).id == 81
        await reopened.close()

    run(go())
    assert fmt.parse_index((tmp_path / "history" / "doc" / "index").read_bytes()).records < 80
