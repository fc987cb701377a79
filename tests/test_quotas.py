"""Quotas: document size, connections in all, the HTTP API rate; each refusal counted."""

from __future__ import annotations

import pytest
from pycrdt import Doc, Text

from collab import Config
from collab.core import protocol
from collab.core.errors import DocumentTooLarge, Overloaded, PolicyViolation
from collab.core.limits import Counter, KeyedBuckets, StateBudget
from collab.core.protocol import SyncStep2, Update
from collab.core.room import Room
from tests.crdt import typed_updates
from tests.wait import eventually
from tests.yclient import YClient

# -- the pure rules --------------------------------------------------------------------------


def test_state_budget_measures_only_near_the_limit_and_once_per_change() -> None:
    sizes = iter([600, 900])
    measured: list[int] = []

    def measure() -> int:
        measured.append(size := next(sizes))
        return size

    budget = StateBudget(limit=1000)
    budget.admit(400, measure)  # far from the limit: no measurement
    budget.grow(400)
    budget.admit(500, measure)
    budget.grow(500)
    assert measured == []
    budget.admit(300, measure)  # 900 + 300 > 1000: measured, 600 + 300 fits
    assert measured == [600]
    budget.grow(300)
    with pytest.raises(DocumentTooLarge, match="limit 1000 bytes"):
        budget.admit(200, measure)  # measured again (it changed): 900 + 200 does not fit
    with pytest.raises(DocumentTooLarge):
        budget.admit(200, measure)  # nothing changed since: refused without measuring
    assert measured == [600, 900]
    StateBudget(limit=0).admit(10**12, measure)  # 0: no limit


def test_room_refuses_an_update_that_would_pass_its_limit_and_stays_unchanged() -> None:
    room = Room("d", max_state_bytes=3000)
    author: Doc = Doc()
    text = author.get("content", type=Text)
    updates: list[bytes] = []
    author.observe(lambda event: updates.append(event.update))
    for piece in ("a" * 500, "b" * 500, "c" * 1500):
        text += piece
    room.receive("peer", protocol.encode(Update(updates[0])))
    with pytest.raises(DocumentTooLarge):
        room.receive("peer", protocol.encode(Update(updates[2])))
    room.replace_text(room.text + "b" * 500)
    before = room.doc.get_update()
    with pytest.raises(DocumentTooLarge):
        room.replace_text(room.text + "c" * 1500)
    assert room.doc.get_update() == before
    room.replace_text("short")  # a deletion is never refused
    assert room.text == "short"


def test_a_document_past_its_limit_still_syncs_clients_with_nothing_new() -> None:
    _, updates = typed_updates("ab")
    full = Room("f", max_state_bytes=1)  # stored documents load whatever their size
    full.restore([updates[0]])
    nothing_new = full.receive("peer", protocol.encode(SyncStep2(b"\x00\x00")))
    assert nothing_new.update is None  # a joining client's step 2: not refused
    with pytest.raises(DocumentTooLarge):
        full.receive("peer", protocol.encode(Update(updates[1])))


def test_keyed_buckets_rate_each_key_and_forget_refilled_ones() -> None:
    buckets = KeyedBuckets(rate=2, burst=3)
    assert [buckets.take("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a", 0.0) == pytest.approx(0.5)  # one more token in 1/2 s
    assert buckets.take("b", 0.0) == 0.0  # another address has its own bucket
    assert buckets.take("a", 0.5) == 0.0
    for i in range(2000):  # a crowd of one-off clients: refilled buckets are forgotten
        buckets.take(f"client {i}", 1000.0 + i)
    assert len(buckets.buckets) < 1100
    assert KeyedBuckets(rate=0, burst=0).take("x", 0.0) == 0.0


def test_counter_caps_the_total_as_well_as_each_key() -> None:
    counter = Counter(cap=2, total_cap=3)
    for key in ("a", "a", "b"):
        counter.acquire(key)
    with pytest.raises(Overloaded, match="too many connections") as info:
        counter.acquire("c")
    assert info.value.http_status == 503 and info.value.retry_after
    counter.release("b")
    with pytest.raises(PolicyViolation) as per_key:
        counter.acquire("a")
    assert per_key.value.http_status == 429 and per_key.value.retry_after
    counter.acquire("c")
    for key in ("a", "a", "c"):
        counter.release(key)
    assert (counter.total, counter.counts) == (0, {})


# -- a live server ---------------------------------------------------------------------------


@pytest.fixture
def config(request, tmp_path) -> Config:
    return Config(data_dir=str(tmp_path / "data"), **getattr(request, "param", {}))


def quota(**overrides: object):
    return pytest.mark.parametrize("config", [overrides], indirect=True, ids=[""])


async def refusals(http_client, port: int) -> dict[str, float]:
    page = (await http_client.fetch(f"http://127.0.0.1:{port}/metrics")).body.decode()
    found = {}
    for line in page.splitlines():
        if line.startswith("collab_refusals_total{"):
            labels, value = line.rsplit(" ", 1)
            found[labels.split('"')[1]] = float(value)
    return found


@quota(max_document_bytes=4096)
async def test_an_update_past_max_document_bytes_closes_1009_and_changes_nothing(
    config, ws_url, http_client, port, hub
) -> None:
    writer = await YClient(ws_url("big")).connect()
    writer.text += "a" * 1000
    writer.text += "b" * 1000
    await writer.roundtrip()
    writer.text += "c" * 2000
    await eventually(lambda: writer.closed.is_set())
    assert writer.close_code == 1009
    assert writer.close_reason == "document too large: limit 4096 bytes"
    reader = await YClient(ws_url("big")).connect()
    assert str(reader.text) == "a" * 1000 + "b" * 1000
    assert len(hub.document("big").room.doc.get_update()) <= 4096
    assert (await refusals(http_client, port)).get("document_bytes") == 1

    url = f"http://127.0.0.1:{port}/api/docs/big/text"
    too_big = await http_client.fetch(url, method="PUT", body="x" * 5000, raise_error=False)
    assert too_big.code == 413 and b"document too large" in too_big.body
    assert str(reader.text) == "a" * 1000 + "b" * 1000
    shorter = await http_client.fetch(url, method="PUT", body="a" * 10, raise_error=False)
    assert shorter.code == 204
    await eventually(lambda: str(reader.text) == "a" * 10)
    assert (await refusals(http_client, port)).get("document_bytes") == 2


UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


@quota(max_connections=2)
async def test_max_connections_refuses_the_upgrade_with_503_and_retry_after(
    config, ws_url, http_client, port
) -> None:
    first = await YClient(ws_url("a")).connect()
    await YClient(ws_url("b")).connect()
    refused = await http_client.fetch(
        f"http://127.0.0.1:{port}/ws/c", headers=UPGRADE, raise_error=False
    )
    assert refused.code == 503
    assert refused.headers["Retry-After"] == "5"
    assert b"too many connections (limit 2)" in refused.body
    assert (await refusals(http_client, port)).get("connections") == 1
    await first.close()

    async def reconnects() -> bool:
        try:
            await YClient(ws_url("c")).connect()
        except Exception:
            return False
        return True

    await eventually(reconnects)  # a slot is free once the server saw the close


@quota(api_rate=1, api_rate_burst=3)
async def test_the_api_rate_per_address_answers_429_with_retry_after(
    config, http_client, port
) -> None:
    url = f"http://127.0.0.1:{port}/api/docs"
    codes = [(await http_client.fetch(url, raise_error=False)).code for _ in range(3)]
    assert codes == [200, 200, 200]
    limited = await http_client.fetch(url, raise_error=False)
    assert limited.code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.body == b"rate limit: over 1 requests/s"
    text = await http_client.fetch(f"{url}/x/text", raise_error=False)
    assert text.code == 429  # every API route, before authorization or the body
    health = await http_client.fetch(f"http://127.0.0.1:{port}/healthz")
    assert health.code == 200  # probes and metrics are not rate limited
    assert (await refusals(http_client, port)).get("api_rate") == 2


@quota(api_rate=1, api_rate_burst=1, trusted_proxies=("127.0.0.1/32",))
async def test_the_api_rate_counts_the_forwarded_client_behind_a_trusted_proxy(
    config, http_client, port
) -> None:
    url = f"http://127.0.0.1:{port}/api/docs"

    async def get(client: str) -> int:
        headers = {"X-Forwarded-For": client}
        return (await http_client.fetch(url, headers=headers, raise_error=False)).code

    assert [await get("10.0.0.1"), await get("10.0.0.1")] == [200, 429]
    assert await get("10.0.0.2") == 200  # another client behind the same proxy
