"""The Tornado application: routes for the editor, the API and the sync endpoint."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import tornado.web

from ..core.auth import Authorize, allow_all
from ..core.config import Config
from ..server.extensions import Extension
from ..server.hub import Hub
from ..server.tokens import JwtAuthorizer
from .api import DocHandler, DocsHandler, HealthHandler, MetricsHandler, TextHandler
from .handler import YjsHandler
from .pages import EditorPageHandler, HomePageHandler, static_dir

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
    """
    hub.use(*extensions)
    api = {"hub": hub, "authorize": authorize}
    ws = {**api, "allow_origins": allow_origins}
    return [
        (rf"{prefix}/ws/(.+)", YjsHandler, ws),
        (rf"{prefix}/api/docs", DocsHandler, api),
        (rf"{prefix}/api/docs/(.+)/text", TextHandler, api),
        (rf"{prefix}/api/docs/(.+)", DocHandler, api),
        (rf"{prefix}/healthz", HealthHandler, {}),
        (rf"{prefix}/metrics", MetricsHandler, {"hub": hub}),
    ]


def make_app(
    config: Config | None = None, hub: Hub | None = None, extensions: Iterable[Extension] = ()
) -> tornado.web.Application:
    """The standalone server: editor pages, static assets, API and sync."""
    config = config or Config()
    hub = hub or Hub(config)
    authorize: Authorize = JwtAuthorizer(config.jwt_secret) if config.jwt_secret else allow_all
    static = Path(config.web_dir) if config.web_dir else static_dir()
    pages = {"static": static}
    handlers: list[Any] = [
        (r"/", HomePageHandler, pages),
        (r"/d/(.+)", EditorPageHandler, pages),
        *routes(hub, "", authorize, config.allow_origins, extensions),
    ]
    app = tornado.web.Application(
        handlers,
        static_path=str(static),
        static_url_prefix="/static/",
        compress_response=True,
        websocket_ping_interval=config.ping_interval or None,
        websocket_ping_timeout=config.ping_timeout or None,
        websocket_max_message_size=config.max_message_bytes,
    )
    return app
