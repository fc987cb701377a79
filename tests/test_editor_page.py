"""The editor pages in real headless Chromium (Playwright), against a real server process.

Covers web/ (built into collab/static/ by ``make``) and ``collab/pages.py``: two
people typing at once converge, carets and presence, a server restart with edits
made while it was down, reload and local-only undo, a Node y-websocket peer, and
a screenshot of two people editing (tests/artifacts/editor-two-users.png).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jwt
import pytest

from .browser import ROOT, ServerProcess, require, wait_until

try:
    from playwright import sync_api
except ImportError:  # pragma: no cover
    require(False, "playwright is not installed: pip install -e '.[test]'", module=True)
expect = sync_api.expect

ARTIFACTS = ROOT / "tests" / "artifacts"
STATIC = ROOT / "collab" / "static"
PEER = ROOT / "tests" / "js" / "editor_peer.mjs"
TIMEOUT_MS = 15_000
expect.set_options(timeout=TIMEOUT_MS)

ALICE = {"name": "Alice Liddell", "color": "#3e63dd"}
BOB = {"name": "Bob Builder", "color": "#e5484d"}

SAMPLE = """# Launch checklist

Everything we need before **Friday**. Edit freely: changes show up live.

## Open questions
- Who writes the *release notes*?
- Do we ship the `dark theme` on day one?

> Tip: press Ctrl+Z to undo only your own edits.
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    require((STATIC / "editor.html").is_file(), "the editor bundle is not built: run `make web`")
    proc = ServerProcess(tmp_path_factory.mktemp("editor-data"))
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def open_editor(browser: Any, server: ServerProcess) -> Iterator[Callable[..., Any]]:
    """``open_editor(name, user)``: a page in a new browser context (its own storage).

    On teardown, checks that no page asked anything of another origin.
    """
    contexts: list[Any] = []
    requested: list[str] = []

    def open_(name: str, user: dict[str, str], context: Any = None) -> Any:
        if context is None:
            context = browser.new_context(viewport={"width": 1180, "height": 640})
            context.set_default_timeout(TIMEOUT_MS)
            saved = json.dumps(json.dumps(user))  # kept across reloads, like a real profile
            key = "'collab.user'"
            context.add_init_script(
                f"localStorage.getItem({key}) || localStorage.setItem({key}, {saved})"
            )
            context.on("request", lambda request: requested.append(request.url))
            contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: pytest.fail(f"page error: {exc}"))
        page.on("websocket", lambda ws: requested.append(ws.url))
        page.goto(f"{server.url}/d/{quote(name, safe='')}")
        expect(page.locator("#status")).to_have_attribute("data-status", "online")
        return page

    yield open_
    for context in contexts:
        context.close()
    local = (f"{server.url}/", f"ws://127.0.0.1:{server.port}/ws/", "data:", "blob:")
    assert [url for url in requested if not url.startswith(local)] == []
    assert requested


def editor_text(page: Any) -> str:
    return str(page.evaluate("collab.view.state.doc.toString()"))


def wait_text(page: Any, text: str) -> None:
    """Wait until the page's editor shows exactly ``text``."""
    page.wait_for_function("t => collab.view.state.doc.toString() === t", arg=text)


def rest_text(server: ServerProcess, name: str) -> str:
    status, body = server.get(f"/api/docs/{quote(name, safe='')}/text")
    assert status == 200, (status, body)
    return body.decode()


def put_text(server: ServerProcess, name: str, text: str) -> None:
    assert server.request("PUT", f"/api/docs/{quote(name, safe='')}/text", text.encode()) == 204


def go_to(page: Any, line: int, column: int | None = None) -> None:
    """Move the caret with the keyboard: start of the document, down, then right or End."""
    page.locator(".cm-content").focus()
    page.keyboard.press("Control+Home")
    for _ in range(line):
        page.keyboard.press("ArrowDown")
    if column is None:
        page.keyboard.press("End")
    else:
        for _ in range(column):
            page.keyboard.press("ArrowRight")


def type_together(a: Any, a_text: str, b: Any, b_text: str) -> None:
    """Type two texts word by word, alternating pages, without waiting for sync."""
    a_words, b_words = a_text.split(" "), b_text.split(" ")
    for i in range(max(len(a_words), len(b_words))):
        for page, words in ((a, a_words), (b, b_words)):
            if i < len(words):
                page.keyboard.type(words[i] + (" " if i < len(words) - 1 else ""))


def test_concurrent_typing_converges(
    open_editor: Callable[..., Any], server: ServerProcess
) -> None:
    name = "concurrent notes/ünïcode ✓"
    put_text(server, name, "Alpha line.\nBravo line.\n")
    alice, bob = open_editor(name, ALICE), open_editor(name, BOB)
    wait_text(alice, "Alpha line.\nBravo line.\n")
    wait_text(bob, "Alpha line.\nBravo line.\n")

    go_to(alice, 0)  # end of line 1
    go_to(bob, 1)  # end of line 2
    type_together(alice, " Alice was here first.", bob, " Bob wrote this one.")
    go_to(alice, 1, 5)  # line 2, after "Bravo"
    go_to(bob, 0, 5)  # line 1, after "Alpha"
    type_together(alice, " (middle by Alice)", bob, " (middle by Bob)")

    expected = (
        "Alpha (middle by Bob) line. Alice was here first.\n"
        "Bravo (middle by Alice) line. Bob wrote this one.\n"
    )
    wait_text(alice, expected)
    wait_text(bob, expected)
    wait_until(lambda: rest_text(server, name) == expected)

    with alice.expect_download() as info:
        alice.get_by_label("Download", exact=True).click()
        alice.get_by_role("button", name="Markdown (.md)").click()
    assert info.value.suggested_filename == "concurrent notes_ünïcode ✓.md"
    assert Path(info.value.path()).read_text() == expected

    alice.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    alice.get_by_role("button", name="Copy link to this document").click()
    expect(alice.locator("#toast")).to_have_text("Link copied")
    link = alice.evaluate("navigator.clipboard.readText()")
    assert link == f"{server.url}/d/{quote(name, safe='')}"


def test_presence_and_remote_carets(open_editor: Callable[..., Any], server: ServerProcess) -> None:
    name = "launch checklist"
    put_text(server, name, SAMPLE)
    alice, bob = open_editor(name, ALICE), open_editor(name, BOB)
    go_to(alice, 2)
    alice.keyboard.type(" Thanks!")
    go_to(bob, 5)
    bob.keyboard.type(" Bob?")
    for _ in range(3):
        bob.keyboard.press("Control+Shift+ArrowLeft")  # a selection, drawn in Bob's colour

    for page, other in ((alice, BOB), (bob, ALICE)):
        caret = page.locator(".cm-ySelectionInfo", has_text=other["name"])
        expect(caret).to_be_visible()
        people = page.locator("#presence .person")
        expect(people).to_have_count(2)
        for user in (ALICE, BOB):
            expect(people.filter(has_text=user["name"])).to_have_count(1)
    expect(alice.locator("#presence .person").first).to_contain_text("(you)")
    expect(alice.locator("#presence-count")).to_have_text("2 here")

    expect(alice.get_by_role("button", name="Copy link to this document")).to_be_enabled()
    expect(alice.get_by_role("textbox", name=f"Text of {name}")).to_be_visible()

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    alice.screenshot(path=str(ARTIFACTS / "editor-two-users.png"), animations="disabled")
    alice.emulate_media(color_scheme="dark")
    alice.screenshot(path=str(ARTIFACTS / "editor-two-users-dark.png"), animations="disabled")

    # Bob renames himself: Alice's view follows, and Bob's browser remembers it.
    bob.get_by_role("button", name=re.compile("Your name and colour")).click()
    expect(bob.get_by_label("Your name, as others see it")).to_be_focused()
    bob.keyboard.type("Robert the Builder")  # replaces the selected old name
    bob.get_by_role("button", name="Green").click()
    bob.keyboard.press("Escape")
    expect(bob.locator("#me-panel")).to_be_hidden()
    expect(alice.locator(".cm-ySelectionInfo", has_text="Robert the Builder")).to_be_visible()
    robert = alice.locator("#presence .person", has_text="Robert the Builder")
    expect(robert).to_have_attribute("style", re.compile("#30a46c"))
    expect(alice.locator("#presence .person", has_text=BOB["name"])).to_have_count(0)
    bob.reload()
    expect(bob.locator("#me-button")).to_have_text(re.compile("Robert the Builder"))


def test_server_restart_keeps_offline_edits(
    open_editor: Callable[..., Any], server: ServerProcess
) -> None:
    name = "restart"
    put_text(server, name, "Before the restart.\n")
    alice, bob = open_editor(name, ALICE), open_editor(name, BOB)
    wait_text(bob, "Before the restart.\n")

    server.stop()
    for page in (alice, bob):
        expect(page.locator("#status")).to_have_attribute("data-status", "offline")
        expect(page.locator("#status")).to_contain_text("Offline")
    go_to(alice, 1)
    alice.keyboard.type("Alice, offline.\n")
    go_to(bob, 0, 0)
    bob.keyboard.type("Bob, offline. ")
    server.start()

    expected = "Bob, offline. Before the restart.\nAlice, offline.\n"
    for page in (alice, bob):
        expect(page.locator("#status")).to_have_attribute("data-status", "online")
        wait_text(page, expected)
    wait_until(lambda: rest_text(server, name) == expected)


# Resolves once every IndexedDB write queued before it has committed: a read-only
# transaction waits for earlier read-write transactions on the same store.
IDB_FLUSHED = """name => new Promise((resolve, reject) => {
  const open = indexedDB.open(name)
  open.onerror = () => reject(open.error)
  open.onsuccess = () => {
    const tx = open.result.transaction(['updates'], 'readonly')
    tx.objectStore('updates').count()
    tx.oncomplete = () => { open.result.close(); resolve(true) }
    tx.onerror = () => reject(tx.error)
  }
})"""


def test_offline_edits_survive_closing_the_tab(
    open_editor: Callable[..., Any], server: ServerProcess
) -> None:
    name = "closed while offline"
    put_text(server, name, "Typed online.")
    alice = open_editor(name, ALICE)
    wait_text(alice, "Typed online.")

    server.stop()
    expect(alice.locator("#status")).to_have_attribute("data-status", "offline")
    go_to(alice, 0)
    alice.keyboard.type(" Typed offline.")
    assert alice.evaluate(IDB_FLUSHED, f"collab:{name}")
    context = alice.context
    alice.close()
    server.start()
    assert rest_text(server, name) == "Typed online."  # only the browser has the edit

    again = open_editor(name, ALICE, context)  # same browser profile: same IndexedDB
    wait_text(again, "Typed online. Typed offline.")
    wait_until(lambda: rest_text(server, name) == "Typed online. Typed offline.")


def test_reload_keeps_content_and_undo_is_local(
    open_editor: Callable[..., Any], server: ServerProcess
) -> None:
    name = "undo"
    alice, bob = open_editor(name, ALICE), open_editor(name, BOB)
    go_to(alice, 0)
    alice.keyboard.type("Mine. ")
    wait_text(bob, "Mine. ")
    go_to(bob, 0)
    bob.keyboard.type("Theirs.")
    wait_text(alice, "Mine. Theirs.")

    alice.keyboard.press("Control+z")
    wait_text(alice, "Theirs.")
    wait_text(bob, "Theirs.")
    alice.keyboard.press("Control+Shift+Z")
    wait_text(bob, "Mine. Theirs.")

    alice.reload()
    expect(alice.locator("#status")).to_have_attribute("data-status", "online")
    wait_text(alice, "Mine. Theirs.")
    expect(alice.locator(".cm-content")).to_contain_text("Mine. Theirs.")
    assert rest_text(server, name) == "Mine. Theirs."


def test_node_peer_edits_show_live(open_editor: Callable[..., Any], server: ServerProcess) -> None:
    node = shutil.which("node")
    require(node is not None, "node is not installed")
    require((PEER.parent / "node_modules" / "y-websocket").is_dir(), "run `make install-test`")
    name = "node peer"
    put_text(server, name, "From the browser.")
    alice = open_editor(name, ALICE)
    with subprocess.Popen(
        [
            str(node),
            str(PEER),
            f"ws://127.0.0.1:{server.port}/ws",
            name,
            "Node Peer",
            " From Node.",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as peer:
        try:
            assert peer.stdout is not None
            assert json.loads(peer.stdout.readline()) == {"event": "synced"}
            wait_text(alice, "From the browser. From Node.")
            expect(alice.locator("#presence .person", has_text="Node Peer")).to_be_visible()
            expect(alice.locator(".cm-ySelectionInfo", has_text="Node Peer")).to_be_visible()
        finally:
            assert peer.stdin is not None
            peer.stdin.close()
            assert peer.wait(10) == 0
    expect(alice.locator("#presence .person", has_text="Node Peer")).to_have_count(0)


def test_home_lists_opens_and_deletes(
    open_editor: Callable[..., Any], server: ServerProcess, browser: Any
) -> None:
    put_text(server, "home listed", "Some text.")
    watcher = open_editor("home listed", BOB)
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    try:
        home = context.new_page()
        home.goto(server.url + "/")
        row = home.locator("#docs-body tr", has_text="home listed")
        expect(row.locator("td").first).to_have_text(re.compile(r"^\d+(\.\d)? [KM]?B$"))
        expect(row).to_contain_text("1 person")

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        home.screenshot(path=str(ARTIFACTS / "home.png"), animations="disabled")

        home.get_by_label("Open or create a document").fill("brand new/doc")
        home.keyboard.press("Enter")
        expect(home).to_have_url(f"{server.url}/d/brand%20new%2Fdoc")
        expect(home.locator("#doc-name")).to_have_text("brand new/doc")
        expect(home.locator("#status")).to_have_attribute("data-status", "online")
        home.go_back()

        row.get_by_role("button", name="Delete home listed").click()
        home.get_by_role("button", name="Cancel").click()
        expect(row).to_be_visible()
        row.get_by_role("button", name="Delete home listed").click()
        home.get_by_role("dialog").get_by_role("button", name="Delete").click()
        expect(row).to_have_count(0)
        assert server.get("/api/docs/home%20listed/text")[0] == 404
        # The open editor is told (close code 4404) and stops retrying.
        expect(watcher.locator("#banner")).to_contain_text("deleted")
        expect(watcher.locator("#status")).to_have_attribute("data-status", "refused")
    finally:
        context.close()


def test_token_from_the_page_url(browser: Any, tmp_path: Any) -> None:
    secret = "s3cret-for-the-editor-page-test-0123456789"
    server = ServerProcess(tmp_path / "data", "--jwt-secret", secret)
    server.start()
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)

    def token(docs: list[str], mode: str = "rw") -> str:
        claims = {"sub": "alice", "docs": docs, "mode": mode, "exp": time.time() + 600}
        return str(jwt.encode(claims, secret, algorithm="HS256"))

    try:
        page = context.new_page()
        page.goto(f"{server.url}/d/secret%20plans?token={token(['secret*'])}")
        expect(page.locator("#status")).to_have_attribute("data-status", "online")
        page.locator(".cm-content").focus()
        page.keyboard.type("Top secret.")
        wait_until(
            lambda: (
                server.get("/api/docs/secret%20plans/text?token=" + token(["*"]))
                == (200, b"Top secret.")
            )
        )

        # The home page lists with the token and hands it on to the editor.
        page.goto(f"{server.url}/?token={token(['secret*'])}")
        page.get_by_role("link", name="secret plans").click()
        expect(page.locator("#status")).to_have_attribute("data-status", "online")
        assert "token=" in page.url

        page.goto(f"{server.url}/d/secret%20plans?token={token(['*'], 'ro')}")
        expect(page.locator("#status")).to_have_attribute("data-status", "online")
        expect(page.locator("#read-only")).to_be_visible()
        expect(page.locator(".cm-content")).to_have_attribute("contenteditable", "false")
        wait_text(page, "Top secret.")

        for query, message in (
            ("", "not signed in"),
            (f"?token={token(['other'])}", "does not allow"),
        ):
            page.goto(f"{server.url}/d/secret%20plans{query}")
            expect(page.locator("#banner")).to_contain_text(message)
            expect(page.locator("#status")).to_have_attribute("data-status", "refused")
    finally:
        context.close()
        server.stop()


def test_reconnect_delays_grow_with_jitter() -> None:
    node = shutil.which("node")
    require(node is not None, "node is not installed")
    script = (
        "import { backoffDelay } from './web/src/connection.js';"
        "const rows = [];"
        "for (let a = 0; a < 9; a++) rows.push(Array.from({ length: 200 }, () => backoffDelay(a)));"
        "console.log(JSON.stringify(rows))"
    )
    out = subprocess.run(
        [str(node), "--input-type=module", "-e", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    for attempt, delays in enumerate(json.loads(out.stdout)):
        cap = min(10_000, 400 * 2**attempt)
        assert cap / 2 <= min(delays) and max(delays) <= cap, (attempt, min(delays), max(delays))
        assert len(set(delays)) > 50, "the same delay for every client: no jitter"


def test_pages_are_locked_to_this_server(server: ServerProcess) -> None:
    with urllib.request.urlopen(f"{server.url}/d/some%20doc") as res:
        headers = res.headers
        assert b'<main id="editor"' in res.read()
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Cache-Control"] == "no-cache"
    assert server.get("/d/bad%00name")[0] == 400
