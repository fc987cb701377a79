"""The editor's HTML pages, served from the built bundle in ``collab/static``.

The pages are templates with one variable: ``__COLLAB_BASE__`` becomes the
server's base path (``""`` or ``"/collab"``), in the static asset URLs and in
``<meta name="collab-base">``, from which the scripts build every other URL.

``<base>/sw.js`` is the pages' service worker (``web/src/sw.js``): served from
the base path itself so that its scope is ``<base>/`` (a worker controls only
the URLs under its own script's folder), never cached without asking the server
again (``no-cache``), so a new build replaces it at the next visit.
"""

from __future__ import annotations

import html
from pathlib import Path

from ..core import names
from ..core.errors import BadName
from .logs import TokenSafeLogs

__all__ = ["EditorPageHandler", "HomePageHandler", "ServiceWorkerHandler", "static_dir"]


def static_dir() -> Path:
    """Where ``make`` puts the built editor (inside the package, so wheels ship it)."""
    return Path(__file__).parent.parent / "static"


_FALLBACK = b"""<!doctype html><meta charset="utf-8"><title>collab</title>
<h1>collab</h1><p>The editor bundle is not built: run <code>make run</code>.</p>
<p>Documents are listed at <a href="__COLLAB_BASE__/api/docs">__COLLAB_BASE__/api/docs</a>.</p>"""
_BASE = b"__COLLAB_BASE__"


# The pages load nothing from other origins: scripts, styles and the sync
# socket all come from this server. Styles stay inline-capable because
# CodeMirror injects its own and remote carets carry their colour inline.
_CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
    ]
)


class _PageHandler(TokenSafeLogs):  # page URLs may carry ?token=
    page = "index.html"

    def initialize(self, static: Path, base: str = "") -> None:
        self.static = static
        self.base = html.escape(base).encode()  # check_base_path allows nothing to escape

    def _serve_page(self) -> None:
        path = self.static / self.page
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("Content-Security-Policy", _CSP)
        self.set_header("X-Content-Type-Options", "nosniff")
        # A page URL may carry ?token=: never send it along as a Referer.
        self.set_header("Referrer-Policy", "no-referrer")
        page = path.read_bytes() if path.is_file() else _FALLBACK
        self.finish(page.replace(_BASE, self.base))


class HomePageHandler(_PageHandler):
    """``GET /``: the document list."""

    def get(self) -> None:
        self._serve_page()


class EditorPageHandler(_PageHandler):
    """``GET /d/<name>``: the editor for one document."""

    page = "editor.html"

    def get(self, name: str) -> None:
        try:
            names.validate(name)
        except BadName as exc:
            self.set_status(400)
            self.finish(html.escape(exc.reason))
            return
        self._serve_page()


class ServiceWorkerHandler(TokenSafeLogs):
    """``GET <base>/sw.js``: the service worker that keeps the pages for offline use."""

    def initialize(self, static: Path, base: str = "") -> None:
        self.static = static

    def get(self) -> None:
        path = self.static / "sw.js"
        if not path.is_file():
            self.set_status(404)
            self.finish("the editor bundle is not built: run `make run`")
            return
        self.set_header("Content-Type", "text/javascript; charset=utf-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.finish(path.read_bytes())
