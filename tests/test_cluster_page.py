"""The editor page in cluster mode: two people on two processes, real Chromium, real Redis."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser import ROOT, ServerProcess, require
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


def open_page(browser: Any, server: ServerProcess, name: str, user: dict[str, str]) -> Any:
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    saved = json.dumps(json.dumps(user))
    context.add_init_script(f"localStorage.setItem('collab.user', {saved})")
    page = context.new_page()
    page.on("pageerror", lambda exc: pytest.fail(f"page error: {exc}"))
    page.goto(f"{server.url}/d/{name}")
    expect(page.locator("#status")).to_have_attribute("data-status", "online", timeout=TIMEOUT_MS)
    return page


def test_people_on_two_processes_edit_and_see_each_other(browser, two_processes):
    a, b = two_processes
    alice = open_page(browser, a, "together", {"name": "Alice", "color": "#3e63dd"})
    bob = open_page(browser, b, "together", {"name": "Bob", "color": "#e5484d"})
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
