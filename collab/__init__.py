"""collab: a real-time collaborative editing server speaking the Yjs protocol.

Embedding::

    hub = collab.Hub(collab.Config(data_dir="./data"))
    app = tornado.web.Application([*my_routes, *collab.routes(hub, prefix="/collab")])
"""

from .app import make_app, routes
from .auth import JwtAuthorizer, Permission
from .config import Config
from .errors import CollabError, Forbidden, Unauthorized
from .handler import YjsHandler
from .hub import Hub

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
