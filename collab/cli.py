"""The ``collab`` command: ``serve``, ``export`` and ``compact``.

Every ``serve`` option also reads ``COLLAB_<OPTION>`` from the environment
(``--data-dir`` from ``COLLAB_DATA_DIR``); a flag on the command line wins.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Sequence

from .core.auth import MIN_SECRET_BYTES
from .core.config import Config
from .core.room import Room
from .storage.base import StoreLocked
from .storage.file import FileStore

__all__ = ["main"]

log = logging.getLogger("collab")

_DEFAULTS = Config()
_OPTIONS: list[tuple[str, type, str]] = [
    ("host", str, "address to listen on"),
    ("port", int, "port to listen on"),
    ("data_dir", str, "directory holding the documents"),
    ("fsync", str, "always (group commit before relaying) | interval | never"),
    ("fsync_interval", float, "seconds between fsyncs with --fsync interval"),
    ("idle_timeout", float, "seconds before an unused document is flushed and unloaded"),
    ("compact_bytes", int, "log size that triggers a snapshot"),
    ("ping_interval", float, "seconds between keep-alive pings (0 = off)"),
    ("ping_timeout", float, "seconds without a pong before a socket is dropped"),
    ("max_message_bytes", int, "largest accepted WebSocket message (close 1009 above)"),
    ("rate_messages", float, "messages per second per connection (close 1008 above; 0 = off)"),
    ("rate_messages_burst", int, "messages a connection may send at once before the rate applies"),
    ("rate_bytes", float, "bytes per second per connection (close 1008 above; 0 = off)"),
    ("rate_bytes_burst", int, "bytes a connection may send at once (at least max-message-bytes)"),
    ("max_connections_per_ip", int, "open WebSockets per client IP (HTTP 429 above; 0 = off)"),
    ("max_connections_per_doc", int, "open WebSockets per document (close 1008 above; 0 = off)"),
    ("max_documents", int, "documents loaded at once (close 1013 / HTTP 503 above; 0 = off)"),
    ("max_pending_bytes", int, "output waiting for a slow reader (merged; close 1013 above)"),
    ("max_awareness_bytes", int, "largest awareness state of one client (close 1009 above)"),
    ("max_awareness_clients", int, "awareness ids one connection may own (close 1008 above)"),
    ("max_header_bytes", int, "largest HTTP request head, read before any authentication"),
    ("header_timeout", float, "seconds a client may take to send its request head"),
    ("jwt_secret", str, "HS256 secret; when set every request needs a JWT"),
    ("log_level", str, "debug | info | warning | error"),
]


def _env(option: str) -> str | None:
    return os.environ.get("COLLAB_" + option.upper())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="collab", description="Real-time collaborative editing server."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the server")
    for option, kind, text in _OPTIONS:
        default = getattr(_DEFAULTS, option)
        env = _env(option)
        flag = "--" + option.replace("_", "-")
        serve.add_argument(
            flag,
            type=kind,
            default=kind(env) if env is not None else default,
            help=f"{text} (env COLLAB_{option.upper()}, default {default!r})",
        )
    serve.add_argument(
        "--allow-origin",
        action="append",
        dest="allow_origins",
        default=None,
        help="browser origin allowed to open WebSockets, repeatable; '*' = any "
        "(env COLLAB_ALLOW_ORIGIN, comma-separated; default same origin plus loopback)",
    )
    serve.add_argument(
        "--memory",
        action="store_true",
        default=_env("memory") in ("1", "true", "yes"),
        help="keep documents in memory only, nothing on disk (env COLLAB_MEMORY=1)",
    )
    for name, text in (
        ("export", "print a document's text"),
        ("compact", "compact every document"),
    ):
        sub = commands.add_parser(name, help=text)
        if name == "export":
            sub.add_argument("name", help="document name")
        sub.add_argument("--data-dir", default=_env("data_dir") or _DEFAULTS.data_dir)
    return parser


def _config(args: argparse.Namespace) -> Config:
    values = {option: getattr(args, option) for option, _, _ in _OPTIONS}
    if args.fsync not in ("always", "interval", "never"):
        raise SystemExit(f"collab: --fsync must be always, interval or never, not {args.fsync!r}")
    origins = args.allow_origins
    if origins is None:  # the flags win over the variable, as for every option
        origins = [o.strip() for o in (_env("allow_origin") or "").split(",") if o.strip()]
    values["allow_origins"] = tuple(origins)
    if args.jwt_secret is not None and len(args.jwt_secret.encode()) < MIN_SECRET_BYTES:
        raise SystemExit(f"collab: --jwt-secret must be at least {MIN_SECRET_BYTES} bytes")
    if args.memory:
        values["data_dir"] = None
    return dataclasses.replace(_DEFAULTS, **values)


async def _serve(config: Config) -> None:
    from .server.hub import Hub
    from .tornado.app import make_app

    hub = Hub(config)
    app = make_app(config, hub)
    server = app.listen(
        config.port,
        config.host,
        # Room for every client of a restarted server reconnecting at once,
        # instead of a second of SYN retries past Tornado's default of 128.
        backlog=1024,
        xheaders=False,
        # What a client may make the server hold before it is authenticated:
        # its request head, for a bounded time. The sync and API handlers read
        # no body before authorizing; this caps every other handler's.
        max_header_size=config.max_header_bytes,
        idle_connection_timeout=config.header_timeout,
        max_body_size=config.max_message_bytes,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    where = config.data_dir or "memory"
    log.info("collab serving on http://%s:%d (data: %s)", config.host, config.port, where)
    await stop.wait()
    log.info("shutting down: flushing documents")
    server.stop()
    await hub.close(timeout=5)  # WebSockets get 5 s to finish their closing handshake
    try:
        await asyncio.wait_for(server.close_all_connections(), timeout=5)
    except TimeoutError:
        log.warning("some connections did not close in time")
    log.info("stopped")


def _export(data_dir: str, name: str) -> int:
    async def read() -> list[bytes] | None:
        store = FileStore(data_dir, read_only=True)
        try:
            if await store.info(name) is None:
                return None
            return (await store.log(name).load()).updates
        finally:
            await store.close()

    updates = asyncio.run(read())
    if updates is None:
        print(f"collab: no document {name!r} in {data_dir}", file=sys.stderr)
        return 1
    room = Room(name)
    room.restore(updates)
    sys.stdout.write(room.text)
    return 0


def _compact(data_dir: str) -> int:
    async def compact_all(store: FileStore) -> None:
        try:
            for info in await store.list():
                document = store.log(info.name)
                loaded = await document.load()
                room = Room(info.name)
                room.restore(loaded.updates)
                await document.compact(room.doc.get_update(), loaded.cursor)
                await document.close()
                print(f"compacted {info.name}")
        finally:
            await store.close()

    store = FileStore(data_dir)
    try:
        with store.lock():
            asyncio.run(compact_all(store))
    except StoreLocked as exc:
        print(f"collab: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "export":
        return _export(args.data_dir, args.name)
    if args.command == "compact":
        return _compact(args.data_dir)
    config = _config(args)
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        asyncio.run(_serve(config))
    except StoreLocked as exc:
        log.error("%s", exc)
        return 1
    return 0
