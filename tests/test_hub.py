"""The hub's rules, without sockets: recording peers, a store you can hold.

Covers collab/server/hub.py, registry.py, document.py and session.py: what a
peer is sent and when, write before relay, single-flight loading, unloading,
eviction on a failed write, limits, delete and shutdown.
"""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import weakref

import pytest

from collab import Config, Hub
from collab.core import protocol
from collab.core.errors import (
    DocumentDeleted,
    DocumentUnavailable,
    Overloaded,
    PolicyViolation,
    ShuttingDown,
)
from collab.core.protocol import AwarenessEntry, AwarenessUpdate, SyncStep1, SyncStep2
from collab.server.document import Phase
from tests.peers import Editor, HeldStore, RecordingPeer, settle
from tests.yclient import eventually


@pytest.fixture
def config() -> Config:
    return Config(data_dir=None, idle_timeout=0.2)


@pytest.fixture
def store() -> HeldStore:
    return HeldStore()


@pytest.fixture
def hub(config: Config, store: HeldStore, io_loop):
    hub = Hub(config, store=store)
    yield hub
    io_loop.run_sync(lambda: hub.close(timeout=1))


def presence(client_id: int, clock: int, state: str = '{"user":{"name":"a"}}') -> bytes:
    payload = protocol.encode_awareness([AwarenessEntry(client_id, clock, state)])
    return protocol.encode(AwarenessUpdate(payload))


async def test_a_newcomer_is_sent_step1_then_the_present_awareness(hub):
    first = await hub.join("doc", RecordingPeer("a"))
    first.receive(presence(7, 1))
    newcomer = RecordingPeer("b")
    await hub.join("doc", newcomer)
    assert isinstance(protocol.decode(newcomer.frames[0]), SyncStep1)
    (shown,) = newcomer.awareness()
    assert [e.client_id for e in protocol.decode_awareness(shown.payload)] == [7]


async def test_an_update_reaches_every_other_peer_once_and_not_its_sender(hub):
    peers = [RecordingPeer(str(i)) for i in range(3)]
    sessions = [await hub.join("doc", p) for p in peers]
    sessions[0].receive(Editor().type("hi"))
    await settle()
    assert [len(p.updates()) for p in peers] == [0, 1, 1]
    assert peers[1].text == peers[2].text == "hi"


async def test_step1_is_answered_with_what_the_client_lacks(hub):
    writer = await hub.join("doc", RecordingPeer())
    writer.receive(Editor().type("stored"))
    reader = RecordingPeer()
    session = await hub.join("doc", reader)
    session.receive(protocol.encode(SyncStep1(b"\x00")))
    assert isinstance(protocol.decode(reader.frames[-1]), SyncStep2)
    assert reader.text == "stored"


async def test_no_peer_is_sent_an_update_before_its_flush_returns(hub, store):
    """Write before relay with a store that must flush first (``fsync=always``, Redis)."""
    store.hold = True
    writer = await hub.join("doc", RecordingPeer("writer"))
    reader = RecordingPeer("reader")
    await hub.join("doc", reader)
    log = store.logs["doc"]
    early: list[int] = []
    reader.on_send = lambda data: early.append(log.appended - log.durable_upto)

    editor = Editor()
    for chars in "abc":
        writer.receive(editor.type(chars))
    writer.receive(presence(1, 1))  # behind the held updates, in order
    await settle()
    assert reader.updates() == [] and reader.awareness() == []  # all held

    store.release_flush()
    await eventually(lambda: reader.text == "abc")
    await eventually(lambda: len(reader.awareness()) == 1)
    assert early == [0] * len(early) and early  # each frame left after its flush
    assert store.flushes == 1  # one flush covered the three updates


async def test_a_failed_flush_closes_the_writers_and_relays_nothing(hub, store):
    store.hold = True
    writer_peer, reader = RecordingPeer("writer"), RecordingPeer("reader")
    writer = await hub.join("doc", writer_peer)
    await hub.join("doc", reader)
    writer.receive(Editor().type("lost"))
    store.fail_flush = True
    store.release_flush()
    await eventually(lambda: writer_peer.closed is not None)
    assert writer_peer.closed == (1011, "could not persist the update")
    assert reader.updates() == []


async def test_concurrent_first_joins_load_the_document_once(hub, store):
    store.loading.clear()
    peers = [RecordingPeer(str(i)) for i in range(20)]
    joining = [asyncio.ensure_future(hub.join("shared", p)) for p in peers]
    await eventually(lambda: store.loads == 1)
    assert all(p.frames == [] for p in peers)  # nothing is sent before the load ends
    store.loading.set()
    await asyncio.gather(*joining)
    assert store.loads == 1 and all(p.frames for p in peers)


async def test_an_idle_document_is_compacted_unloaded_and_freed(hub, store):
    peer = RecordingPeer()
    session = await hub.join("idle", peer)
    session.receive(Editor().type("persist me"))
    doc = hub.document("idle")
    assert doc is not None
    room_ref, doc_ref = weakref.ref(doc.room), weakref.ref(doc.room.doc)
    session.leave()
    await eventually(lambda: hub.document("idle") is None)
    del doc, session
    gc.collect()
    assert room_ref() is None and doc_ref() is None
    assert store.compactions == 1 and store.docs["idle"].records == []  # all in the snapshot
    assert await hub.get_text("idle") == "persist me"
    assert store.loads == 2


async def test_a_return_within_the_idle_timeout_keeps_the_document_loaded(config, store):
    hub = Hub(Config(data_dir=None, idle_timeout=5), store=store)
    first = await hub.join("stay", RecordingPeer())
    doc = hub.document("stay")
    first.leave()
    await hub.join("stay", RecordingPeer())
    assert hub.document("stay") is doc and store.loads == 1
    await hub.close(timeout=1)


async def test_an_update_the_store_cannot_take_is_never_served(hub, store, caplog):
    writer_peer, watcher = RecordingPeer("writer"), RecordingPeer("watcher")
    writer = await hub.join("full", writer_peer)
    await hub.join("full", watcher)
    editor = Editor()
    writer.receive(editor.type("kept "))
    await eventually(lambda: watcher.text == "kept ")

    store.disk_full = True
    with pytest.raises(DocumentUnavailable):
        writer.receive(editor.type("unwritable"))
    await settle()
    assert writer_peer.closed == watcher.closed == (1011, "could not persist the update")
    assert watcher.text == "kept " and "cannot append" in caplog.text
    await eventually(lambda: "full" not in hub.registry.documents)

    store.disk_full = False
    fresh = RecordingPeer("fresh")
    await hub.join("full", fresh)
    assert fresh.step1().state_vector != b"\x00"
    assert await hub.get_text("full") == "kept "  # reloaded: the unlogged update is gone


async def test_per_document_connection_cap(store):
    hub = Hub(Config(data_dir=None, max_connections_per_doc=2), store=store)
    await hub.join("doc", RecordingPeer())
    await hub.join("doc", RecordingPeer())
    with pytest.raises(PolicyViolation, match="limit 2"):
        await hub.join("doc", RecordingPeer())
    await hub.close(timeout=1)


async def test_document_cap_unloads_idle_documents_first_then_refuses(store):
    hub = Hub(Config(data_dir=None, max_documents=2, idle_timeout=60), store=store)
    await hub.join("a", RecordingPeer())
    await hub.set_text("idle", "x")  # loaded, nobody connected
    await hub.join("b", RecordingPeer())  # unloads "idle" to make room
    assert sorted(hub.registry.documents) == ["a", "b"]
    with pytest.raises(Overloaded):
        await hub.join("c", RecordingPeer())
    await hub.close(timeout=1)


async def test_delete_closes_every_peer_with_4404_and_forgets_the_document(hub, store):
    peer = RecordingPeer()
    session = await hub.join("doomed", peer)
    session.receive(Editor().type("bye"))
    assert await hub.delete("doomed")
    assert peer.closed == (DocumentDeleted.close_code, "document deleted")
    with pytest.raises(DocumentDeleted):
        session.receive(Editor().type("late"))
    assert "doomed" not in store.docs and await hub.get_text("doomed") is None
    assert not await hub.delete("doomed")


async def test_set_text_is_a_live_edit_for_connected_peers(hub):
    peer = RecordingPeer()
    await hub.join("doc", peer)
    await hub.set_text("doc", "from the API")
    await eventually(lambda: peer.text == "from the API")
    assert (await hub.list())[0].clients == 1


async def test_shutdown_closes_with_1001_saves_and_refuses_newcomers(config, store):
    hub = Hub(config, store=store)
    peer = RecordingPeer()
    session = await hub.join("doc", peer)
    session.receive(Editor().type("saved at exit"))
    await hub.close(timeout=0.1)
    assert peer.closed == (ShuttingDown.close_code, "server shutting down")
    assert store.compactions == 1 and hub.document("doc") is None
    with pytest.raises(ShuttingDown):
        await hub.join("doc", RecordingPeer())


async def test_records_name_their_author_and_time(store):
    hub = Hub(Config(data_dir=None), store=store)
    hub.clock = lambda: 1234.5
    from collab.core.auth import Permission

    ann = await hub.join("doc", RecordingPeer(), Permission(user="ann"))
    anonymous = await hub.join("doc", RecordingPeer(), id="c42")
    ann.receive(Editor(1).type("a"))
    anonymous.receive(Editor(2).type("b"))
    records = store.docs["doc"].records
    assert [(r.author, r.time) for r in records] == [("ann", 1234.5), ("c42", 1234.5)]
    await hub.close(timeout=1)


async def test_a_document_moves_through_its_phases(hub):
    session = await hub.join("doc", RecordingPeer())
    doc = hub.document("doc")
    assert doc is not None and doc.phase is Phase.OPEN
    session.leave()
    await eventually(lambda: doc.phase is Phase.CLOSED)


async def test_with_fsync_always_no_peer_is_sent_an_update_before_its_fsync_returns(
    tmp_path, monkeypatch
):
    """The real file store: its group commit's fsync, held in its thread, holds the relay."""
    gate, started, returned = threading.Event(), [], []
    real_fsync = os.fsync

    def held_fsync(fd: int) -> None:
        started.append(fd)
        assert gate.wait(10)
        real_fsync(fd)
        returned.append(fd)

    monkeypatch.setattr(os, "fsync", held_fsync)
    hub = Hub(Config(data_dir=str(tmp_path / "data"), fsync="always"))
    writer = await hub.join("doc", RecordingPeer("writer"))
    reader = RecordingPeer("reader")
    await hub.join("doc", reader)
    sent_after: list[int] = []
    reader.on_send = lambda data: sent_after.append(len(returned))

    editor = Editor()
    for chars in "abc":
        writer.receive(editor.type(chars))
    await eventually(lambda: started)  # the group commit is in its fsync, held
    await settle()
    assert reader.updates() == [] and returned == []

    gate.set()
    await eventually(lambda: reader.text == "abc")
    assert sent_after and min(sent_after) >= 1  # every frame left after an fsync returned
    await hub.close(timeout=1)
