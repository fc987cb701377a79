"""The Tornado application: routes for the editor, the API and the sync endpoint."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import tornado.web

from ..core import limits
from ..core.auth import Authorize, allow_all
from ..core.config import Config, check_base_path
from ..server.extensions import Extension
from ..server.hub import Hub
from ..server.tokens import JwtAuthorizer
from .api import (
    DocHandler,
    DocsHandler,
    HealthHandler,
    MetricsHandler,
    ReadyHandler,
    TextHandler,
)
from .clients import trusted_proxies
from .handler import YjsHandler
from .history_api import history_routes
from .logs import log_request
from .pages import EditorPageHandler, HomePageHandler, ServiceWorkerHandler, static_dir

__all__ = ["make_app", "routes"]


def routes(
    hub: Hub,
    prefix: str = "",
    authorize: Authorize = allow_all,
    allow_origins: tuple[str, ...] = (),
    extensions: Iterable[Extension] = (),
) -> list[tuple[str, type[tornado.web.RequestHandler], dict[str, Any]]]:
    """The sync endpoint and the document API, for mounting under ``prefix``.

    ``prefix`` is a path like ``"/collab"`` (no trailing slash); the sync
    endpoint is then ``{prefix}/ws/<name>``. ``extensions`` are added to the
    hub's (``Hub.use``), after those it already has.

    Raises:
        ValueError: ``hub.config.trusted_proxies`` holds a malformed network.
    """
    trusted_proxies(hub.config.trusted_proxies)  # a bad network fails here, not per request
    hub.use(*extensions)
    api = {"hub": hub, "authorize": authorize}
    ws = {**api, "allow_origins": allow_origins}
    return [
        (rf"{prefix}/ws/(.+)", YjsHandler, ws),
        (rf"{prefix}/api/docs", DocsHandler, api),
        *history_routes(prefix, api),
        (rf"{prefix}/api/docs/(.+)/text", TextHandler, api),
        (rf"{prefix}/api/docs/(.+)", DocHandler, api),
        (rf"{prefix}/healthz", HealthHandler, {}),
        (rf"{prefix}/readyz", ReadyHandler, {"hub": hub}),
        (rf"{prefix}/metrics", MetricsHandler, {"hub": hub}),
    ]


def make_app(
    config: Config | None = None, hub: Hub | None = None, extensions: Iterable[Extension] = ()
) -> tornado.web.Application:
    """The standalone server: editor pages, static assets, API and sync.

    Everything is served under ``config.base_path`` (``"/collab"``: the home
    page is ``/collab/``, the sync endpoint ``/collab/ws/<name>``).

    Raises:
        ValueError: a malformed ``base_path`` or ``trusted_proxies``, a JWT key
            that cannot be used (``JwtAuthorizer.from_config``), or bad webhook
            settings (``server.webhooks.Webhooks``).
    """
    config = config or Config()
    hub = hub or Hub(config)
    if config.webhooks:  # --webhook: the extension with Tornado's HTTP client
        from .webhooks import webhooks

        extensions = [webhooks(hub, config), *extensions]
    authorize: Authorize = JwtAuthorizer.from_config(config) or allow_all
    static = Path(config.web_dir) if config.web_dir else static_dir()
    base = check_base_path(config.base_path)
    prefix = re.escape(base)
    pages = {"static": static, "base": base}
    handlers: list[Any] = [
        (rf"{prefix}/", HomePageHandler, pages),
        (rf"{prefix}/d/(.+)", EditorPageHandler, pages),
        (rf"{prefix}/sw\.js", ServiceWorkerHandler, pages),
        *routes(hub, prefix, authorize, config.allow_origins, extensions),
    ]
    if base:
        handlers.append((prefix, tornado.web.RedirectHandler, {"url": base + "/"}))
    app = tornado.web.Application(
        handlers,
        static_path=str(static),
        static_url_prefix=f"{base}/static/",
        collab_trusted_proxies=config.trusted_proxies,  # for handlers without a hub
        compress_response=True,
        log_function=log_request,  # the access log, token-free, with fields for JSON
        websocket_ping_interval=config.ping_interval or None,
        websocket_ping_timeout=config.ping_timeout or None,
        websocket_max_message_size=limits.message_bound(config),
    )
    return app
