"""Backup, restore, export and import: consistent copies beside a running server.

The live test streams tokens into a real server process while ``collab backup``
runs, with compaction every few KB so snapshots are replaced and logs removed
under the copy; every token an observer had been sent before the backup
started must come back from the restored directory.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from pycrdt import Array, Doc, Map, Text

from collab.core.room import Room
from collab.storage import backup
from collab.storage import records as fmt
from collab.storage.base import Record
from collab.storage.file import FileStore
from tests.server import ROOT, ServerProcess, env_without_collab
from tests.wait import eventually
from tests.yclient import YClient

TOKEN = re.compile(r"w\d+;")


def collab(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "collab", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env_without_collab(),
    )


async def in_thread(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def text_of(copy: backup.DocumentCopy) -> str:
    room = Room(copy.name)
    room.restore(copy.updates)
    return room.text


def write(root: Path, name: str, texts: list[str], compact_after: int | None = None) -> None:
    """Log one record per text (appended to ``content``); compact after the first few."""

    async def go() -> None:
        store = FileStore(root)
        log = store.log(name)
        await log.load()
        doc: Doc = Doc()
        text = doc.get("content", type=Text)
        for i, piece in enumerate(texts):
            before = doc.get_state()
            text += piece
            cursor = log.append(Record(doc.get_update(before)))
            if compact_after is not None and i + 1 == compact_after:
                await log.compact(doc.get_update(), cursor)
        await store.close()

    asyncio.run(go())


# -- the consistent read, step by step ---------------------------------------------------------


def test_a_compaction_between_snapshot_and_logs_is_read_again(tmp_path, monkeypatch):
    write(tmp_path, "d", ["a;", "b;", "c;", "d;", "e;"], compact_after=3)
    (seq, _name) = fmt.parse_snapshot_head((tmp_path / "d.snap").read_bytes())
    assert [p.name for p in sorted(tmp_path.glob("d.*.log"))] == [f"d.{seq}.log"]
    full = Room("d")
    full.restore(backup.read_document(tmp_path, "d").updates)
    real = backup._read_snapshot
    calls = []

    def read_then_compact(path: Path):
        found = real(path)
        calls.append(path)
        if len(calls) == 1:  # what a server's compaction does right after we read it
            (tmp_path / f"d.{seq + 1}.log").write_bytes(fmt.encode_log_header("d"))
            tmp = tmp_path / "d.snap.tmp"
            tmp.write_bytes(fmt.encode_snapshot("d", seq + 1, full.doc.get_update()))
            os.replace(tmp, tmp_path / "d.snap")
            (tmp_path / f"d.{seq}.log").unlink()
        return found

    monkeypatch.setattr(backup, "_read_snapshot", read_then_compact)
    copy = backup.read_document(tmp_path, "d")
    assert copy is not None and len(calls) >= 2
    assert text_of(copy) == "a;b;c;d;e;"
    assert copy.log_seq == seq + 1


def test_a_record_being_written_is_left_out_and_the_rest_kept(tmp_path):
    write(tmp_path, "d", ["a;", "b;", "c;"])
    log = tmp_path / "d.0.log"
    whole = fmt.encode_record(Record(b"\x01\x02\x03\x04", 1.0, "x"))
    with open(log, "ab") as f:
        f.write(whole[: len(whole) // 2])  # a server appending right now
    copy = backup.read_document(tmp_path, "d")
    assert copy is not None and text_of(copy) == "a;b;c;"
    assert copy.dropped == len(whole) // 2
    ((_, kept),) = copy.logs
    header = fmt.parse_log_header(kept)
    parsed = fmt.parse_records(kept, header.start, header.version)
    assert (len(parsed.records), parsed.torn, parsed.lost) == (3, 0, 0)


def test_backup_refuses_a_destination_that_holds_anything(tmp_path):
    write(tmp_path / "data", "d", ["a;"])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    result = collab("backup", tmp_path / "full", "--data-dir", tmp_path / "data")
    assert result.returncode == 1 and "not an empty directory" in result.stderr
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]
    (tmp_path / "empty").mkdir()
    result = collab("backup", tmp_path / "empty", "--data-dir", tmp_path / "data")
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "empty" / backup.MANIFEST).read_text())
    assert [d["name"] for d in manifest["documents"]] == ["d"]
    assert not list(tmp_path.glob(".empty.tmp-*"))


def test_restore_refuses_existing_documents_unless_forced_and_a_running_server(tmp_path):
    write(tmp_path / "old", "d", ["backed up;"])
    assert collab("backup", tmp_path / "bk", "--data-dir", tmp_path / "old").returncode == 0
    write(tmp_path / "data", "d", ["newer;"])
    write(tmp_path / "data", "other", ["untouched;"])
    refused = collab("restore", tmp_path / "bk", "--data-dir", tmp_path / "data")
    assert refused.returncode == 1
    assert "already has 1 of these documents ('d')" in refused.stderr
    assert "--force" in refused.stderr
    assert collab("export", "d", "--data-dir", tmp_path / "data").stdout == "newer;"
    store = FileStore(tmp_path / "data")
    with store.lock():
        locked = collab("restore", tmp_path / "bk", "--data-dir", tmp_path / "data", "--force")
    assert locked.returncode == 1 and "in use by a running server" in locked.stderr
    forced = collab("restore", tmp_path / "bk", "--data-dir", tmp_path / "data", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "replaced (--force): 'd'" in forced.stdout
    assert collab("export", "d", "--data-dir", tmp_path / "data").stdout == "backed up;"
    assert collab("export", "other", "--data-dir", tmp_path / "data").stdout == "untouched;"


# -- a live server under write load ------------------------------------------------------------


async def stream(writer: YClient, stop: asyncio.Event) -> int:
    """Append unique tokens as fast as the socket takes them until ``stop``."""
    i = 0
    while not stop.is_set() and writer.connected:
        writer.text.insert(len(writer.text), f"w{i};")
        i += 1
        await asyncio.sleep(0.001 if i % 4 == 0 else 0)  # pacing: let the observer read
    return i


@pytest.mark.timeout(seconds=120)
async def test_backup_under_write_load_restores_every_acknowledged_update(tmp_path):
    options = ("--compact-bytes", "2048", "--rate-messages", "0", "--rate-bytes", "0")
    server = ServerProcess(tmp_path / "data", *options)
    await in_thread(server.start)
    url = f"{server.ws}/load"
    writer = await YClient(url).connect()
    observer = await YClient(url).connect()
    stop = asyncio.Event()
    task = asyncio.ensure_future(stream(writer, stop))
    copies: list[tuple[set[str], backup.DocumentCopy | None]] = []
    try:
        for round_ in range(12):  # in-process copies: they start the moment asked
            await eventually(lambda n=round_: len(str(observer.text)) > 1000 * (n + 1), 30)
            acknowledged = set(TOKEN.findall(str(observer.text)))  # relayed, so logged
            copy = await in_thread(backup.read_document, server.data_dir, "load")
            copies.append((acknowledged, copy))
        await eventually(lambda: len(str(observer.text)) > 20_000, 30)
        acknowledged = set(TOKEN.findall(str(observer.text)))
        result = await in_thread(collab, "backup", tmp_path / "bk", "--data-dir", server.data_dir)
        assert result.returncode == 0, result.stderr
        stop.set()
        written = await task
        await eventually(lambda: len(TOKEN.findall(str(observer.text))) == written)
        assert len(list(server.data_dir.glob("*.snap"))) == 1, "no compaction ran"
    finally:
        stop.set()
        await writer.close()
        await observer.close()
        await in_thread(server.stop)

    for before, copy in copies:  # each copy holds what was acknowledged before it began
        assert copy is not None
        kept = set(TOKEN.findall(text_of(copy)))
        assert before <= kept, sorted(before - kept)[:5]
    # the command the whole way: restore into a fresh directory and serve it
    result = collab("restore", tmp_path / "bk", "--data-dir", tmp_path / "fresh")
    assert result.returncode == 0, result.stderr
    assert "restored 1 documents" in result.stdout
    assert f"audit: restore 'load' by {getpass.getuser()} from local" in result.stderr
    restored = ServerProcess(tmp_path / "fresh")
    await in_thread(restored.start)
    try:
        status, body = await in_thread(restored.get, "/api/docs/load/text")
    finally:
        await in_thread(restored.stop)
    assert status == 200
    tokens = TOKEN.findall(body.decode())
    assert acknowledged <= set(tokens), sorted(acknowledged - set(tokens))[:5]
    assert body.decode() == "".join(f"w{i};" for i in range(len(tokens)))  # a prefix, in order


# -- export and import -------------------------------------------------------------------------


@pytest.mark.timeout(seconds=60)
async def test_export_ydoc_and_import_keep_every_shared_type(tmp_path):
    server = ServerProcess(tmp_path / "data")
    await in_thread(server.start)
    try:
        client = await YClient(f"{server.ws}/rich").connect()
        settings = client.doc.get("settings", type=Map)
        items = client.doc.get("items", type=Array)
        with client.doc.transaction():
            client.text += "the text ✓"
            settings["theme"] = "dark"
            settings["nested"] = Map({"depth": 2})
            items.extend(["one", "two"])
        await client.roundtrip()
        await client.close()
        ydoc = tmp_path / "rich.ydoc"
        result = await in_thread(
            collab, "export", "rich", "--format", "ydoc", "-o", ydoc, "--data-dir", server.data_dir
        )
        assert result.returncode == 0, result.stderr  # beside the running server
        text = await in_thread(collab, "export", "rich", "--data-dir", server.data_dir)
        assert text.stdout == "the text ✓"
        busy = await in_thread(
            collab, "import", ydoc, "--name", "copy", "--data-dir", server.data_dir
        )
        assert busy.returncode == 1 and "in use by a running server" in busy.stderr
    finally:
        await in_thread(server.stop)

    result = collab("import", ydoc, "--name", "copy", "--data-dir", tmp_path / "other")
    assert result.returncode == 0, result.stderr
    again = collab("import", ydoc, "--name", "copy", "--data-dir", tmp_path / "other")
    assert again.returncode == 1 and "--merge" in again.stderr
    bad = tmp_path / "not.ydoc"
    bad.write_bytes(b"\xff\xff\xff")
    refused = collab("import", bad, "--name", "x", "--data-dir", tmp_path / "other")
    assert refused.returncode == 1 and "not a Yjs update" in refused.stderr

    other = ServerProcess(tmp_path / "other")
    await in_thread(other.start)
    try:
        fresh = await YClient(f"{other.ws}/copy").connect()
        assert str(fresh.text) == "the text ✓"
        settings = fresh.doc.get("settings", type=Map)
        assert settings["theme"] == "dark" and settings["nested"]["depth"] == 2
        assert list(fresh.doc.get("items", type=Array)) == ["one", "two"]
        await fresh.close()
        with urllib.request.urlopen(f"{other.url}/api/docs") as r:
            assert [d["name"] for d in json.loads(r.read())] == ["copy"]
    finally:
        await in_thread(other.stop)
