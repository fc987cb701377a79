"""Cluster mode in one test process: two hubs, one real redis-server.

Each hub is what one ``collab serve --redis-url`` process runs; they share
nothing but Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from collab import Config, Hub
from collab.core import protocol
from collab.core.errors import DocumentDeleted
from collab.core.protocol import AwarenessUpdate
from collab.storage.base import Record
from collab.storage.redis.store import RedisLog, RedisStore
from tests.peers import Editor, RecordingPeer
from tests.redis_server import RedisServer
from tests.wait import eventually


@asynccontextmanager
async def hubs(
    server: RedisServer, prefix: str, count: int = 2, **options: object
) -> AsyncIterator[list[Hub]]:
    made = []
    for _ in range(count):
        config = Config(data_dir=None, redis_url=server.url, redis_prefix=prefix, **options)  # type: ignore[arg-type]
        hub = Hub(config)
        await hub.start()
        made.append(hub)
    try:
        yield made
    finally:
        for hub in made:
            await hub.close(timeout=1)


def store_of(hub: Hub) -> RedisStore:
    assert isinstance(hub.store, RedisStore)
    return hub.store


async def test_edits_on_one_process_reach_clients_of_the_other(redis_server, redis_prefix):
    async with hubs(redis_server, redis_prefix) as (a, b):
        on_a, on_b = RecordingPeer("a"), RecordingPeer("b")
        writer_a = await a.join("doc", on_a)
        writer_b = await b.join("doc", on_b)
        editor_a, editor_b = Editor(), Editor()
        writer_a.receive(editor_a.type("from a. "))
        await eventually(lambda: on_b.text == "from a. ")
        writer_b.receive(editor_b.type("from b."))  # concurrently, into its own empty copy
        await eventually(lambda: on_a.text == "from b.")
        text = await b.get_text("doc")
        assert text in ("from a. from b.", "from b.from a. ")  # both, in the CRDT's order
        assert await a.get_text("doc") == text


async def test_nothing_is_relayed_before_redis_acknowledged_it(redis_server, redis_prefix):
    async with hubs(redis_server, redis_prefix) as (a, b):
        writer, local, remote = RecordingPeer("w"), RecordingPeer("local"), RecordingPeer("remote")
        session = await a.join("doc", writer)
        await a.join("doc", local)
        await b.join("doc", remote)
        client = redis_server.client()
        client.execute_command("CLIENT", "PAUSE", "700", "WRITE")  # Redis holds every write
        try:
            session.receive(Editor().type("held"))
            await asyncio.sleep(0.3)  # well inside the pause: nothing may arrive anywhere
            assert local.text == "" and remote.text == ""
            assert store_of(a).writer.task is not None  # the batch waits for Redis
        finally:
            client.close()
        await eventually(lambda: local.text == "held" and remote.text == "held", timeout=5)


async def test_a_delete_on_one_process_closes_clients_everywhere_for_good(
    redis_server, redis_prefix
):
    async with hubs(redis_server, redis_prefix) as (a, b):
        on_a, on_b = RecordingPeer("a"), RecordingPeer("b")
        writer_a = await a.join("doc", on_a)
        writer_b = await b.join("doc", on_b)
        editor = Editor()
        writer_a.receive(editor.type("doomed"))
        await eventually(lambda: on_b.text == "doomed")
        other = RedisStore(redis_server.url, prefix=redis_prefix)  # a third process ...
        stale = other.log("doc")  # ... that loaded the document before the delete
        await stale.load()
        assert await a.delete("doc")
        await eventually(lambda: _code(on_a) == _code(on_b) == 4404)
        with pytest.raises(DocumentDeleted):
            writer_b.receive(Editor().type("ghost"))
        stale.append(Record(Editor().type("ghost"), 0.0, "stale"))
        with pytest.raises(DocumentDeleted):  # fenced by the generation
            await stale.flush()
        await other.close()
        assert await a.get_text("doc") is None and await b.get_text("doc") is None
        assert "doc" not in [d.name for d in await a.list()]
        fresh = RecordingPeer("fresh")  # the name can be used again, from empty
        session = await b.join("doc", fresh)
        session.receive(Editor().type("new"))
        await eventually(lambda: a.get_text("doc"), timeout=5)
        assert await a.get_text("doc") == "new"


async def test_presence_crosses_processes_and_a_joiner_sees_everyone(redis_server, redis_prefix):
    def states(peer: RecordingPeer) -> set[int]:
        seen: dict[int, bool] = {}
        for message in peer.awareness():
            for entry in protocol.decode_awareness(message.payload):
                seen[entry.client_id] = not entry.removed
        return {cid for cid, present in seen.items() if present}

    async with hubs(redis_server, redis_prefix) as (a, b):
        ann, bob = RecordingPeer("ann"), RecordingPeer("bob")
        session_ann = await a.join("doc", ann)
        await b.join("doc", bob)
        await eventually(lambda: "doc" in [n for n in _channels(b)])
        frame = protocol.encode(AwarenessUpdate(_entry(7, 1, '{"user":{"name":"Ann"}}')))
        session_ann.receive(frame)
        await eventually(lambda: states(bob) == {7})
        late = RecordingPeer("late")  # joins b after ann's state was set on a
        await b.join("doc", late)
        await eventually(lambda: states(late) == {7})
        session_ann.leave()  # a graceful leave removes the state everywhere
        await eventually(lambda: states(bob) == set() and states(late) == set())


async def test_client_counts_are_cluster_wide(redis_server, redis_prefix):
    async with hubs(redis_server, redis_prefix) as (a, b):
        await a.join("doc", RecordingPeer())
        await b.join("doc", RecordingPeer())
        await b.join("doc", RecordingPeer())
        session = await a.join("doc", RecordingPeer())
        session.receive(Editor().type("x"))

        async def counted() -> bool:
            return [d.clients for d in await a.list() if d.name == "doc"] == [4]

        await eventually(counted)


async def test_a_reader_behind_a_trim_merges_the_snapshot(redis_server, redis_prefix):
    async with hubs(redis_server, redis_prefix, redis_retention=0.0) as (a, b):
        on_b = RecordingPeer("b")
        writer = await a.join("doc", RecordingPeer("a"))
        await b.join("doc", on_b)
        editor = Editor()
        writer.receive(editor.type("one "))
        await eventually(lambda: on_b.text == "one ")
        reader = store_of(b).reader
        assert reader.task is not None
        reader.task.cancel()  # b stops reading ...
        await asyncio.gather(reader.task, return_exceptions=True)
        writer.receive(editor.type("two "))
        doc = a.document("doc")
        assert doc is not None
        await eventually(lambda: doc.log.durable(doc.cursor))
        await eventually(lambda: _caught_up(a, "doc"))
        await doc.compact(force=True)  # ... while a compacts and trims everything
        assert redis_server.client().xlen(f"{redis_prefix}:{{doc}}:log") == 1  # the marker
        reader.task = store_of(b).spawn(reader.run())  # b reads again: only the marker
        await eventually(lambda: on_b.text == "one two ")


def _code(peer: RecordingPeer) -> int | None:
    return peer.closed[0] if peer.closed is not None else None


def _caught_up(hub: Hub, name: str) -> bool:
    doc = hub.document(name)
    assert doc is not None
    log = doc.log
    assert isinstance(log, RedisLog)  # its reader has read past its own last entry
    return bool(log.ids) and _key(max(log.ids.values(), key=_key)) <= _key(log.position)


def _key(raw: str) -> tuple[int, int]:
    ms, _, seq = raw.partition("-")
    return int(ms), int(seq)


def _channels(hub: Hub) -> list[str]:
    store = store_of(hub)
    return [c.decode().split("{")[1].split("}")[0] for c in store.presence.listeners]


def _entry(client_id: int, clock: int, state: str) -> bytes:
    from collab.core.protocol import AwarenessEntry, encode_awareness

    return encode_awareness([AwarenessEntry(client_id, clock, state)])
