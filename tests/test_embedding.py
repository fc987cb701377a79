"""The README's embedding example, run as written: collab mounted in a host app."""

from __future__ import annotations

import pytest

from tests.readme import example
from tests.wait import eventually
from tests.yclient import YClient


@pytest.fixture
def app(tmp_path):
    return example("embed")["make_host_app"](str(tmp_path / "data"))


def client(url: str) -> YClient:
    return YClient(url, headers={"Cookie": "user=ann"})


async def test_host_routes_and_collab_under_a_prefix(app, http_client, port):
    home = await http_client.fetch(f"http://127.0.0.1:{port}/")
    assert home.body == b"my application"
    url = f"ws://127.0.0.1:{port}/collab/ws/shared%20notes"
    a = await client(url).connect()
    b = await client(url).connect()
    a.text.insert(0, "embedded")
    await eventually(lambda: str(b.text) == "embedded")
    text = await http_client.fetch(
        f"http://127.0.0.1:{port}/collab/api/docs/shared%20notes/text",
        headers={"Cookie": "user=ann"},
    )
    assert text.body == b"embedded"


async def test_the_host_authorize_hook_refuses_and_limits(app, http_client, port):
    refused = await http_client.fetch(
        f"http://127.0.0.1:{port}/collab/api/docs/x/text", raise_error=False
    )
    assert refused.code == 401
    url = f"ws://127.0.0.1:{port}/collab/ws/archive/old"
    writer = await client(url).connect()
    writer.text.insert(0, "ignored")  # read-only for everyone: dropped
    await writer.roundtrip()
    hub = app.settings["collab_hub"]  # the README example keeps it there
    other = await client(url).connect()
    assert str(other.text) == "" and hub.document("archive/old").room.text == ""
