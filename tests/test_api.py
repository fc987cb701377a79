"""The HTTP API: document list, text read/replace, delete, health and metrics."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import pytest
from tornado.httpclient import HTTPClientError

from collab import Config
from tests.wait import eventually
from tests.yclient import YClient


@pytest.fixture
def config(tmp_path) -> Config:
    """Fsync every 50 ms, so the metrics test sees one without waiting a second."""
    return Config(data_dir=str(tmp_path / "data"), fsync="interval", fsync_interval=0.05)


@pytest.fixture
def api(http_client, port):
    async def call(method: str, path: str, body: str | None = None):
        url = f"http://127.0.0.1:{port}{path}"
        return await http_client.fetch(url, method=method, body=body, raise_error=False)

    return call


async def test_put_text_is_a_live_crdt_edit(api, ws_url, hub):
    client = await YClient(ws_url("notes")).connect()
    client.text.insert(0, "hello world")
    await eventually(lambda: hub.document("notes").room.text == "hello world")
    response = await api("PUT", "/api/docs/notes/text", "hello brave world")
    assert response.code == 204
    await eventually(lambda: str(client.text) == "hello brave world")
    response = await api("GET", "/api/docs/notes/text")
    assert response.body.decode() == "hello brave world"
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"


async def test_unknown_document_text_is_404(api):
    assert (await api("GET", "/api/docs/missing/text")).code == 404


async def test_put_creates_and_list_shows_size_time_and_clients(api, ws_url):
    await api("PUT", "/api/docs/a%20b/text", "ünïcode ✓")
    client = await YClient(ws_url("a%20b")).connect()
    assert str(client.text) == "ünïcode ✓"
    docs = json.loads((await api("GET", "/api/docs")).body)
    (doc,) = [d for d in docs if d["name"] == "a b"]
    assert doc["clients"] == 1 and doc["size"] > 0
    age = datetime.now(UTC) - datetime.fromisoformat(doc["modified"])
    assert timedelta(seconds=-1) <= age < timedelta(minutes=1), doc["modified"]


async def test_delete_closes_editors_with_4404_and_removes_the_document(api, ws_url, hub):
    client = await YClient(ws_url("doomed")).connect()
    client.text.insert(0, "bye")
    await eventually(lambda: hub.document("doomed").room.text == "bye")
    assert (await api("DELETE", "/api/docs/doomed")).code == 204
    await eventually(lambda: client.closed.is_set())
    assert client.close_code == 4404
    assert (await api("GET", "/api/docs/doomed/text")).code == 404
    assert (await api("DELETE", "/api/docs/doomed")).code == 404
    docs = json.loads((await api("GET", "/api/docs")).body)
    assert "doomed" not in [d["name"] for d in docs]


@pytest.mark.parametrize("name", ["a\x01b", "x" * 201, "\x7f", "a\x85b"])
async def test_invalid_names_are_400(api, name):
    response = await api("GET", f"/api/docs/{quote(name, safe='')}/text")
    assert response.code == 400


async def test_non_utf8_body_is_400(http_client, port):
    with pytest.raises(HTTPClientError) as err:
        await http_client.fetch(
            f"http://127.0.0.1:{port}/api/docs/x/text", method="PUT", body=b"\xff\xfe"
        )
    assert err.value.code == 400


async def scrape(api) -> dict[str, float]:
    """Every sample on /metrics by name (labels included)."""
    page = (await api("GET", "/metrics")).body.decode()
    samples = [line.rsplit(" ", 1) for line in page.splitlines() if not line.startswith("#")]
    return {name: float(value) for name, value in samples}


async def test_healthz_and_metrics_follow_real_traffic(api, ws_url) -> None:
    assert (await api("GET", "/healthz")).body == b"ok"
    idle = await scrape(api)
    assert (idle["collab_connections"], idle["collab_documents_loaded"]) == (0, 0)
    writer = await YClient(ws_url("m")).connect()
    watcher = await YClient(ws_url("m")).connect()
    joined = await scrape(api)
    assert (joined["collab_connections"], joined["collab_documents_loaded"]) == (2, 1)

    for word in ("one ", "two ", "three "):  # one update frame each, kept apart
        writer.text += word
        await writer.roundtrip()
    await eventually(lambda: str(watcher.text) == "one two three ")
    typed = await scrape(api)
    grown = {name: typed[name] - joined[name] for name in joined if name.endswith("_total")}
    assert (grown["collab_updates_in_total"], grown["collab_updates_out_total"]) == (3, 3)
    assert grown["collab_bytes_in_total"] > 0 and grown["collab_bytes_out_total"] > 0

    async def fsynced() -> bool:
        fsyncs = (await scrape(api)).get('collab_persist_seconds_count{operation="fsync"}', 0)
        assert fsyncs > 0, "no fsync observed"
        return True

    async def connections(n: int) -> bool:
        now = (await scrape(api))["collab_connections"]
        assert now == n, f"collab_connections is {now}, not {n}"
        return True

    await eventually(fsynced)
    await writer.close()
    await eventually(lambda: connections(1))
    await watcher.close()
    await eventually(lambda: connections(0))


async def test_tokens_in_page_urls_never_reach_the_access_log(http_client, port, caplog):
    caplog.set_level("INFO", logger="tornado.access")
    await http_client.fetch(f"http://127.0.0.1:{port}/d/notes?token=s3cret.jwt.value")
    await http_client.fetch(f"http://127.0.0.1:{port}/api/docs?token=s3cret.jwt.value")
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "tornado.access")
    assert "/d/notes?token=*** (" in logged and "/api/docs?token=*** (" in logged
    assert "s3cret" not in logged
