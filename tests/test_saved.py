"""Saved acknowledgements (message 102) and document generations (message 103).

A real server in-process (pytest-tornasync) on a store whose flushes the test
holds (``tests/heldstore.py``), real WebSocket clients (``tests/yclient.py``)
and a stock y-websocket client under Node (``tests/jsclient.py``), which must
never receive either message; and two hubs on one real redis-server (cluster
mode), where "saved" means Redis acknowledged it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import tornado.ioloop

from collab import Config, Hub
from collab.core import protocol
from collab.core.errors import DocumentDeleted
from collab.core.protocol import AwarenessEntry, AwarenessUpdate, Generation, MessageType, Save
from collab.core.room import Room
from collab.storage.redis.store import RedisStore
from tests.crdt import text_of
from tests.heldstore import HeldFileStore
from tests.jsclient import JsPeer, JsPeers
from tests.peers import Editor, RecordingPeer
from tests.wait import eventually
from tests.yclient import YClient

SAVE_7 = protocol.encode(Save(b"\x07"))


@pytest.fixture
def store(tmp_path: Path, io_loop: tornado.ioloop.IOLoop) -> Iterator[HeldFileStore]:
    held = HeldFileStore(tmp_path / "data")
    yield held
    io_loop.run_sync(held.close, timeout=10)


@pytest.fixture
def hub(config, store, io_loop: tornado.ioloop.IOLoop) -> Iterator[Hub]:
    hub = Hub(config, store=store)  # type: ignore[arg-type]  # a Store by its protocol
    yield hub
    store.release()  # nothing may wait for the gate while the hub closes
    io_loop.run_sync(hub.close, timeout=15)


async def text_is(peer: JsPeer, text: str) -> bool:
    return bool((await peer.state())["text"] == text)


def of_type(client: YClient, kind: MessageType) -> list[bytes]:
    return [frame for frame in client.received if frame[0] == kind]


def barrier(hub: Hub, name: str, client_id: int) -> bytes:
    """Send every client of ``name`` an awareness frame straight from the server.

    Frames on one socket arrive in order: once a client has it, it has whatever
    the server had sent it before (so a reply that was not held would be there).
    """
    doc = hub.document(name)
    assert doc is not None
    state = json.dumps({"user": {"name": "Barrier", "color": "#123456"}})
    frame = protocol.encode(
        AwarenessUpdate(protocol.encode_awareness([AwarenessEntry(client_id, 1, state)]))
    )
    for peer in doc.sessions:
        peer.send(frame)
    return frame


async def test_saved_is_answered_only_once_the_edit_is_durable(hub, store, ws_url):
    writer = await YClient(ws_url("doc")).connect()
    other = await YClient(ws_url("doc")).connect()
    store.hold()
    writer.text.insert(0, "hello")
    writer.send(SAVE_7)
    writer.set_awareness(writer.doc.client_id, 1, '{"x": 1}')  # after the request...
    doc = hub.document("doc")
    assert doc is not None
    # ...so once the server holds this awareness state, it has read the request too.
    await eventually(lambda: writer.doc.client_id in doc.room.awareness.states)
    assert store.waiting > 0  # the flush of "hello" is held at the gate
    barrier(hub, "doc", 4242)
    await eventually(lambda: 4242 in writer.awareness)
    assert of_type(writer, MessageType.SAVE) == []  # not saved yet: not answered
    assert str(other.text) == ""  # and nobody was relayed it either
    store.release()
    await eventually(lambda: of_type(writer, MessageType.SAVE) == [SAVE_7])
    assert await store.stored_text("doc") == "hello"
    await eventually(lambda: str(other.text) == "hello")


async def test_each_request_is_answered_in_order_and_nothing_else_changes(hub, store, ws_url):
    writer = await YClient(ws_url("doc")).connect()
    tokens = [bytes([n]) for n in range(1, 6)]
    for n, token in enumerate(tokens):
        writer.text.insert(len(writer.text), f"{n},")
        writer.send(protocol.encode(Save(token)))
    writer.send(protocol.encode(Save(b"")))  # nothing new since: answered too
    await eventually(lambda: len(of_type(writer, MessageType.SAVE)) == 6)
    answers = [protocol.decode(frame) for frame in of_type(writer, MessageType.SAVE)]
    assert answers == [Save(token) for token in [*tokens, b""]]
    assert await store.stored_text("doc") == "0,1,2,3,4,"


def test_a_read_only_peer_is_never_told_saved_and_its_edit_is_not_taken():
    room = Room("doc")
    assert room.receive("ro", SAVE_7, writable=False).reply == []
    assert room.receive("rw", SAVE_7).reply == [SAVE_7]  # echoed as received


async def test_the_server_tells_its_generation_and_refuses_a_copy_of_another(
    hub, store, ws_url, http_client, port
):
    ask = protocol.encode(Generation(""))
    first = await YClient(ws_url("doc")).connect(first=[ask])
    await eventually(lambda: of_type(first, MessageType.GENERATION))
    generation = protocol.decode(of_type(first, MessageType.GENERATION)[0])
    assert generation == Generation("0")
    first.text.insert(0, "old text")
    first.send(SAVE_7)
    await eventually(lambda: of_type(first, MessageType.SAVE))
    await first.close()

    # The same copy comes back, with its generation: it belongs, it syncs.
    again = YClient(ws_url("doc"))
    again.doc.apply_update(first.doc.get_update())
    await again.connect(first=[protocol.encode(generation)])
    assert again.connected and str(again.text) == "old text"
    await again.close()

    deleted = await http_client.fetch(
        f"http://127.0.0.1:{port}/api/docs/doc", method="DELETE", raise_error=False
    )
    assert deleted.code == 204
    # A browser's offline copy of the deleted document, told first which one it is.
    stale = YClient(ws_url("doc"))
    stale.doc.apply_update(first.doc.get_update())
    stale.text.insert(len(stale.text), " and an offline edit")
    await stale.connect(wait_synced=False, first=[protocol.encode(generation)])
    await asyncio.wait_for(stale.closed.wait(), 10)
    assert stale.close_code == 4404
    fresh = await YClient(ws_url("doc")).connect(first=[ask])
    await eventually(lambda: of_type(fresh, MessageType.GENERATION))
    assert protocol.decode(of_type(fresh, MessageType.GENERATION)[0]) != generation
    assert str(fresh.text) == ""  # not brought back
    assert await store.stored_text("doc") == ""


async def test_a_stock_client_never_receives_either_message(hub, ws_url):
    url = ws_url("").rstrip("/")
    async with JsPeers() as js:
        stock = await js.peer(url, "mixed")
        page = await YClient(ws_url("mixed")).connect(first=[protocol.encode(Generation(""))])
        page.text.insert(0, "from the page")
        page.send(SAVE_7)
        await eventually(lambda: of_type(page, MessageType.SAVE))
        await eventually(lambda: text_is(stock, "from the page"))
        await stock.request("insert", index=13, text=" and the stock client")
        await eventually(lambda: str(page.text).endswith(" and the stock client"))
        page.send(SAVE_7)
        await eventually(lambda: len(of_type(page, MessageType.SAVE)) == 2)
        state = await stock.state()
        assert state["text"] == "from the page and the stock client"
        assert set(state["types"]) <= {"0", "1", "2", "3"}, state["types"]
        assert "0" in state["types"] and state["errors"] == []


async def test_in_cluster_mode_saved_means_redis_has_it_and_generations_are_shared(
    redis_server, redis_prefix
):
    def hub_on_redis() -> Hub:
        return Hub(Config(data_dir=None, redis_url=redis_server.url, redis_prefix=redis_prefix))

    a, b = hub_on_redis(), hub_on_redis()
    await a.start()
    await b.start()
    try:
        writer = RecordingPeer("writer")
        session = await a.join("doc", writer)
        session.receive(protocol.encode(Generation("")))
        generation = writer.messages(Generation)[-1]
        session.receive(Editor().type("in redis"))
        session.receive(SAVE_7)
        # Appended, not yet acknowledged by Redis (that takes a round trip): no answer.
        assert writer.messages(Save) == []
        await eventually(lambda: writer.messages(Save) == [Save(b"\x07")])
        reader = RedisStore(redis_server.url, prefix=redis_prefix)  # what Redis holds now
        try:
            assert text_of((await reader.log("doc").load()).updates) == "in redis"
        finally:
            await reader.close()

        # The other process knows the generation; after a delete on either, both refuse it.
        elsewhere = RecordingPeer("elsewhere")
        other = await b.join("doc", elsewhere)
        other.receive(protocol.encode(Generation("")))
        assert elsewhere.messages(Generation)[-1] == generation
        assert await a.delete("doc")
        stale = RecordingPeer("stale")
        with pytest.raises(DocumentDeleted):
            (await b.join("doc", stale)).receive(protocol.encode(generation))
    finally:
        await a.close(timeout=1)
        await b.close(timeout=1)
