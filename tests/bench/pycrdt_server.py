"""pycrdt-websocket as its documentation shows it: WebsocketServer behind ASGIServer on Hypercorn.

In-memory rooms (no YStore), one room per URL path, the library's defaults.
"""

from __future__ import annotations

import argparse
import asyncio

from hypercorn import Config
from hypercorn.asyncio import serve
from pycrdt.websocket import ASGIServer, WebsocketServer


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1234)
    args = parser.parse_args()
    websocket_server = WebsocketServer()
    app = ASGIServer(websocket_server)
    config = Config()
    config.bind = [f"{args.host}:{args.port}"]
    async with websocket_server:
        await serve(app, config, mode="asgi")  # type: ignore[arg-type]


if __name__ == "__main__":
    asyncio.run(main())
