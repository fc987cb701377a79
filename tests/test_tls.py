"""TLS served by Tornado itself (``ssl_options``): the socket stays with Tornado's stream."""

from __future__ import annotations

import ssl

import tornado.httpserver
import tornado.testing
import trustme

from collab import Config, Hub, make_app
from tests.wait import eventually
from tests.yclient import YClient


async def test_sync_over_tls_terminated_by_tornado(tmp_path) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)

    hub = Hub(Config(data_dir=str(tmp_path / "data"), max_pending_bytes=64 << 10))
    server = tornado.httpserver.HTTPServer(make_app(hub.config, hub), ssl_options=server_context)
    sock, port = tornado.testing.bind_unused_port("127.0.0.1")
    server.add_sockets([sock])
    try:
        url = f"wss://127.0.0.1:{port}/ws/doc"
        a = await YClient(url, ssl_options=client_context).connect()
        b = await YClient(url, ssl_options=client_context).connect()
        a.text += "over TLS "
        b.text += "x" * 300_000  # more than the write buffer's high-water mark
        await eventually(lambda: str(a.text) == str(b.text) and len(str(a.text)) > 300_000)
        assert hub.clients("doc") == 2
        await a.close()
        await b.close()
        await eventually(lambda: hub.clients("doc") == 0)  # the server saw both go
    finally:
        server.stop()
        await hub.close()
