"""The HTTP API: document list, text read/replace, delete, health and metrics."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from tornado.httpclient import HTTPClientError

from tests.wait import eventually
from tests.yclient import YClient


@pytest.fixture
def api(http_client, port):
    async def call(method: str, path: str, body: str | None = None):
        url = f"http://127.0.0.1:{port}{path}"
        return await http_client.fetch(url, method=method, body=body, raise_error=False)

    return call


async def test_put_text_is_a_live_crdt_edit(api, ws_url, hub):
    client = await YClient(ws_url("notes")).connect()
    client.text.insert(0, "hello world")
    await eventually(lambda: hub.rooms["notes"].room.text == "hello world")
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
    assert doc["clients"] == 1 and doc["size"] > 0 and doc["modified"].startswith("20")


async def test_delete_closes_editors_with_4404_and_removes_the_document(api, ws_url, hub):
    client = await YClient(ws_url("doomed")).connect()
    client.text.insert(0, "bye")
    await eventually(lambda: hub.rooms["doomed"].room.text == "bye")
    assert (await api("DELETE", "/api/docs/doomed")).code == 204
    await eventually(lambda: client.closed.is_set())
    assert client.close_code == 4404
    assert (await api("GET", "/api/docs/doomed/text")).code == 404
    assert (await api("DELETE", "/api/docs/doomed")).code == 404
    docs = json.loads((await api("GET", "/api/docs")).body)
    assert "doomed" not in [d["name"] for d in docs]


@pytest.mark.parametrize("name", ["a\x01b", "x" * 201, "\x7f"])
async def test_invalid_names_are_400(api, name):
    response = await api("GET", f"/api/docs/{quote(name, safe='')}/text")
    assert response.code == 400


async def test_non_utf8_body_is_400(http_client, port):
    with pytest.raises(HTTPClientError) as err:
        await http_client.fetch(
            f"http://127.0.0.1:{port}/api/docs/x/text", method="PUT", body=b"\xff\xfe"
        )
    assert err.value.code == 400


async def test_healthz_and_metrics(api, ws_url, hub):
    assert (await api("GET", "/healthz")).body == b"ok"
    client = await YClient(ws_url("m")).connect()
    client.text.insert(0, "x")
    await eventually(lambda: hub.rooms["m"].room.text == "x")
    await api("PUT", "/api/docs/m/text", "xy")
    await eventually(lambda: str(client.text) == "xy")
    metrics = (await api("GET", "/metrics")).body.decode()
    assert "collab_connections 1.0" in metrics
    assert "collab_documents_loaded 1.0" in metrics
    assert "collab_updates_in_total" in metrics and "collab_bytes_out_total" in metrics
    assert "collab_persist_seconds" in metrics


async def test_tokens_in_page_urls_never_reach_the_access_log(http_client, port, caplog):
    caplog.set_level("INFO", logger="tornado.access")
    await http_client.fetch(f"http://127.0.0.1:{port}/d/notes?token=s3cret.jwt.value")
    await http_client.fetch(f"http://127.0.0.1:{port}/api/docs?token=s3cret.jwt.value")
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == "tornado.access")
    assert "/d/notes?token=***" in logged and "s3cret" not in logged
