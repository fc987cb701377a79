"""The home page offers Delete only to an admin token (Chromium, a real server process)."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from .browser import ROOT, ServerProcess, require

try:
    from playwright import sync_api
except ImportError:  # pragma: no cover
    require(False, "playwright is not installed: pip install -e '.[test]'", module=True)
expect = sync_api.expect

SECRET = "role-page-secret-" * 3
TIMEOUT_MS = 15_000


def token(**claims: Any) -> str:
    return jwt.encode({"sub": "alice", "exp": time.time() + 600, **claims}, SECRET, "HS256")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    static = ROOT / "collab" / "static" / "index.html"
    require(static.is_file(), "the editor bundle is not built: run `make web`")
    with ServerProcess(tmp_path / "data", "--jwt-secret", SECRET) as proc:
        request = urllib.request.Request(
            f"{proc.url}/api/docs/plans/text",
            data=b"the plan",
            method="PUT",
            headers={"Authorization": f"Bearer {token()}"},
        )
        urllib.request.urlopen(request, timeout=5).close()
        yield proc
        proc.stop()


@pytest.fixture
def page(browser: Any, server: ServerProcess) -> Iterator[Any]:
    context = browser.new_context()
    context.set_default_timeout(TIMEOUT_MS)
    yield context.new_page()
    context.close()


def test_delete_is_offered_to_an_admin_token_only(page: Any, server: ServerProcess) -> None:
    page.goto(f"{server.url}/?token={token()}")  # rw: may edit, may not delete
    row = page.locator("#docs-body tr", has_text="plans")
    expect(row).to_contain_text("nobody")
    expect(row.get_by_role("button")).to_have_count(0)
    expect(page.get_by_role("button", name="Delete plans")).to_have_count(0)

    page.goto(f"{server.url}/?token={token(admin=True)}")
    row = page.locator("#docs-body tr", has_text="plans")
    row.get_by_role("button", name="Delete plans").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete").click()
    expect(row).to_have_count(0)
    status, _ = server.get(f"/api/docs/plans/text?token={token()}")
    assert status == 404
