"""The History panel in real Chromium: step back with the keyboard, see the changes, restore live.

Saves ``tests/artifacts/history.png`` (``docs/history.png``, the README's, is a copy of one).
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from .browser import ROOT, ServerProcess, open_as, require, wait_until

try:
    from playwright import sync_api
except ImportError:  # pragma: no cover
    require(False, "playwright is not installed: pip install -e '.[test]'", module=True)
expect = sync_api.expect

SECRET = "history-page-secret-0123456789abcdefgh"
TIMEOUT_MS = 15_000
expect.set_options(timeout=TIMEOUT_MS)
ARTIFACTS = ROOT / "tests" / "artifacts"

FIRST = "# Trip plan\n\n- Book the train\n- Pack light\n"
SECOND = "# Trip plan\n\n- Book the train (Friday, 9:12)\n- Pack light\n- Bring the map\n"
THIRD = SECOND + "\nBudget: 300 €\n"


def token(sub: str, mode: str = "rw") -> str:
    return str(jwt.encode({"sub": sub, "mode": mode, "exp": time.time() + 600}, SECRET, "HS256"))


def put(server: ServerProcess, text: str, sub: str) -> None:
    request = urllib.request.Request(
        f"{server.url}/api/docs/trip/text",
        data=text.encode(),
        method="PUT",
        headers={"Authorization": f"Bearer {token(sub)}"},
    )
    urllib.request.urlopen(request, timeout=5).close()


def versions(server: ServerProcess) -> list[dict[str, Any]]:
    status, body = server.get(f"/api/docs/trip/versions?token={token('reader', 'ro')}")
    assert status == 200, body
    return list(json.loads(body)["versions"])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    require((ROOT / "collab" / "static" / "editor.html").is_file(), "run `make web` first")
    with ServerProcess(tmp_path / "data", "--jwt-secret", SECRET, "--history-idle", "0.3") as proc:
        for count, (text, sub) in enumerate([(FIRST, "ann"), (SECOND, "bob"), (THIRD, "ann")], 1):
            put(proc, text, sub)
            wait_until(lambda count=count: len(versions(proc)) == count, timeout=10)
            if count == 1:  # name it
                request = urllib.request.Request(
                    f"{proc.url}/api/docs/trip/versions/{versions(proc)[0]['id']}",
                    data=json.dumps({"label": "First draft"}).encode(),
                    method="PATCH",
                    headers={"Authorization": f"Bearer {token(sub)}"},
                )
                with urllib.request.urlopen(request, timeout=5) as response:
                    assert response.status == 200
        yield proc
        proc.stop()


@pytest.fixture
def open_page(browser: Any, server: ServerProcess) -> Iterator[Callable[..., Any]]:
    contexts: list[Any] = []

    def open_(tok: str, user: dict[str, str], hash: str = "") -> Any:
        return open_as(browser, f"{server.url}/d/trip?token={tok}{hash}", user, contexts)

    yield open_
    for context in contexts:
        context.close()


def text_of(page: Any) -> str:
    return str(page.evaluate("collab.view.state.doc.toString()"))


def test_step_back_see_changes_restore_and_a_second_browser_sees_it(open_page, server):
    ann = open_page(token("ann"), {"name": "Ann Writer", "color": "#3e63dd"})
    bob = open_page(token("bob"), {"name": "Bob Reader", "color": "#e5484d"})
    page_text = THIRD
    wait_until(lambda: text_of(bob) == page_text)

    ann.get_by_role("button", name="History").click()
    slider = ann.get_by_label("Version (arrow keys step")
    expect(slider).to_be_focused()
    expect(ann.locator("#history-caption")).to_contain_text("Now")
    expect(ann.locator("#history-stars .star")).to_have_count(1)
    slider.press("Shift+ArrowLeft")  # jump to the named version
    expect(ann.locator("#history-caption")).to_contain_text("Version 1 of 3, ")
    expect(ann.locator("#history-caption")).to_contain_text("First draft")
    slider.press("End")  # back to now
    expect(ann.locator("#history-caption")).to_contain_text("Now")
    slider.press("ArrowLeft")  # the latest version (THIRD)
    slider.press("ArrowLeft")  # the one before: SECOND
    expect(ann.locator("#history-caption")).to_contain_text("Version 2 of 3")
    expect(ann.locator("#history-caption")).to_contain_text("bob")
    changed = ann.locator("#preview .cm-changedLine")
    expect(changed.first).to_be_visible()
    expect(ann.locator("#preview")).to_contain_text("Bring the map")
    expect(ann.locator("#preview .cm-changedText", has_text="Bring the map")).to_have_count(1)
    assert ann.evaluate("location.hash") == f"#version={versions(server)[1]['id']}"
    expect(ann.locator("#history-list .version[aria-current=true]")).to_contain_text("Edits")
    ARTIFACTS.mkdir(exist_ok=True)
    ann.screenshot(path=str(ARTIFACTS / "history.png"), animations="disabled")

    slider.press("ArrowLeft")  # FIRST
    expect(ann.locator("#history-caption")).to_contain_text("Version 1 of 3")
    ann.once("dialog", lambda dialog: dialog.accept())
    ann.get_by_role("button", name="Restore this version").click()
    expect(ann.locator("#history")).to_be_hidden()
    wait_until(lambda: text_of(bob) == FIRST)  # live, no reload
    wait_until(lambda: text_of(ann) == FIRST)
    assert bob.evaluate("collab.provider.wsconnected")
    listed = versions(server)
    assert [v["kind"] for v in listed[:2]] == ["restore", "pre-restore"]
    assert listed[0]["authors"][0]["user"] == "ann"

    ann.get_by_role("button", name="History").click()  # the restore is listed; undo it
    expect(ann.locator("#history-list .version").nth(1)).to_contain_text("Restored from")
    slider.press("ArrowLeft")
    slider.press("ArrowLeft")  # the version before the restore
    ann.once("dialog", lambda dialog: dialog.accept())
    ann.get_by_role("button", name="Restore this version").click()
    wait_until(lambda: text_of(bob) == THIRD)

    ann.get_by_role("button", name="History").click()  # name the current text
    ann.get_by_role("button", name="Name current version").click()
    field = ann.get_by_label("Version name")
    expect(field).to_be_focused()
    field.fill("Ready to go")
    field.press("Enter")
    expect(ann.locator("#history-list .version.named", has_text="Ready to go")).to_have_count(1)
    expect(ann.locator("#history-stars .star")).to_have_count(2)
    assert versions(server)[0]["label"] == "Ready to go"


def test_a_read_only_token_has_no_restore_and_a_deep_link_opens_a_version(open_page, server):
    first = versions(server)[-1]["id"]
    reader = open_page(
        token("carol", "ro"), {"name": "Carol", "color": "#30a46c"}, f"#version={first}"
    )
    expect(reader.locator("#history")).to_be_visible()
    expect(reader.locator("#history-caption")).to_contain_text("Version 1 of 3")
    expect(reader.locator("#preview")).to_contain_text("Pack light")
    expect(reader.get_by_role("button", name="Restore this version")).to_have_count(0)
    expect(reader.get_by_role("button", name="Name this version")).to_have_count(0)
    expect(reader.get_by_role("button", name="Copy text")).to_be_visible()
    reader.keyboard.press("Escape")
    expect(reader.locator("#history")).to_be_hidden()
    expect(reader.locator("#editor")).to_be_visible()
