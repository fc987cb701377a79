"""No room can stall the others: large loads run in the CRDT thread, loop lag is measured.

Covers collab/server/offload.py, lag.py and the hub's use of them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest
from prometheus_client import generate_latest
from pycrdt import Doc, Text

from collab import Config, Hub
from collab.core.room import Room
from collab.server import offload
from collab.storage.base import Record
from collab.storage.memory import MemoryStore
from tests.crdt import valid_update
from tests.peers import Editor, RecordingPeer
from tests.wait import eventually

BIG = "0123456789abcdef" * (1 << 17)  # 2 MiB of text: past the 1 MiB "heavy" threshold


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def hub(store: MemoryStore, io_loop):
    hub = Hub(Config(data_dir=None), store=store)
    io_loop.run_sync(hub.start)
    yield hub
    io_loop.run_sync(lambda: hub.close(timeout=1))


async def test_a_large_document_loads_off_the_loop_while_other_rooms_relay(
    hub, store, monkeypatch, caplog
):
    log = store.log("big")
    log.append(Record(valid_update(BIG), 0.0, "test"))
    await log.flush()
    started, release = threading.Event(), threading.Event()
    held = {"threads": [], "timed_out": False}
    restore = Room.restore

    def held_restore(room: Room, updates, snapshot=None):  # waits until the test saw a relay
        if room.name != "big":
            return restore(room, updates, snapshot)
        held["threads"].append(threading.current_thread().name)
        started.set()
        held["timed_out"] = not release.wait(timeout=3)  # on the loop, nothing could release it
        restore(room, updates, snapshot)

    monkeypatch.setattr(Room, "restore", held_restore)
    hub.registry.crdt.slow_seconds = 0.0  # every load gets its log line
    writer, reader = RecordingPeer("w"), RecordingPeer("r")
    session = await hub.join("other", writer)
    await hub.join("other", reader)

    joining = asyncio.ensure_future(hub.join("big", RecordingPeer("late")))
    await eventually(started.is_set)
    with caplog.at_level(logging.WARNING, logger="collab.slow"):
        session.receive(Editor(client_id=5).type("still relayed"))
        await eventually(
            lambda: str(reader.doc.get("content", type=Text)) == "still relayed", timeout=2
        )
        release.set()
        await joining

    assert held == {"threads": ["collab-crdt_0"], "timed_out": False}
    assert (await hub.registry.open("big")).room.text == BIG
    assert any("slow load of 'big'" in r.getMessage() for r in caplog.records)


async def test_a_small_document_loads_on_the_loop(hub, store, monkeypatch):
    log = store.log("small")
    log.append(Record(valid_update("hello"), 0.0, "test"))
    await log.flush()
    threads = []
    restore = Room.restore

    def spy(room: Room, updates, snapshot=None):
        threads.append(threading.current_thread().name)
        restore(room, updates, snapshot)

    monkeypatch.setattr(Room, "restore", spy)
    await hub.join("small", RecordingPeer())
    assert threads == [threading.current_thread().name]


def _lag_samples(hub: Hub, le: str) -> float:
    for line in generate_latest(hub.metrics.registry).decode().splitlines():
        if line.startswith(f'collab_loop_lag_seconds_bucket{{le="{le}"}}'):
            return float(line.split()[-1])
    raise AssertionError("collab_loop_lag_seconds not exported")


async def test_a_blocked_loop_shows_in_the_loop_lag_metric(hub):
    await eventually(lambda: _lag_samples(hub, "+Inf") >= 1)  # it samples by itself
    assert _lag_samples(hub, "0.25") == _lag_samples(hub, "+Inf")  # an idle loop is on time
    time.sleep(0.6)  # hold the loop past a whole interval, as a huge apply on it would
    await eventually(lambda: _lag_samples(hub, "+Inf") > _lag_samples(hub, "0.25"))
    assert hub.lag.worst >= 0.25


async def test_a_huge_update_is_applied_off_the_loop_and_later_messages_wait_behind_it(
    hub, monkeypatch
):
    started, release = threading.Event(), threading.Event()
    held = {"threads": [], "timed_out": False}
    receive = Room.receive

    def held_receive(room: Room, peer, data: bytes, *, writable: bool = True):
        if len(data) >= hub.registry.crdt.heavy_bytes:
            held["threads"].append(threading.current_thread().name)
            started.set()
            held["timed_out"] = not release.wait(timeout=3)
        return receive(room, peer, data, writable=writable)

    monkeypatch.setattr(Room, "receive", held_receive)
    editor = Editor(client_id=9)
    huge, tail = editor.type(BIG), editor.type(" and a tail")
    writer, watcher = RecordingPeer("w"), RecordingPeer("watch")
    big = await hub.join("big", writer)
    await hub.join("big", watcher)
    elsewhere, reader = await hub.join("other", RecordingPeer("a")), RecordingPeer("b")
    await hub.join("other", reader)

    big.receive(huge)
    big.receive(tail)  # must wait behind the huge one, not overtake it
    text = asyncio.ensure_future(hub.get_text("big"))  # waits until the room is quiet
    await eventually(started.is_set)
    elsewhere.receive(Editor(client_id=5).type("still relayed"))
    seen = reader.doc.get("content", type=Text)
    await eventually(lambda: str(seen) == "still relayed", timeout=2)
    assert not text.done()
    release.set()

    assert await text == BIG + " and a tail"
    watched = watcher.doc.get("content", type=Text)
    await eventually(lambda: str(watched) == BIG + " and a tail")
    assert held == {"threads": ["collab-crdt_0"], "timed_out": False}


async def test_a_large_snapshot_is_encoded_off_the_loop(hub, store, monkeypatch):
    log = store.log("big")
    log.append(Record(valid_update(BIG), 0.0, "test"))
    await log.flush()
    writer = RecordingPeer("w")
    session = await hub.join("big", writer)
    doc = hub.document("big")
    threads = _encodings_here(monkeypatch)
    compacting = asyncio.ensure_future(doc.compact(force=True))
    await eventually(lambda: doc._busy is not None or compacting.done())
    session.receive(Editor(client_id=5).type("meanwhile"))  # waits behind the encoding
    await compacting
    assert threads == ["collab-crdt_0"]
    assert await hub.get_text("big") == "meanwhile" + BIG


async def _merging_document_edited(hub: Hub, store: MemoryStore, monkeypatch, text: str):
    """ "big" stored as a snapshot of BIG, loaded as a document that merges its
    snapshots in another process (1 MiB is large enough here), then ``text`` typed."""
    monkeypatch.setattr(offload, "MERGE_BYTES", 1 << 20)
    log = store.log("big")
    update = valid_update(BIG)
    await log.compact(update, log.append(Record(update, 0.0, "test")))
    session = await hub.join("big", RecordingPeer("w"))
    session.receive(Editor(client_id=5).type(text))
    doc = hub.document("big")
    await eventually(lambda: doc.unsnapshotted == 1)
    return doc


def _encodings_here(monkeypatch) -> list[str]:
    """Threads of this process that encode a whole large document from now on."""
    threads: list[str] = []
    get_update = Doc.get_update

    def spy(self, state=None):
        update = get_update(self, state) if state is not None else get_update(self)
        if len(update) >= len(BIG):
            threads.append(threading.current_thread().name)
        return update

    monkeypatch.setattr(Doc, "get_update", spy)
    return threads


async def test_a_large_document_merges_its_snapshot_in_another_process(hub, store, monkeypatch):
    doc = await _merging_document_edited(hub, store, monkeypatch, "since the snapshot ")
    encoded = _encodings_here(monkeypatch)
    await doc.compact()
    assert encoded == []  # nowhere in this process: merged in the other one
    assert doc.unsnapshotted == 0
    monkeypatch.undo()
    state = (await store.log("big").load()).state
    assert state is not None
    check: Doc = Doc()
    check.apply_update(state)
    assert str(check.get("content", type=Text)) == "since the snapshot " + BIG


async def test_a_merged_snapshot_that_lacks_an_update_is_encoded_here_instead(
    hub, store, monkeypatch, caplog
):
    doc = await _merging_document_edited(hub, store, monkeypatch, "not in the list ")
    doc._since.clear()  # as if a path had changed the room without noting the update
    encoded = _encodings_here(monkeypatch)
    with caplog.at_level(logging.ERROR, logger="collab.hub"):
        await doc.compact()
    assert encoded == ["collab-crdt_0"]
    assert "lacks updates" in caplog.text
    monkeypatch.undo()
    state = (await store.log("big").load()).state
    check: Doc = Doc()
    check.apply_update(state)
    assert str(check.get("content", type=Text)) == "not in the list " + BIG


async def test_a_fresh_client_of_a_changed_large_document_gets_its_snapshot_and_what_came_since(
    hub, store, monkeypatch
):
    from collab.core import protocol
    from collab.core.protocol import SyncStep1, SyncStep2, Update

    await _merging_document_edited(hub, store, monkeypatch, "typed since ")
    encoded = _encodings_here(monkeypatch)
    fresh = RecordingPeer("fresh")
    session = await hub.join("big", fresh)
    session.receive(protocol.encode(SyncStep1(b"\x00")))
    await eventually(lambda: str(fresh.doc.get("content", type=Text)) == "typed since " + BIG)
    assert encoded == []  # the document was not encoded for it
    kinds = [type(protocol.decode(f)) for f in fresh.frames if f[0] == 0 and f[1] != 0]
    # (the writer's update may also reach it as a relay, before its step 2)
    assert kinds[-2:] == [SyncStep2, Update]  # the snapshot, then the one update since
