"""Persistence on a live server: compaction bounds the disk; a corrupt snapshot is refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pycrdt import Doc, Text
from tornado.httpclient import HTTPClientError

from collab import Config
from collab.storage.file import FileStore
from tests.yclient import YClient, eventually


@pytest.fixture
def config(tmp_path, request) -> Config:
    settings = {"data_dir": str(tmp_path / "data"), "idle_timeout": 0.3}
    return Config(**{**settings, **getattr(request, "param", {})})


def disk_usage(root: Path) -> int:
    return sum(p.stat().st_size for p in root.iterdir() if p.is_file())


async def stored_text(root: Path, name: str) -> str:
    store = FileStore(root, read_only=True)
    try:
        doc = Doc()
        for update in (await store.log(name).load()).updates:
            doc.apply_update(update)
        return str(doc.get("content", type=Text))
    finally:
        await store.close()


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
            await client.roundtrip()  # let the server keep up, then look at the disk
            peak = max(peak, disk_usage(root))
            # A compaction overlaps at most 500 updates, however slow the machine is.
            await eventually(lambda: hub.document("big").compacting is None)
    text = str(client.text)

    async def server_has_all() -> bool:
        r = await http_client.fetch(f"http://127.0.0.1:{port}/api/docs/big/text")
        return r.body.decode() == text

    await eventually(server_has_all, timeout=30)
    doc = hub.document("big")
    await eventually(lambda: doc.compacting is None)
    state = len(doc.room.doc.get_update())
    # Bound: one snapshot plus a log of at most compact_bytes or a quarter of
    # the snapshot (and one record) once no compaction runs; mid-compaction,
    # briefly, two snapshots, the log being folded, and the new log, which keeps
    # taking records meanwhile (on a loaded machine it can pass the bound before
    # the snapshot is renamed).
    bound = max(config.compact_bytes, state // 4)
    final = disk_usage(root)
    assert final <= state + bound + 4096, (final, state)
    assert peak <= 2 * state + 3 * bound + 8192, (peak, state)
    assert final < 20_000 * 20  # an uncompacted log would be ~30 bytes an update
    await client.close()
    await hub.close()
    assert await stored_text(root, "big") == text  # intact after the server stopped


async def test_a_corrupt_snapshot_refuses_the_document(config, hub, ws_url, http_client, port):
    root = Path(config.data_dir)
    root.mkdir(parents=True, exist_ok=True)
    (root / "broken.snap").write_bytes(b"CSNP\x01garbage")
    client = YClient(ws_url("broken"))
    await client.connect(wait_synced=False)
    await asyncio.wait_for(client.closed.wait(), 10)
    assert client.close_code == 1011 and "corrupt" in (client.close_reason or "")
    with pytest.raises(HTTPClientError) as err:
        await http_client.fetch(f"http://127.0.0.1:{port}/api/docs/broken/text")
    assert err.value.code == 503
    assert (root / "broken.snap.corrupt").exists()
