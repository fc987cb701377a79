"""collab: a real-time collaborative editing server speaking the Yjs protocol.

Embedding::

    hub = collab.Hub(collab.Config(data_dir="./data"))
    app = tornado.web.Application([*my_routes, *collab.routes(hub, prefix="/collab")])
"""

from .core.auth import Permission
from .core.config import Config
from .core.errors import CollabError, Forbidden, Unauthorized
from .server.hub import Hub
from .server.tokens import JwtAuthorizer
from .tornado.app import make_app, routes
from .tornado.handler import YjsHandler

__all__ = [
    "CollabError",
    "Config",
    "Forbidden",
    "Hub",
    "JwtAuthorizer",
    "Permission",
    "Unauthorized",
    "YjsHandler",
    "make_app",
    "routes",
]
__version__ = "0.1.0"
