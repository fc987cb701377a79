"""The editor page in Chromium syncs a 50 MB document through a link of 1.5 MB/s.

The page's socket is the browser's own, which offers permessage-deflate; the
step 2 comes in parts, the later ones compressed (``server/split.py``), in
about 18 s, where one plain message would take 33 s, past the 30 s after which
y-websocket drops a silent socket and starts over. The document's facts
(tests/bigdoc.py) must be what the page holds once it is synced, after one
connection.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .bigdoc import BIG, NAME, Facts, serving
from .browser import ServerProcess, wait_until
from .throttle import Throttle

RATE = 1.5e6


@pytest.fixture(scope="module")
def big_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Facts]]:
    with serving(tmp_path_factory.mktemp("bigdoc")) as served:
        yield served


def test_a_50mb_document_syncs_to_the_page_over_a_slow_link(big_server, browser) -> None:
    server, facts = big_server
    with Throttle(server.port, RATE) as proxy:
        context = browser.new_context()
        try:
            page = context.new_page()
            sockets: list[Any] = []
            page.on("websocket", lambda ws: sockets.append(ws))
            page.goto(f"http://127.0.0.1:{proxy.port}/d/{NAME}")
            page.wait_for_function(
                "() => window.collab && window.collab.provider.synced"
                f" && window.collab.ytext.length === {facts.text_length}",
                timeout=55_000,
                polling=500,
            )
            seen = page.evaluate(
                """async () => {
                  const { ydoc, ytext, provider } = window.collab
                  const bytes = new TextEncoder().encode(ytext.toString())
                  const hash = await crypto.subtle.digest('SHA-256', bytes)
                  return {
                    text_length: ytext.length,
                    text_sha256: [...new Uint8Array(hash)]
                      .map((b) => b.toString(16).padStart(2, '0')).join(''),
                    map_size: ydoc.getMap('meta').size,
                    array_length: ydoc.getArray('list').length,
                    synced: provider.synced,
                  }
                }"""
            )
            assert seen.pop("synced") is True
            assert seen == facts.as_dict()
            wait_until(lambda: page.locator("#status").get_attribute("data-status") == "online", 15)
            assert len(sockets) == 1  # one connection: no reconnect loop
            assert proxy.bytes_down < BIG * 0.6
        finally:
            context.close()
