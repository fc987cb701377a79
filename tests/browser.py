"""Browser-test helpers: Debian's Chromium through Playwright.

Playwright cannot download its own browsers here, so the tests drive the system
Chromium (``apt-get install chromium``). Without it they skip, except in CI
(``CI`` set), where a missing browser must fail loudly rather than pass quietly.
``ServerProcess`` (``tests/server.py``) and ``wait_until`` (``tests/wait.py``
``eventually_sync``) are re-exported for the browser tests.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from .needs import require
from .server import ROOT, ServerProcess
from .wait import eventually_sync as wait_until

__all__ = [
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "ROOT",
    "ServerProcess",
    "launch_chromium",
    "open_as",
    "require",
    "wait_until",
]

CHROMIUM = os.environ.get("COLLAB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def launch_chromium(playwright: Any) -> Any:
    """Launch headless system Chromium, or skip (fail in CI) when it is missing."""
    require(
        Path(CHROMIUM).is_file() or shutil.which(CHROMIUM) is not None,
        f"Chromium not found at {CHROMIUM}: apt-get install chromium",
    )
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)


def sync_playwright() -> Any:
    """Playwright's sync API (a context manager), or skip (fail in CI) without Playwright."""
    try:
        from playwright.sync_api import sync_playwright as start
    except ImportError:  # pragma: no cover - the test extra installs it
        require(False, "Playwright is not installed: run `make install-test`")
        raise
    return start()


def open_as(
    browser: Any,
    url: str,
    user: dict[str, str],
    contexts: list[Any],
    width: int = 1280,
    height: int = 720,
    timeout_ms: int = 15_000,
) -> Any:
    """Open ``url`` as ``user`` (name and colour in localStorage) in a new browser context.

    The context is appended to ``contexts`` for the caller to close. Returns the
    page once its status is "online"; a page error fails the test.
    """
    import json

    import pytest
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": width, "height": height})
    context.set_default_timeout(timeout_ms)
    saved = json.dumps(json.dumps(user))
    context.add_init_script(f"localStorage.setItem('collab.user', {saved})")
    contexts.append(context)
    page = context.new_page()
    page.on("pageerror", lambda exc: pytest.fail(f"page error: {exc}"))
    page.goto(url)
    expect(page.locator("#status")).to_have_attribute("data-status", "online", timeout=timeout_ms)
    return page
