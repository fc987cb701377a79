"""collab: a real-time collaborative editing server speaking the Yjs protocol.

Embedding::

    hub = collab.Hub(collab.Config(data_dir="./data"))
    app = tornado.web.Application([*my_routes, *collab.routes(hub, prefix="/collab")])
    server = collab.listen(app, hub.config, hub)  # in the event loop; later: await server.close()

The package is in rings, imports pointing inward only: ``collab.core`` (pure
rules), ``collab.storage`` (where documents live), ``collab.server`` (asyncio)
and ``collab.tornado`` (the web shell). The names below are imported on first
use, so ``import collab.core.protocol`` loads no web framework.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .core.auth import Permission
    from .core.config import Config
    from .core.errors import CollabError, Forbidden, Unauthorized
    from .server.extensions import Extension
    from .server.hub import Hub
    from .server.tokens import JwtAuthorizer
    from .tornado.app import make_app, routes
    from .tornado.handler import YjsHandler
    from .tornado.listener import Server, listen
    from .tornado.webhooks import webhooks

__all__ = [
    "CollabError",
    "Config",
    "Extension",
    "Forbidden",
    "Hub",
    "JwtAuthorizer",
    "Permission",
    "Server",
    "Unauthorized",
    "YjsHandler",
    "listen",
    "make_app",
    "routes",
    "webhooks",
]
__version__ = "0.1.0"

_HOMES = {
    "CollabError": ".core.errors",
    "Config": ".core.config",
    "Extension": ".server.extensions",
    "Forbidden": ".core.errors",
    "Hub": ".server.hub",
    "JwtAuthorizer": ".server.tokens",
    "Permission": ".core.auth",
    "Server": ".tornado.listener",
    "Unauthorized": ".core.errors",
    "YjsHandler": ".tornado.handler",
    "listen": ".tornado.listener",
    "make_app": ".tornado.app",
    "routes": ".tornado.app",
    "webhooks": ".tornado.webhooks",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'collab' has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
