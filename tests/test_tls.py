"""TLS served by Tornado itself (``ssl_options``): the socket stays with Tornado's stream.

Embedded (an ``HTTPServer`` with an ``SSLContext``), and ``collab serve
--certfile --keyfile`` as a real process, with a stock y-websocket client under
Node trusting the test CA (``NODE_EXTRA_CA_CERTS``).
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import tornado.httpserver
import tornado.testing
import trustme

from collab import Config, Hub, make_app
from tests.jsclient import JsPeers
from tests.server import ServerProcess
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


class TlsServerProcess(ServerProcess):
    """``collab serve`` with ``--certfile``/``--keyfile``, asked over HTTPS with the test CA."""

    def __init__(self, data_dir: Path, ca: trustme.CA, *args: str) -> None:
        cert = ca.issue_cert("127.0.0.1")
        certfile, keyfile = data_dir.parent / "cert.pem", data_dir.parent / "key.pem"
        for pem in cert.cert_chain_pems:
            pem.write_to_path(str(certfile), append=True)
        cert.private_key_pem.write_to_path(str(keyfile))
        super().__init__(data_dir, "--certfile", str(certfile), "--keyfile", str(keyfile), *args)
        self.context = ssl.create_default_context()
        ca.configure_trust(self.context)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"server exited with {self.proc.returncode}: {self.output()}")
        try:
            return self.get("/healthz") == (200, b"ok")
        except OSError:
            return False

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=5, context=self.context) as res:
                return res.status, res.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()


async def test_collab_serve_with_certfile_speaks_https_and_wss(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = trustme.CA()
    ca_pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    monkeypatch.setenv("NODE_EXTRA_CA_CERTS", str(ca_pem))  # the node peers inherit it
    with TlsServerProcess(tmp_path / "data", ca) as server:
        assert server.get("/healthz") == (200, b"ok")  # verified against the CA
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(server.url + "/healthz", timeout=5)  # no CA: refused
        assert f"collab serving on https://127.0.0.1:{server.port}/" in server.output()
        async with JsPeers() as js:
            wss = f"wss://127.0.0.1:{server.port}/ws"
            ann = await js.peer(wss, "secure notes", name="ann")
            bob = await js.peer(wss, "secure notes", name="bob")
            await ann.request("insert", index=0, text="sealed ")
            await bob.request("insert", index=0, text="and delivered")

            async def converged() -> bool:
                a, b = await ann.state(), await bob.state()
                return a["text"] == b["text"] and len(a["text"]) == len("sealed and delivered")

            await eventually(converged)
            text = (await ann.state())["text"]
            assert server.get("/api/docs/secure%20notes/text") == (200, text.encode())
        server.stop()
