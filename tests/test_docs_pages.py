"""``GET /api/docs?limit=N&cursor=C``: pages by name, the next one in a ``Link`` header.

Without ``limit`` the answer is the whole JSON array, as before pages existed.
"""

from __future__ import annotations

import json
import re
from urllib.parse import quote

import pytest
import tornado.web

import collab
from collab.core.auth import Permission
from collab.core.errors import Forbidden
from collab.tornado import api
from tests.yclient import YClient

NAMES = ["alpha", "beta", "b/c", "delta", "e f", "gamma", "ünï"]
NEXT = re.compile(r'^<([^>]+)>; rel="next"$')


async def seed(http_client, port):
    """Store ``NAMES``; return a GET on the server."""
    for name in NAMES:
        url = f"http://127.0.0.1:{port}/api/docs/{quote(name, safe='')}/text"
        assert (await http_client.fetch(url, method="PUT", body=name)).code == 204

    async def get(path: str = "/api/docs"):
        return await http_client.fetch(f"http://127.0.0.1:{port}{path}", raise_error=False)

    return get


async def pages(get, path: str) -> list[list[str]]:
    """Every page, following ``Link: rel="next"`` from ``path``."""
    found: list[list[str]] = []
    while True:
        response = await get(path)
        assert response.code == 200, response.body
        found.append([d["name"] for d in json.loads(response.body)])
        link = response.headers.get("Link")
        if link is None:
            return found
        match = NEXT.match(link)
        assert match is not None, link
        path = match[1]


async def test_pages_follow_the_link_in_name_order_and_end_without_one(http_client, port):
    docs = await seed(http_client, port)
    assert await pages(docs, "/api/docs?limit=3") == [
        ["alpha", "b/c", "beta"],
        ["delta", "e f", "gamma"],
        ["ünï"],
    ]
    assert await pages(docs, "/api/docs?limit=7") == [sorted(NAMES)]


async def test_without_limit_the_whole_array_as_before(http_client, port):
    docs = await seed(http_client, port)
    response = await docs()
    assert [d["name"] for d in json.loads(response.body)] == sorted(NAMES)
    assert "Link" not in response.headers
    entry = json.loads(response.body)[0]
    assert set(entry) == {"name", "size", "modified", "clients"}


async def test_a_loaded_document_not_yet_stored_is_listed_in_its_place(http_client, port, ws_url):
    docs = await seed(http_client, port)
    await YClient(ws_url("carol")).connect()  # loaded, nothing written yet
    assert await pages(docs, "/api/docs?limit=2") == [
        ["alpha", "b/c"],
        ["beta", "carol"],
        ["delta", "e f"],
        ["gamma", "ünï"],
    ]


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=-1", "limit=abc", "limit=", "cursor=%FF%FE", "cursor=***"]
)
async def test_a_malformed_limit_or_cursor_is_400(http_client, port, query):
    docs = await seed(http_client, port)
    assert (await docs(f"/api/docs?{query}")).code == 400


async def test_a_large_limit_is_capped(http_client, port, monkeypatch):
    docs = await seed(http_client, port)
    monkeypatch.setattr(api, "MAX_PAGE", 4)
    assert await pages(docs, "/api/docs?limit=1000") == [
        ["alpha", "b/c", "beta", "delta"],
        ["e f", "gamma", "ünï"],
    ]


# -- documents the caller may not see do not leave pages short ----------------------------


def only_public(request, name: str) -> Permission:
    if name.startswith("secret"):
        raise Forbidden("not yours")
    return Permission()


@pytest.fixture
def app(hub) -> tornado.web.Application:
    return tornado.web.Application(collab.routes(hub, authorize=only_public))


async def test_pages_hold_limit_documents_the_caller_may_open(http_client, port, hub):
    for name in ["a", "secret1", "secret2", "secret3", "b", "c", "secret4"]:
        await hub.set_text(name, name)

    async def get(path: str):
        return await http_client.fetch(f"http://127.0.0.1:{port}{path}", raise_error=False)

    assert await pages(get, "/api/docs?limit=2") == [["a", "b"], ["c"]]
