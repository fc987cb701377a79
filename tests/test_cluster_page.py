"""The editor page in cluster mode: two people on two processes, real Chromium, real Redis."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import ROOT, ServerProcess, open_as, require
from tests.redis_server import RedisServer, require_redis

try:
    from playwright import sync_api
except ImportError:  # pragma: no cover
    require(False, "playwright is not installed: pip install -e '.[test]'", module=True)
expect = sync_api.expect
TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerProcess]]:
    require((ROOT / "collab" / "static" / "editor.html").is_file(), "editor bundle not built")
    require_redis()
    root: Path = tmp_path_factory.mktemp("cluster-page")
    redis = RedisServer(root / "redis").start()
    servers = [ServerProcess(root / f"p{i}", "--redis-url", redis.url).start() for i in range(2)]
    yield servers
    for server in servers:
        server.stop()
    redis.stop()


def test_people_on_two_processes_edit_and_see_each_other(browser, two_processes):
    a, b = two_processes
    contexts: list[Any] = []
    alice = open_as(browser, f"{a.url}/d/together", {"name": "Alice", "color": "#3e63dd"}, contexts)
    bob = open_as(browser, f"{b.url}/d/together", {"name": "Bob", "color": "#e5484d"}, contexts)
    alice.locator(".cm-content").focus()
    alice.keyboard.type("Hello from process A. ")
    bob.wait_for_function(
        "t => collab.view.state.doc.toString() === t", arg="Hello from process A. "
    )
    bob.locator(".cm-content").focus()
    bob.keyboard.press("Control+End")
    bob.keyboard.type("And from B.")
    text = "Hello from process A. And from B."
    alice.wait_for_function("t => collab.view.state.doc.toString() === t", arg=text)
    assert a.get("/api/docs/together/text") == (200, text.encode())
    assert b.get("/api/docs/together/text") == (200, text.encode())
    # presence crosses processes: each page lists the other person
    expect(alice.locator("body")).to_contain_text("Bob")
    expect(bob.locator("body")).to_contain_text("Alice")
    for context in contexts:
        context.close()
