"""The hub over a live server: compaction, eviction, single-flight loading, group commit."""

from __future__ import annotations

import asyncio
import errno
import gc
import threading
import weakref
from pathlib import Path

import pytest
from tornado.httpclient import HTTPClientError

from collab import Config, Hub
from collab.core import protocol
from collab.core.protocol import SyncStep1, Update
from collab.storage import FileLog, FileStore
from tests.yclient import YClient, eventually


class RecordingStore(FileStore):
    """A real file store that counts loads and fsynced records, and can hold loads."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.loads = 0
        self.appended = 0
        self.synced = 0
        self.release = threading.Event()
        self.release.set()
        self.disk_full = False  # appends fail with ENOSPC while set

    def load(self, name):
        self.loads += 1
        assert self.release.wait(10)
        return super().load(name)

    def open_log(self, name, seq):
        return _RecordingLog(self, super().open_log(name, seq))


class _RecordingLog:
    def __init__(self, store: RecordingStore, inner: FileLog) -> None:
        self.store, self.inner = store, inner

    @property
    def size(self) -> int:
        return self.inner.size

    def append(self, payload: bytes) -> None:
        if self.store.disk_full:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.inner.append(payload)
        self.store.appended += 1

    def sync(self) -> None:
        upto = self.store.appended
        self.inner.sync()
        self.store.synced = max(self.store.synced, upto)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def config(tmp_path, request) -> Config:
    settings = {"data_dir": str(tmp_path / "data"), "idle_timeout": 0.3}
    return Config(**{**settings, **getattr(request, "param", {})})


@pytest.fixture
def store(config) -> RecordingStore:
    return RecordingStore(Path(config.data_dir))


@pytest.fixture
def hub(config, store) -> Hub:
    return Hub(config, store=store)


def disk_usage(root: Path) -> int:
    return sum(p.stat().st_size for p in root.iterdir() if p.is_file())


@pytest.mark.timeout(seconds=120)
@pytest.mark.parametrize(
    "config", [{"compact_bytes": 32 * 1024, "rate_messages": 0}], indirect=True
)
async def test_twenty_thousand_updates_keep_disk_use_bounded(
    config, hub, ws_url, http_client, port
):
    root = Path(config.data_dir)
    client = await YClient(ws_url("big")).connect()
    peak = 0
    for i in range(20_000):
        client.text.insert(len(client.text), "abcdefghij"[i % 10])
        if i % 500 == 0:
            await asyncio.sleep(0.01)
            peak = max(peak, disk_usage(root))
    text = str(client.text)

    async def server_has_all() -> bool:
        r = await http_client.fetch(f"http://127.0.0.1:{port}/api/docs/big/text")
        return r.body.decode() == text

    await _eventually_async(server_has_all)
    await eventually(lambda: hub.rooms["big"].compacting is None)
    state = len(hub.rooms["big"].room.doc.get_update())
    # Bound: one snapshot plus a log of at most compact_bytes (and one record)
    # once no compaction runs; mid-compaction, briefly, two snapshots and two logs.
    final = disk_usage(root)
    assert final <= state + config.compact_bytes + 4096, (final, state)
    assert peak <= 2 * (state + config.compact_bytes) + 8192, (peak, state)
    assert final < 20_000 * 20  # an uncompacted log would be ~30 bytes an update
    await client.close()
    await hub.close()
    assert _text_of(FileStore(root).load("big").updates) == text  # intact after restart


async def test_idle_document_is_flushed_and_unloaded(hub, store, ws_url):
    client = await YClient(ws_url("idle")).connect()
    client.text.insert(0, "persist me")
    await eventually(lambda: hub.rooms["idle"].room.text == "persist me")
    room_ref = weakref.ref(hub.rooms["idle"].room)
    doc_ref = weakref.ref(hub.rooms["idle"].room.doc)
    await client.close()

    await eventually(lambda: "idle" not in hub.rooms, timeout=10)
    gc.collect()
    assert room_ref() is None and doc_ref() is None
    assert list(Path(store.root).glob("idle.snap"))  # flushed as a snapshot

    again = await YClient(ws_url("idle")).connect()
    assert str(again.text) == "persist me"
    assert store.loads == 2


@pytest.mark.parametrize("config", [{"idle_timeout": 2.0}], indirect=True)
async def test_reconnect_within_the_idle_timeout_keeps_the_document_loaded(hub, store, ws_url):
    first = await YClient(ws_url("stay")).connect()
    room = hub.rooms["stay"].room
    await first.close()
    await eventually(lambda: not room.peers)
    second = await YClient(ws_url("stay")).connect()
    assert hub.rooms["stay"].room is room and store.loads == 1
    await second.close()


async def test_concurrent_first_connections_load_once_and_all_get_the_state(hub, store, ws_url):
    seed = FileStore(store.root).open_log("shared", 0)
    seed.append(_update_inserting("already here"))
    seed.close()
    store.release.clear()
    clients = [YClient(ws_url("shared")) for _ in range(20)]
    connecting = [asyncio.ensure_future(c.connect(wait_synced=False)) for c in clients]
    await eventually(lambda: store.loads == 1)
    store.release.set()
    await asyncio.gather(*connecting)
    for c in clients:
        await asyncio.wait_for(c.synced.wait(), 10)
    assert store.loads == 1
    assert {str(c.text) for c in clients} == {"already here"}
    # nothing was sent before the load finished: the first frame already knows the text
    first = protocol.decode(clients[0].received[0])
    assert isinstance(first, SyncStep1) and first.state_vector != b"\x00"


@pytest.mark.parametrize("config", [{"fsync": "always", "rate_messages": 0}], indirect=True)
async def test_fsync_always_relays_only_updates_already_fsynced(hub, store, ws_url):
    writer = await YClient(ws_url("durable")).connect()
    reader = await YClient(ws_url("durable")).connect()
    violations: list[tuple[int, int]] = []
    seen = 0

    def on_frame(data: bytes) -> None:
        nonlocal seen
        if isinstance(protocol.decode(data), Update):
            seen += 1
            if store.synced < seen:
                violations.append((seen, store.synced))

    reader.on_frame = on_frame
    for i in range(200):
        writer.text.insert(0, str(i % 10))
        if i % 7 == 0:
            await asyncio.sleep(0)
    await eventually(lambda: len(reader.text) == 200)
    assert seen > 0 and violations == []


async def test_corrupt_snapshot_refuses_the_document(config, hub, ws_url, http_client, port):
    root = Path(config.data_dir)
    FileStore(root).save_snapshot("broken", _update_inserting("x"), 0)
    (root / "broken.snap").write_bytes(b"CSNP\x01garbage")
    client = YClient(ws_url("broken"))
    await client.connect(wait_synced=False)
    await asyncio.wait_for(client.closed.wait(), 10)
    assert client.close_code == 1011 and "corrupt" in (client.close_reason or "")
    with pytest.raises(HTTPClientError) as err:
        await http_client.fetch(f"http://127.0.0.1:{port}/api/docs/broken/text")
    assert err.value.code == 503
    assert (root / "broken.snap.corrupt").exists()


async def _eventually_async(check, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met"
        await asyncio.sleep(0.05)


def _update_inserting(text: str) -> bytes:
    from pycrdt import Doc, Text

    doc = Doc()
    doc.get("content", type=Text).insert(0, text)
    return doc.get_update()


def _text_of(updates: list[bytes]) -> str:
    from pycrdt import Doc, Text

    doc = Doc()
    for u in updates:
        doc.apply_update(u)
    return str(doc.get("content", type=Text))


async def test_an_update_the_disk_cannot_take_is_never_served(hub, store, ws_url, caplog):
    """Disk full: the document is evicted unsaved, nobody sees the update, nothing is lost."""
    writer = await YClient(ws_url("full"), client_id=1).connect()
    watcher = await YClient(ws_url("full"), client_id=2).connect()
    writer.text += "kept "
    await eventually(lambda: str(watcher.text) == "kept ")

    store.disk_full = True
    writer.text += "unwritable"
    await eventually(lambda: writer.closed.is_set() and watcher.closed.is_set())
    assert writer.close_code == 1011 and watcher.close_code == 1011
    assert str(watcher.text) == "kept "  # never relayed
    assert "full" not in hub.rooms and "cannot append" in caplog.text

    store.disk_full = False
    fresh = await YClient(ws_url("full"), client_id=3).connect()
    assert str(fresh.text) == "kept "  # reloaded from disk: the unlogged update is not served
    await writer.connect()  # the writer reconnects with its edits
    await eventually(lambda: str(fresh.text) == "kept unwritable")
