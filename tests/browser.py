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
