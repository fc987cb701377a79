"""``collab.listen``: a host serves and stops the way ``collab serve`` does, with real clients."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import tornado.web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from tornado.simple_httpclient import HTTPStreamClosedError

import collab
from tests.readme import example
from tests.server import free_port
from tests.wait import eventually
from tests.yclient import YClient


async def test_the_readme_host_serves_and_stops_cleanly(tmp_path: Path) -> None:
    port, stop = free_port(), asyncio.Event()
    running = asyncio.ensure_future(example("listen")["serve"](str(tmp_path / "data"), port, stop))
    url = f"ws://127.0.0.1:{port}/collab/ws/notes"

    async def connected() -> YClient | None:
        try:
            return await YClient(url).connect()
        except (ConnectionError, HTTPClientError, OSError):
            return None

    client = await eventually(connected)
    client.text += "kept"
    await client.roundtrip()
    stop.set()
    await asyncio.wait_for(running, 15)
    await asyncio.wait_for(client.closed.wait(), 5)
    assert client.close_code == 1001  # told the server is going away
    assert await connected() is None  # no longer accepting
    # Flushed and the data directory released: a new hub opens it and finds the text.
    hub = collab.Hub(collab.Config(data_dir=str(tmp_path / "data")))
    try:
        assert await hub.get_text("notes") == "kept"
    finally:
        await hub.close()


class EchoHandler(tornado.web.RequestHandler):
    """A host's own handler: what the server-wide limits protect."""

    def post(self) -> None:
        self.finish(str(len(self.request.body)))


async def test_listen_applies_the_server_limits_and_picks_a_port(tmp_path: Path) -> None:
    config = collab.Config(
        data_dir=str(tmp_path / "data"), port=0, max_header_bytes=4096, max_message_bytes=1000
    )
    hub = collab.Hub(config)
    app = tornado.web.Application([(r"/echo", EchoHandler), *collab.routes(hub)])
    server = collab.listen(app, config, hub)
    try:
        assert server.port > 0 and server.scheme == "http"
        base, http = f"http://127.0.0.1:{server.port}", AsyncHTTPClient()
        assert (await http.fetch(base + "/echo", method="POST", body=b"x" * 1000)).body == b"1000"
        too_long = await http.fetch(
            base + "/echo", method="POST", body=b"x" * 1001, raise_error=False
        )
        assert too_long.code == 400  # Tornado's default would have taken 100 MB
        with pytest.raises(HTTPStreamClosedError):  # a head past max_header_bytes: dropped
            await http.fetch(base + "/healthz", headers={"X-Padding": "p" * 5000})
        padded = await http.fetch(base + "/healthz", headers={"X-Padding": "p" * 3000})
        assert padded.body == b"ok"
        client = await YClient(f"ws://127.0.0.1:{server.port}/ws/doc").connect()
        client.text += "hello"
        await eventually(lambda: hub.document("doc") and hub.document("doc").room.text == "hello")
    finally:
        await server.close()
    await asyncio.wait_for(client.closed.wait(), 5)
    assert client.close_code == 1001


async def test_listen_refuses_half_a_tls_configuration(tmp_path: Path) -> None:
    config = collab.Config(data_dir=None, port=0, certfile=str(tmp_path / "cert.pem"))
    hub = collab.Hub(config)
    try:
        with pytest.raises(ValueError, match="--certfile and --keyfile go together"):
            collab.listen(tornado.web.Application(collab.routes(hub)), config, hub)
    finally:
        await hub.close()
