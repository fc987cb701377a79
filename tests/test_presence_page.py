"""Presence on the editor page shows the identity the server verified (``user.sub``).

Real headless Chromium (Playwright) against real server processes: with
``--jwt-secret``, each person's token ``sub`` appears after their name in the
presence list and on their caret, whatever their page claims; without access
control no sub is ever shown, since only the client could have set it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jwt
import pytest

from .browser import ROOT, ServerProcess, open_as, require

try:
    from playwright import sync_api
except ImportError:  # pragma: no cover
    require(False, "playwright is not installed: pip install -e '.[test]'", module=True)
expect = sync_api.expect

STATIC = ROOT / "collab" / "static"
SECRET = "s3cret-for-the-presence-page-test-0123456789"
TIMEOUT_MS = 15_000
expect.set_options(timeout=TIMEOUT_MS)

ANN = {"name": "Ann Example", "color": "#3e63dd"}
BOB = {"name": "Bob Example", "color": "#e5484d"}
CAROL = {"name": "Carol Reader", "color": "#30a46c"}


def token(sub: str, mode: str = "rw") -> str:
    claims = {"sub": sub, "docs": ["team/*"], "mode": mode, "exp": time.time() + 600}
    return str(jwt.encode(claims, SECRET, algorithm="HS256"))


def start_server(data_dir: Path, *extra: str) -> ServerProcess:
    require((STATIC / "editor.html").is_file(), "the editor bundle is not built: run `make web`")
    server = ServerProcess(data_dir, *extra)
    server.start()
    return server


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_server(tmp_path_factory.mktemp("presence-jwt"), "--jwt-secret", SECRET)
    yield server
    server.stop()


@pytest.fixture
def open_editor(browser: Any) -> Iterator[Callable[..., Any]]:
    """``open_editor(server, name, user, query="")``: a page in its own browser context."""
    contexts: list[Any] = []

    def open_(server: ServerProcess, name: str, user: dict[str, str], query: str = "") -> Any:
        url = f"{server.url}/d/{quote(name, safe='')}{query}"
        return open_as(browser, url, user, contexts, height=640)

    yield open_
    for context in contexts:
        context.close()


def person(page: Any, user: dict[str, str]) -> Any:
    return page.locator("#presence .person", has_text=user["name"])


def caret_label(page: Any, user: dict[str, str]) -> Any:
    return page.locator(".cm-ySelectionInfo", has_text=user["name"])


def put_caret(page: Any) -> None:
    """Focus the editor and move the caret, so the page publishes a cursor."""
    page.locator(".cm-content").focus()
    page.keyboard.press("Control+End")


def claim(page: Any, **user: str) -> None:
    """Change this page's own awareness ``user`` fields, as a tampering client could."""
    page.evaluate(
        "fields => collab.awareness.setLocalStateField('user',"
        " { ...collab.awareness.getLocalState().user, ...fields })",
        user,
    )


def test_each_person_sees_the_others_verified_sub(
    open_editor: Callable[..., Any], secured: ServerProcess
) -> None:
    name = "team/presence"
    ann = open_editor(secured, name, ANN, f"?token={token('ann')}")
    bob = open_editor(secured, name, BOB, f"?token={token('bob')}")
    for page, other, sub in ((ann, BOB, "bob"), (bob, ANN, "ann")):
        expect(page.locator("#presence .person")).to_have_count(2)
        badge = person(page, other).locator(".verified")
        expect(badge).to_have_text(re.compile(rf"^✓\s*signed in as {sub}$"))
        expect(badge).to_be_visible()
        expect(person(page, other)).to_have_attribute(
            "title", f"{other['name']} (signed in as {sub})"
        )
        # Only what the server stamped: the page's own state carries no sub.
        expect(
            page.locator("#presence .person", has_text="(you)").locator(".verified")
        ).to_have_count(0)
    label = re.compile(rf"People here: .*{ANN['name']} \(signed in as ann\)")
    expect(bob.locator("#presence")).to_have_attribute("aria-label", label)

    put_caret(bob)
    put_caret(ann)
    expect(caret_label(ann, BOB).locator(".cm-ySelectionSub")).to_have_text("✓ bob")
    expect(caret_label(bob, ANN).locator(".cm-ySelectionSub")).to_have_text("✓ ann")


def test_a_claimed_sub_is_overwritten_by_the_server(
    open_editor: Callable[..., Any], secured: ServerProcess
) -> None:
    name = "team/forgery"
    ann = open_editor(secured, name, ANN, f"?token={token('ann')}")
    bob = open_editor(secured, name, BOB, f"?token={token('bob')}")
    put_caret(bob)
    claim(bob, name="Bob Forger", sub="ann")  # pretends to be ann
    forger = {"name": "Bob Forger"}
    expect(person(ann, forger).locator(".verified")).to_have_text(re.compile(r"signed in as bob$"))
    expect(caret_label(ann, forger).locator(".cm-ySelectionSub")).to_have_text("✓ bob")
    expect(ann.locator("#presence .verified", has_text="ann")).to_have_count(0)


def test_a_read_only_reader_is_shown_with_its_sub(
    open_editor: Callable[..., Any], secured: ServerProcess
) -> None:
    name = "team/readers"
    ann = open_editor(secured, name, ANN, f"?token={token('ann')}")
    carol = open_editor(secured, name, CAROL, f"?token={token('carol', mode='ro')}")
    expect(carol.locator("#read-only")).to_be_visible()
    expect(person(ann, CAROL).locator(".verified")).to_have_text(re.compile(r"signed in as carol$"))


def test_without_access_control_no_sub_is_shown(
    open_editor: Callable[..., Any], tmp_path: Path
) -> None:
    server = start_server(tmp_path / "data")
    try:
        ann = open_editor(server, "open doc", ANN)
        bob = open_editor(server, "open doc", BOB)
        put_caret(bob)
        claim(bob, name="Bob Claims", sub="admin")  # nobody checks: so nobody shows it
        claimer = {"name": "Bob Claims"}
        expect(person(ann, claimer)).to_be_visible()
        expect(caret_label(ann, claimer)).to_be_visible()
        expect(ann.locator("#presence .verified")).to_have_count(0)
        expect(ann.locator(".cm-ySelectionSub")).to_have_count(0)
        expect(person(ann, claimer)).to_have_attribute("title", "Bob Claims")
    finally:
        server.stop()
