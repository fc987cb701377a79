"""``collab serve --base-path /collab``: the whole server under a prefix, the pages included.

A real server process and real headless Chromium: the home page at
``/collab/`` opens a document at ``/collab/d/<name>``, typing there reaches the
document (read back at ``/collab/api/docs/<name>/text``), and every request the
pages make (assets, API, WebSocket) stays under the prefix. ``/`` is 404.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from .browser import ROOT, ServerProcess, require, wait_until

try:
    from playwright import sync_api
except ImportError:  # pragma: no cover
    require(False, "playwright is not installed: pip install -e '.[test]'", module=True)
expect = sync_api.expect

BASE = "/collab"
TIMEOUT_MS = 15_000
expect.set_options(timeout=TIMEOUT_MS)


class PrefixedServer(ServerProcess):
    """A server under ``BASE``: its health check is ``BASE/healthz`` too."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir, "--base-path", BASE + "/")  # a trailing slash is fine

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"server exited with {self.proc.returncode}: {self.output()}")
        try:
            return self.get(BASE + "/healthz") == (200, b"ok")
        except OSError:
            return False


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    built = (ROOT / "collab" / "static" / "editor.html").is_file()
    require(built, "the editor bundle is not built: run `make web`")
    proc = PrefixedServer(tmp_path_factory.mktemp("base-path-data"))
    proc.start()
    yield proc
    proc.stop()


def test_nothing_is_served_outside_the_base_path(server: ServerProcess) -> None:
    outside = ["/", "/d/x", "/healthz", "/readyz", "/metrics", "/api/docs", "/static/style.css"]
    for path in [*outside, "/sw.js"]:
        assert server.get(path)[0] == 404, path
    assert server.get(f"{BASE}/readyz")[0] != 404
    for path in [f"{BASE}/", f"{BASE}/d/x", f"{BASE}/healthz", f"{BASE}/metrics"]:
        assert server.get(path)[0] == 200, path
    assert server.get(f"{BASE}/api/docs")[0] == 200
    page = server.get(f"{BASE}/d/x")[1]
    assert b'<meta name="collab-base" content="/collab">' in page
    assert b'src="/collab/static/editor.js?v=' in page and b"__COLLAB_BASE__" not in page
    # /collab without the slash: redirected to the home page, query kept.
    with urllib.request.urlopen(server.url + BASE + "?token=t", timeout=5) as res:
        assert res.url == f"{server.url}{BASE}/?token=t"
    # The service worker lives at the base path, so that its scope is the base path.
    with urllib.request.urlopen(f"{server.url}{BASE}/sw.js", timeout=5) as res:
        assert res.headers["Content-Type"] == "text/javascript; charset=utf-8"
        assert res.headers["Cache-Control"] == "no-cache"
        assert b"static/editor.js?v=" in res.read()
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(server.url + "/collabx/", timeout=5)


def test_pages_under_the_base_path_open_edit_and_link(server: ServerProcess, browser: Any) -> None:
    name = "prefixed/notes ✓"
    encoded = quote(name, safe="")
    requested: list[str] = []
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    context.on("request", lambda request: requested.append(request.url))
    try:
        home = context.new_page()
        home.on("pageerror", lambda exc: pytest.fail(f"page error: {exc}"))
        home.on("websocket", lambda ws: requested.append(ws.url))
        home.goto(f"{server.url}{BASE}/")
        expect(home.locator("#docs-summary")).not_to_have_text("Loading…")  # the API answered
        scope = home.evaluate("navigator.serviceWorker.ready.then((r) => r.scope)")
        assert scope == f"{server.url}{BASE}/"  # the pages open offline, under the prefix
        home.get_by_label("Open or create a document").fill(name)
        home.keyboard.press("Enter")
        expect(home).to_have_url(f"{server.url}{BASE}/d/{encoded}")
        expect(home.locator("#doc-name")).to_have_text(name)
        expect(home.locator("#status")).to_have_attribute("data-status", "online")
        home.locator(".cm-content").focus()
        home.keyboard.type("typed under a prefix")
        wait_until(
            lambda: (
                server.get(f"{BASE}/api/docs/{encoded}/text")[1].decode() == "typed under a prefix"
            )
        )

        home.get_by_role("button", name="Copy link to this document").click()
        link = home.evaluate("navigator.clipboard.readText()")
        assert link == f"{server.url}{BASE}/d/{encoded}"

        # A second browser opening that link sees the text, and goes home by the brand link.
        other = context.new_page()
        other.goto(link)
        other.wait_for_function(
            "t => collab.view.state.doc.toString() === t", arg="typed under a prefix"
        )
        other.locator("#home-link").click()
        expect(other).to_have_url(f"{server.url}{BASE}/")
        row = other.locator("#docs-body tr", has_text=name)
        expect(row.get_by_role("link", name=name)).to_have_attribute("href", f"{BASE}/d/{encoded}")
    finally:
        context.close()
    prefixes = (f"{server.url}{BASE}/", f"ws://127.0.0.1:{server.port}{BASE}/ws/", "data:")
    assert [url for url in requested if not url.startswith(prefixes)] == []
    assert any("/collab/static/" in url for url in requested)
    assert any(url.startswith(f"ws://127.0.0.1:{server.port}{BASE}/ws/") for url in requested)
    listed = json.loads(server.get(f"{BASE}/api/docs")[1])
    assert [doc["name"] for doc in listed] == [name]
