"""What every store promises (``collab.storage.base``), checked against each of them.

Written against the ``Store``/``DocumentLog`` protocols only: a new backend
joins by adding a ``Backend`` to ``BACKENDS``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from pycrdt import Doc, Text

from collab.storage.base import Record, Store
from collab.storage.file import FileStore
from collab.storage.memory import MemoryStore
from collab.storage.redis.store import RedisStore
from tests.crdt import text_of


@dataclass
class Backend:
    """Makes stores that see the same data, and can make compaction fail."""

    make: Callable[[], Store]
    break_compaction: Callable[[pytest.MonkeyPatch], None] | None = None

    @asynccontextmanager
    async def open(self) -> AsyncIterator[Store]:
        store = self.make()
        try:
            yield store
        finally:
            await store.close()


def _fail_snapshot_replace(monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.replace

    def replace(src: str | Path, dst: str | Path) -> None:
        if str(dst).endswith(".snap"):
            raise OSError(28, "No space left on device (test)")
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)


def _memory() -> Callable[[], Store]:
    store = MemoryStore()
    return lambda: store


BACKENDS = {
    "memory": lambda root: Backend(_memory()),
    **{
        f"file-{policy}": lambda root, policy=policy: Backend(
            lambda: FileStore(root, fsync=policy, fsync_interval=0.05), _fail_snapshot_replace
        )
        for policy in ("always", "interval", "never")
    },
}


@pytest.fixture(params=[*BACKENDS, "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "redis":  # a real redis-server; this test's own key prefix
        server = request.getfixturevalue("redis_server")
        prefix = request.getfixturevalue("redis_prefix")
        return Backend(lambda: RedisStore(server.url, prefix=prefix))
    return BACKENDS[request.param](tmp_path / "data")


# The stores whose compaction a test can make fail (memory's cannot).
BREAKABLE = [name for name in BACKENDS if BACKENDS[name](Path()).break_compaction is not None]


@pytest.fixture(params=BREAKABLE)
def breakable(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return BACKENDS[request.param](tmp_path / "data")


def edits(n: int, start: int = 0) -> list[Record]:
    """``n`` records that each append ``"<i>,"`` to the text, by alternating authors."""
    doc = Doc(client_id=1)
    text = doc.get("content", type=Text)
    out: list[bytes] = []
    doc.observe(lambda e: out.append(e.update))
    for i in range(start + n):
        text.insert(len(text), f"{i},")
    return [Record(u, 1000.0 + i, f"user{i % 2}") for i, u in enumerate(out)][start:]


def state_of(records: list[Record]) -> bytes:
    doc = Doc()
    for record in records:
        doc.apply_update(record.update)
    return doc.get_update()


async def test_an_unknown_document_loads_empty(backend):
    async with backend.open() as store:
        loaded = await store.log("nope").load()
        assert (loaded.state, loaded.records, loaded.updates) == (None, [], [])
        assert await store.info("nope") is None and await store.list() == []


async def test_appended_records_load_back_in_order_with_time_and_author(backend):
    records = edits(5)
    async with backend.open() as store:
        log = store.log("doc")
        await log.load()
        for record in records:
            log.append(record)
        await log.close()
    async with backend.open() as store:
        loaded = await store.log("doc").load()
        assert loaded.records == records and loaded.state is None
        assert text_of(loaded.updates) == "0,1,2,3,4,"


async def test_a_flushed_record_is_durable(backend):
    async with backend.open() as store:
        log = store.log("doc")
        await log.load()
        first = log.append(edits(1)[0])
        await log.flush(first)
        assert log.durable(first)
        last = [log.append(r) for r in edits(3, start=1)][-1]
        await log.flush()
        assert log.durable(last) and log.durable(first)
        await log.close()


async def test_compact_then_load_is_the_state_and_the_records_after_upto(backend):
    records = edits(4)
    async with backend.open() as store:
        log = store.log("doc")
        await log.load()
        upto = [log.append(r) for r in records[:3]][-1]
        log.append(records[3])
        await log.compact(state_of(records[:3]), upto)
        await log.close()
    async with backend.open() as store:
        loaded = await store.log("doc").load()
        assert loaded.state == state_of(records[:3]) and loaded.records == records[3:]
        assert text_of(loaded.updates) == "0,1,2,3,"


async def test_records_appended_after_upto_before_compact_runs_survive(backend):
    records = edits(6)
    async with backend.open() as store:
        log = store.log("doc")
        await log.load()
        upto = [log.append(r) for r in records[:2]][-1]
        state = state_of(records[:2])  # the caller takes the state, then more arrives
        log.append(records[2])
        log.append(records[3])
        compacting = asyncio.ensure_future(log.compact(state, upto))
        log.append(records[4])  # before the coroutine has run at all
        await compacting
        log.append(records[5])
        await log.close()
    async with backend.open() as store:
        loaded = await store.log("doc").load()
        assert loaded.state == state and loaded.records == records[2:]


async def test_compacting_with_the_loaded_cursor_covers_everything(backend):
    records = edits(3)
    async with backend.open() as store:
        log = store.log("doc")
        await log.load()
        for record in records:
            log.append(record)
        await log.close()
    async with backend.open() as store:
        log = store.log("doc")
        loaded = await log.load()
        await log.compact(state_of(loaded.records), loaded.cursor)
        await log.close()
    async with backend.open() as store:
        loaded = await store.log("doc").load()
        assert loaded.records == [] and text_of(loaded.updates) == "0,1,2,"


async def test_a_failed_compaction_loses_nothing(breakable, monkeypatch):
    backend = breakable
    assert backend.break_compaction is not None
    records = edits(5)
    async with backend.open() as store:
        log = store.log("doc")
        await log.load()
        upto = [log.append(r) for r in records[:2]][-1]
        log.append(records[2])
        with monkeypatch.context() as patch:
            backend.break_compaction(patch)
            with pytest.raises(OSError):
                await log.compact(state_of(records[:2]), upto)
        log.append(records[3])
        await log.close()
    async with backend.open() as store:
        log = store.log("doc")
        loaded = await log.load()
        assert text_of(loaded.updates) == "0,1,2,3,"
        await log.compact(state_of(records[:4]), loaded.cursor)  # works again
        log.append(records[4])
        await log.close()
    async with backend.open() as store:
        assert text_of((await store.log("doc").load()).updates) == "0,1,2,3,4,"


async def test_delete_then_load_is_empty(backend):
    async with backend.open() as store:
        log = store.log("doc")
        await log.load()
        upto = log.append(edits(1)[0])
        await log.compact(state_of(edits(1)), upto)
        log.append(edits(2)[1])
        assert await log.delete()
        fresh = store.log("doc")
        assert (await fresh.load()).updates == []
        await fresh.close()
        assert await store.info("doc") is None and await store.list() == []
        assert not await store.log("doc").delete()


async def generation_of(store: Store, name: str) -> str:
    log = store.log(name)
    generation = (await log.load()).generation
    await log.close()
    return generation


async def test_the_generation_stays_while_the_document_lives(backend):
    async with backend.open() as store:
        unknown = await generation_of(store, "doc")
        assert unknown != ""  # every store here keeps generations
        log = store.log("doc")
        loaded = await log.load()
        assert loaded.generation == unknown  # created: still the same incarnation
        upto = log.append(edits(1)[0])
        await log.compact(state_of(edits(1)), upto)
        log.append(edits(2)[1])
        await log.close()
    async with backend.open() as store:  # and across a restart
        assert await generation_of(store, "doc") == unknown
        assert await generation_of(store, "other") != ""


async def test_deleting_a_document_starts_another_generation(backend):
    seen = []
    async with backend.open() as store:
        for _ in range(3):  # deleted, created again, deleted again...
            log = store.log("doc")
            seen.append((await log.load()).generation)
            log.append(edits(1)[0])
            await log.flush()
            assert await log.delete()
        seen.append(await generation_of(store, "doc"))
        assert await generation_of(store, "doc") == seen[-1]  # loading changes nothing
    async with backend.open() as store:
        assert await generation_of(store, "doc") == seen[-1]  # remembered across a restart
    assert len(set(seen)) == 4, seen


async def test_list_and_info_name_every_stored_document(backend):
    async with backend.open() as store:
        for name in ("b/c", "a", "été"):
            log = store.log(name)
            await log.load()
            log.append(edits(1)[0])
            await log.close()
        listed = await store.list()
        assert [d.name for d in listed] == ["a", "b/c", "été"]
        info = await store.info("a")
        assert info is not None and info.name == "a" and info.size > 0
        assert await store.info("b") is None


async def test_close_then_reopen_keeps_everything(backend):
    records = edits(6)
    async with backend.open() as store:
        log = store.log("doc")
        await log.load()
        upto = [log.append(r) for r in records[:3]][-1]
        await log.compact(state_of(records[:3]), upto)
        log.append(records[3])
        await log.close()
    async with backend.open() as store:
        log = store.log("doc")
        loaded = await log.load()
        assert text_of(loaded.updates) == "0,1,2,3,"
        log.append(records[4])
        await log.compact(state_of(records), log.append(records[5]))
        await log.close()
    async with backend.open() as store:
        loaded = await store.log("doc").load()
        assert text_of(loaded.updates) == "0,1,2,3,4,5," and loaded.records == []


async def test_list_pages_by_name_after_a_name(backend):
    names = ["b", "a/1", "c d", "a", "é"]
    async with backend.open() as store:
        for name in names:
            log = store.log(name)
            await log.load()
            log.append(edits(1)[0])
            await log.close()
        assert [i.name for i in await store.list()] == sorted(names)
        assert [i.name for i in await store.list(limit=2)] == ["a", "a/1"]
        assert [i.name for i in await store.list("a/1", 2)] == ["b", "c d"]
        assert [i.name for i in await store.list("c d")] == ["é"]
        assert await store.list("é", 10) == []
        assert await store.readiness() is None  # a healthy store takes writes
