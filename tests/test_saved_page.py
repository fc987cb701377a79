"""The editor page's "Saving…" / "Saved" indicator and its warning on close.

Real headless Chromium (Playwright's async API, on the test's own event loop)
against a real server in-process whose store holds its flushes until the test
releases them (``tests/heldstore.py``): "Saved" shows only once the data
directory holds the edit, and closing the tab before then asks first.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tornado.ioloop

from collab import Hub
from collab.core import protocol
from collab.core.protocol import AwarenessEntry, AwarenessUpdate
from tests.browser import ROOT, launch_chromium, require
from tests.heldstore import HeldFileStore
from tests.wait import eventually

try:
    from playwright.async_api import async_playwright, expect
except ImportError:  # pragma: no cover
    require(False, "playwright is not installed: pip install -e '.[test]'", module=True)

TIMEOUT_MS = 15_000
BARRIER_ID = 4242


@pytest.fixture
def store(tmp_path: Path, io_loop: tornado.ioloop.IOLoop) -> Iterator[HeldFileStore]:
    require((ROOT / "collab" / "static" / "editor.html").is_file(), "run `make web` first")
    held = HeldFileStore(tmp_path / "data")
    yield held
    io_loop.run_sync(held.close, timeout=10)


@pytest.fixture
def hub(config, store, io_loop: tornado.ioloop.IOLoop) -> Iterator[Hub]:
    hub = Hub(config, store=store)  # type: ignore[arg-type]  # a Store by its protocol
    yield hub
    store.release()
    io_loop.run_sync(hub.close, timeout=15)


async def chromium_page(stack: list[Any], url: str, errors: list[Any]) -> Any:
    playwright = await async_playwright().start()
    stack.append(playwright)
    chromium = await launch_chromium(playwright)
    stack.append(chromium)
    context = await chromium.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    page.on("pageerror", lambda exc: errors.append(exc))
    await page.goto(url)
    await expect(page.locator("#status")).to_have_attribute(
        "data-status", "online", timeout=TIMEOUT_MS
    )
    return page


def barrier_frame() -> bytes:
    state = json.dumps({"user": {"name": "Barrier", "color": "#123456"}})
    entries = [AwarenessEntry(BARRIER_ID, 1, state)]
    return protocol.encode(AwarenessUpdate(protocol.encode_awareness(entries)))


async def test_saved_shows_only_once_the_log_holds_the_edit_and_closing_asks_before(
    hub, store, port
):
    stack: list[Any] = []
    try:
        errors: list[Any] = []
        page = await chromium_page(stack, f"http://127.0.0.1:{port}/d/notes", errors)
        saved = page.locator("#saved")
        await expect(saved).to_be_hidden()  # nothing typed: nothing to say
        store.hold()
        await page.locator(".cm-content").click()
        await page.keyboard.type("hello")
        # A later task than the keystrokes: sent after the page's save request.
        client = await page.evaluate(
            "() => { collab.awareness.setLocalStateField('probe', 1); return collab.ydoc.clientID }"
        )
        doc = hub.document("notes")
        assert doc is not None
        await eventually(lambda: '"probe"' in doc.room.awareness.states[client].state)
        assert store.waiting > 0  # the server has the request; the edit's flush is held
        for peer in doc.sessions:  # straight to the page: it arrives after any answer sent
            peer.send(barrier_frame())
        await expect(page.locator("#presence .person", has_text="Barrier")).to_have_count(1)
        assert await saved.get_attribute("data-state") == "saving"
        await expect(saved).to_have_text("Saving…")

        # Closing the tab now asks first (dismissed: the page stays).
        dialogs: list[Any] = []

        async def dismiss(dialog: Any) -> None:
            dialogs.append(dialog.type)
            await dialog.dismiss()

        page.on("dialog", dismiss)
        await page.close(run_before_unload=True)
        await eventually(lambda: dialogs == ["beforeunload"])
        assert not page.is_closed()

        store.release()
        await expect(saved).to_have_text("Saved")
        assert await saved.get_attribute("data-state") == "saved"
        assert await store.stored_text("notes") == "hello"

        # Everything saved: the tab closes without asking.
        await page.close(run_before_unload=True)
        await eventually(page.is_closed)
        assert dialogs == ["beforeunload"]
        assert errors == []
    finally:
        for item in reversed(stack):
            await item.stop() if hasattr(item, "stop") else await item.close()
