"""The history API on a live app: shapes, statuses, access control, restore as a live edit."""

from __future__ import annotations

import json
import time
from urllib.parse import quote

import jwt
import pytest
from pycrdt import Doc, Text

from collab import Config
from collab.core.textdiff import apply_edits, text_edits
from collab.server.extensions import Extension, RestoreEvent, VersionEvent
from tests.wait import eventually
from tests.yclient import YClient

SECRET = "history-api-test-secret-0123456789abcdef"


@pytest.fixture
def config(request, tmp_path) -> Config:
    extra: dict[str, object] = {}
    if "access_control" in request.node.name:
        extra["jwt_secrets"] = (SECRET,)
    if "history_off" in request.node.name:
        extra["history"] = False
    return Config(
        data_dir=str(tmp_path / "data"), history_idle=0.2, history_max_interval=5, **extra
    )


def token(mode: str = "rw", sub: str = "ann") -> str:
    claims = {"sub": sub, "mode": mode, "exp": time.time() + 600}
    return str(jwt.encode(claims, SECRET, algorithm="HS256"))


@pytest.fixture
def api(http_client, port):
    async def call(method: str, path: str, body: object = None, tok: str | None = None, **more):
        headers = {k.replace("_", "-"): v for k, v in more.items()}
        data = None if body is None else body if isinstance(body, str) else json.dumps(body)
        if tok:
            headers["Authorization"] = f"Bearer {tok}"
        if method in ("POST", "PATCH", "PUT") and data is None:
            data = ""
        url = f"http://127.0.0.1:{port}{path}"
        return await http_client.fetch(
            url, method=method, body=data, headers=headers, raise_error=False
        )

    return call


def body(response):
    return json.loads(response.body)


async def versions(api, name: str, tok: str | None = None) -> list[dict]:
    response = await api("GET", f"/api/docs/{name}/versions", tok=tok)
    assert response.code == 200, response.body
    return body(response)["versions"]


async def test_edits_become_versions_and_each_endpoint_answers(api, hub):
    await api("PUT", "/api/docs/notes/text", "hello world\n")
    await eventually(lambda: hub.history.pending("notes") is None and hub.history.cuts == 1)
    await api("PUT", "/api/docs/notes/text", "hello brave world 😀\n")
    await eventually(lambda: hub.history.cuts == 2)
    listed = await versions(api, "notes")
    assert [v["id"] for v in listed] == [2, 1]  # newest first
    v1, v2 = listed[1], listed[0]
    assert v1["reason"] == "quiet" and v1["kind"] == "auto"
    assert v1["chars"] == 12 and v1["added"] == 12
    assert (v2["added"], v2["removed"]) == (8, 0) and v2["created"].endswith("Z")
    one = await api("GET", "/api/docs/notes/versions/1")
    assert body(one) == v1
    text = await api("GET", "/api/docs/notes/versions/1/text")
    assert text.body.decode() == "hello world\n"
    assert text.headers["Content-Type"] == "text/plain; charset=utf-8"
    again = await api("GET", "/api/docs/notes/versions/1/text", If_None_Match=text.headers["ETag"])
    assert again.code == 304
    state = await api("GET", "/api/docs/notes/versions/1/update")
    assert state.headers["Content-Type"] == "application/octet-stream"
    doc = Doc()
    doc.apply_update(state.body)
    assert str(doc.get("content", type=Text)) == "hello world\n"
    diff = body(await api("GET", "/api/docs/notes/versions/1/diff?to=2"))
    assert diff == {
        "from": 1,
        "to": 2,
        "added": 8,
        "removed": 0,
        "ops": [[0, "hello "], [1, "brave "], [0, "world"], [1, " 😀"], [0, "\n"]],
    }
    await api("PUT", "/api/docs/notes/text", "hello world, now\n")
    current = body(await api("GET", "/api/docs/notes/versions/2/diff"))
    assert current["to"] == "current"
    old, new = "hello brave world 😀\n", "hello world, now\n"
    assert "".join(t for op, t in current["ops"] if op != -1) == new
    assert "".join(t for op, t in current["ops"] if op != 1) == old
    assert apply_edits(old, text_edits(old, new)) == new
    metrics = (await api("GET", "/metrics")).body.decode()
    assert "collab_history_versions_total 2.0" in metrics
    assert "collab_history_failures_total 0.0" in metrics
    patch = await api("GET", "/api/docs/notes/versions/1/diff?to=2&format=unified")
    assert patch.headers["Content-Type"].startswith("text/x-diff")
    assert patch.body.decode().splitlines()[:4] == [
        "--- a/notes@1",
        "+++ b/notes@2",
        "@@ -1 +1 @@",
        "-hello world",
    ]


async def test_name_rename_unname_and_pages(api, hub):
    await api("PUT", "/api/docs/a%2Fb/text", "draft")
    created = await api("POST", "/api/docs/a%2Fb/versions", {"label": " Draft 1 "})
    assert created.code == 201 and body(created)["label"] == "Draft 1"
    assert body(created)["reason"] == "named"
    same = await api("POST", "/api/docs/a%2Fb/versions", {"label": "Again"})
    assert same.code == 201 and body(same)["id"] == 2  # a new version even if nothing changed
    assert body(same)["kind"] == "named"
    renamed = await api("PATCH", "/api/docs/a%2Fb/versions/1", {"label": "Final"})
    assert body(renamed)["label"] == "Final"
    unnamed = await api("PATCH", "/api/docs/a%2Fb/versions/1", {"label": None})
    assert body(unnamed)["label"] is None
    for i in range(4):
        await api("PUT", "/api/docs/a%2Fb/text", f"draft {i}")
        await api("POST", "/api/docs/a%2Fb/versions", {"label": f"v{i}"})
    page = await api("GET", "/api/docs/a%2Fb/versions?limit=2")
    assert [v["id"] for v in body(page)["versions"]] == [6, 5]
    assert page.headers["Link"] == '</api/docs/a%2Fb/versions?limit=2&before=5>; rel="next"'
    rest = await api("GET", "/api/docs/a%2Fb/versions?limit=2&before=5")
    assert [v["id"] for v in body(rest)["versions"]] == [4, 3]
    last = await api("GET", "/api/docs/a%2Fb/versions?limit=2&before=3")
    assert [v["id"] for v in body(last)["versions"]] == [2, 1] and "Link" not in last.headers
    named = body(await api("GET", "/api/docs/a%2Fb/versions?named=1"))["versions"]
    assert [v["label"] for v in named] == ["v3", "v2", "v1", "v0", "Again"]


@pytest.mark.parametrize(
    ("method", "path", "payload", "status"),
    [
        ("GET", "/api/docs/missing/versions", None, 404),
        ("GET", "/api/docs/doc/versions/9", None, 404),
        ("GET", "/api/docs/doc/versions/9/text", None, 404),
        ("GET", "/api/docs/doc/versions/1/diff?to=9", None, 404),
        ("POST", "/api/docs/doc/versions/9/restore", None, 404),
        ("PATCH", "/api/docs/doc/versions/9", {"label": "x"}, 404),
        ("GET", "/api/docs/doc/versions/abc", None, 400),
        ("GET", "/api/docs/doc/versions/0", None, 400),
        ("GET", "/api/docs/doc/versions?limit=0", None, 400),
        ("GET", "/api/docs/doc/versions/1/diff?format=xml", None, 400),
        ("POST", "/api/docs/doc/versions", {"label": ""}, 400),
        ("POST", "/api/docs/doc/versions", {}, 400),
        ("POST", "/api/docs/doc/versions", "not json", 400),
        ("PATCH", "/api/docs/doc/versions/1", {"name": "x"}, 400),
        ("PATCH", "/api/docs/doc/versions/1", {"label": "x" * 101}, 400),
    ],
)
async def test_bad_requests(api, method, path, payload, status):
    await api("PUT", "/api/docs/doc/text", "text")
    await api("POST", "/api/docs/doc/versions", {"label": "one"})
    response = await api(method, path, payload)
    assert response.code == status, (path, response.body)


async def test_restore_is_a_live_edit_and_can_be_undone(api, hub, ws_url):
    events: list[object] = []

    class Seen(Extension):
        def on_version(self, event: VersionEvent) -> None:
            events.append(event)

        def on_restore(self, event: RestoreEvent) -> None:
            events.append(event)

    hub.use(Seen())
    client = await YClient(ws_url("doc")).connect()
    client.text.insert(0, "the first line\nthe second line\n")
    await eventually(lambda: hub.history.cuts == 1)
    client.text.insert(len(b"the first line\nthe second line\n"), "a third line\n")
    await eventually(lambda: hub.document("doc").room.text.endswith("third line\n"))
    keep = client.text.sticky_index(len("the fir"), 0)  # the "s" of "first"
    restored = await api("POST", "/api/docs/doc/versions/1/restore")
    assert restored.code == 200
    answer = body(restored)
    assert answer["changed"] and answer["restored_from"] == 1
    assert answer["before"]["kind"] == "pre-restore" and answer["version"]["kind"] == "restore"
    await eventually(lambda: str(client.text) == "the first line\nthe second line\n")
    assert str(client.text)[keep.get_index()] == "s"  # its CRDT item survived
    assert client.connected  # no reconnect
    undo = await api("POST", f"/api/docs/doc/versions/{answer['before']['id']}/restore")
    assert body(undo)["changed"]
    await eventually(lambda: str(client.text).endswith("a third line\n"))
    await hub.extensions.drain()
    assert [type(e).__name__ for e in events].count("RestoreEvent") == 2
    reasons = [e.reason for e in events if isinstance(e, VersionEvent)]
    assert reasons[:3] == ["quiet", "pre-restore", "restore"]
    same = body(await api("POST", f"/api/docs/doc/versions/{answer['before']['id']}/restore"))
    assert same["changed"] is False
    await client.close()


async def test_deleting_a_document_deletes_its_history(api, hub, config):
    from pathlib import Path

    await api("PUT", "/api/docs/gone/text", "secret")
    await api("POST", "/api/docs/gone/versions", {"label": "keep me"})
    folder = Path(config.data_dir) / "history" / "gone"
    assert folder.is_dir()
    assert (await api("DELETE", "/api/docs/gone")).code == 204
    assert not folder.exists()
    assert (await api("GET", "/api/docs/gone/versions")).code == 404
    await api("PUT", "/api/docs/gone/text", "new")
    assert await versions(api, "gone") == []  # the old versions did not come back


async def test_a_name_holding_versions_must_be_percent_encoded(api):
    name = quote("x/versions/1", safe="")
    await api("PUT", f"/api/docs/{name}/text", "odd name")
    await api("POST", f"/api/docs/{name}/versions", {"label": "odd"})
    listed = await versions(api, name)
    assert [v["label"] for v in listed] == ["odd"]
    assert (await api("GET", f"/api/docs/{name}/versions/1/text")).body == b"odd name"


async def test_access_control(api, hub):
    rw, ro = token("rw"), token("ro", sub="bob")
    assert (await api("PUT", "/api/docs/doc/text", "text", tok=rw)).code == 204
    assert (await api("GET", "/api/docs/doc/versions")).code == 401
    named = await api("POST", "/api/docs/doc/versions", {"label": "one"}, tok=rw)
    assert named.code == 201
    assert body(named)["authors"] == [{"user": "ann", "name": None, "color": None}]
    assert (await api("GET", "/api/docs/doc/versions/1/text", tok=ro)).code == 200
    for method, path, payload in [
        ("POST", "/api/docs/doc/versions", {"label": "two"}),
        ("PATCH", "/api/docs/doc/versions/1", {"label": "two"}),
        ("POST", "/api/docs/doc/versions/1/restore", None),
    ]:
        refused = await api(method, path, payload, tok=ro)
        assert refused.code == 403 and refused.body == b"read-only token"


async def test_history_off(api, hub, config):
    from pathlib import Path

    assert hub.history is None
    await api("PUT", "/api/docs/doc/text", "text")
    listed = await api("GET", "/api/docs/doc/versions")
    assert body(listed) == {"enabled": False, "versions": [], "next": None}
    for method, path in [("GET", "/api/docs/doc/versions/1"), ("POST", "/api/docs/doc/versions")]:
        refused = await api(method, path, {"label": "x"} if method == "POST" else None)
        assert refused.code == 404 and refused.body == b"history is off"
    await hub.close()
    assert not (Path(config.data_dir) / "history").exists()
