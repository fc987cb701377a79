"""The ceiling of `make bench`: a trivial relay with no CRDT work at all.

Forwards each binary frame to the other connections of the same path, on the
``websockets`` library. It answers no sync messages, so the generator treats a
connection as ready once open.
"""

from __future__ import annotations

import argparse
import asyncio

from websockets.asyncio.server import ServerConnection, broadcast, serve

rooms: dict[str, set[ServerConnection]] = {}


async def relay(ws: ServerConnection) -> None:
    path = ws.request.path if ws.request else "/"
    peers = rooms.setdefault(path, set())
    peers.add(ws)
    try:
        async for message in ws:
            broadcast((peer for peer in peers if peer is not ws), message)
    finally:
        peers.discard(ws)
        if not peers:
            rooms.pop(path, None)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1234)
    args = parser.parse_args()
    async with serve(relay, args.host, args.port, compression=None, max_size=16 << 20):
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    asyncio.run(main())
