"""The editor page opens with the server down, and never brings a deleted document back.

Real headless Chromium (Playwright) against a real ``collab serve`` process
that the test stops and starts again on the same port and data directory. The
service worker (``<base>/sw.js``) serves the page and its bundle while the
server is down; the edits typed meanwhile are kept in IndexedDB and sync when
it is back. A copy whose document was deleted meanwhile (a new generation on
the server) is refused with 4404 and dropped, even if the name was used again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from collab.storage.file import FileStore

from .browser import ROOT, ServerProcess, require, wait_until

try:
    from playwright import sync_api
except ImportError:  # pragma: no cover
    require(False, "playwright is not installed: pip install -e '.[test]'", module=True)
expect = sync_api.expect

TIMEOUT_MS = 15_000
expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    require((ROOT / "collab" / "static" / "sw.js").is_file(), "run `make web` first")
    proc = ServerProcess(tmp_path / "data")
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    yield context
    context.close()


def text_of(server: ServerProcess, name: str) -> str | None:
    status, body = server.get(f"/api/docs/{name}/text")
    return body.decode() if status == 200 else None


def open_online(context: Any, server: ServerProcess, name: str) -> Any:
    """Open ``/d/<name>`` until it is online and its service worker controls it."""
    page = context.new_page()
    page.on("pageerror", lambda exc: pytest.fail(f"page error: {exc}"))
    page.goto(f"{server.url}/d/{name}")
    expect(page.locator("#status")).to_have_attribute("data-status", "online")
    wait_until(lambda: page.evaluate("!!navigator.serviceWorker.controller"))
    return page


def type_and_save(page: Any, server: ServerProcess, name: str, text: str) -> None:
    page.locator(".cm-content").click()
    page.keyboard.press("ControlOrMeta+End")
    page.keyboard.type(text)
    expect(page.locator("#saved")).to_have_attribute("data-state", "saved")
    assert text_of(server, name) is not None and text in (text_of(server, name) or "")


def editor_text(page: Any) -> str:
    return str(page.evaluate("collab.view.state.doc.toString()"))


def test_a_document_opened_before_reopens_offline_and_its_edits_sync_later(
    server: ServerProcess, context: Any
) -> None:
    page = open_online(context, server, "notes")
    type_and_save(page, server, "notes", "Written online.")
    server.stop()
    expect(page.locator("#status")).not_to_have_attribute("data-status", "online")

    page.reload()  # the server is down: the service worker has the page and bundle
    expect(page.locator("#doc-name")).to_have_text("notes")
    wait_until(lambda: editor_text(page) == "Written online.")  # the IndexedDB copy
    page.locator(".cm-content").click()
    page.keyboard.press("ControlOrMeta+End")
    page.keyboard.type(" Written offline.")
    saved = page.locator("#saved")
    expect(saved).to_have_text("Not saved — offline, kept in this browser")

    server.start()
    expect(page.locator("#status")).to_have_attribute("data-status", "online")
    expect(saved).to_have_text("Saved")
    wait_until(lambda: text_of(server, "notes") == "Written online. Written offline.")


def delete_while_stopped(server: ServerProcess, name: str) -> None:
    """Delete ``name`` from the stopped server's data directory, through the store."""

    async def delete() -> None:
        store = FileStore(server.data_dir)
        with store.lock():
            try:
                assert await store.log(name).delete()
            finally:
                await store.close()

    # Playwright's sync API keeps an event loop on this thread: run it on another.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, delete()).result(timeout=30)


@pytest.mark.parametrize("again", [False, True], ids=["deleted", "deleted-and-created-again"])
def test_a_document_deleted_while_the_page_was_offline_does_not_come_back(
    server: ServerProcess, context: Any, again: bool
) -> None:
    page = open_online(context, server, "gone")
    type_and_save(page, server, "gone", "Old text.")
    server.stop()
    expect(page.locator("#status")).not_to_have_attribute("data-status", "online")
    page.keyboard.type(" Typed offline.")
    delete_while_stopped(server, "gone")
    server.start()
    if again:  # someone else makes a new document of that name
        assert server.request("PUT", "/api/docs/gone/text", b"New text.") in (200, 204)

    # The page's copy belongs to the deleted document: refused, dropped, and said so.
    expect(page.locator("#status")).to_have_attribute("data-status", "refused")
    expect(page.locator("#banner")).to_contain_text("deleted")
    expect(page.locator("#saved")).to_have_text("Not saved")
    now = "New text." if again else ""
    assert (text_of(server, "gone") or "") == now  # empty ("" or 404) if not created again

    page.get_by_role("button", name="Reconnect").click()  # starts again from the server's
    expect(page.locator("#status")).to_have_attribute("data-status", "online")
    wait_until(lambda: editor_text(page) == now)
    assert (text_of(server, "gone") or "") == now  # (open, so it reads as empty)
    page.reload()
    expect(page.locator("#status")).to_have_attribute("data-status", "online")
    assert editor_text(page) == now


def test_a_tab_still_holding_a_deleted_copy_never_hands_it_to_a_fresh_tab(
    server: ServerProcess, context: Any
) -> None:
    stale = open_online(context, server, "gone")
    type_and_save(stale, server, "gone", "Old text.")
    fresh = open_online(context, server, "gone")  # a second tab: same IndexedDB, same tabs' channel
    wait_until(lambda: editor_text(fresh) == "Old text.")
    server.stop()
    delete_while_stopped(server, "gone")
    server.start()
    for tab in (stale, fresh):
        expect(tab.locator("#status")).to_have_attribute("data-status", "refused")

    fresh.get_by_role("button", name="Reconnect").click()  # the other tab stays as it is
    expect(fresh.locator("#status")).to_have_attribute("data-status", "online")
    type_and_save(fresh, server, "gone", "Fresh.")
    # Whatever this tab holds now (in memory and in IndexedDB) goes to the server on
    # its next connection: the deleted text must not be in it.
    fresh.reload()
    expect(fresh.locator("#status")).to_have_attribute("data-status", "online")
    type_and_save(fresh, server, "gone", "!")
    assert text_of(server, "gone") == "Fresh.!"
    assert editor_text(stale) == "Old text."  # refused, it kept its text on screen only
