"""The ``collab`` command: ``serve`` and ``compact``; ``export``, ``import``,
``backup`` and ``restore`` are in ``admin``.

Every ``serve`` option also reads ``COLLAB_<OPTION>`` from the environment
(``--data-dir`` from ``COLLAB_DATA_DIR``); a flag on the command line wins.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import ipaddress
import logging
import os
import signal
import ssl
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from . import admin
from .core.auth import MIN_SECRET_BYTES
from .core.config import Config, check_base_path
from .core.errors import StoreUnavailable
from .core.room import Room
from .server.logfmt import BatchedStreamHandler, JsonFormatter, TextFormatter
from .storage.base import StoreLocked
from .storage.file import FileStore
from .storage.redis.store import RedisMisconfigured
from .workers import WORKER_ENV, supervise

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
    (
        "max_message_bytes",
        int,
        "largest HTTP request body; WebSocket message only with "
        "--max-document-bytes 0 (close 1009 above)",
    ),
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
    (
        "max_document_bytes",
        int,
        "largest encoded document, and so the largest WebSocket "
        "message (1009 / HTTP 413 above; 0 = off)",
    ),
    ("max_connections", int, "open WebSockets in all (HTTP 503 above; 0 = off)"),
    ("api_rate", float, "HTTP API requests per second per client address (429; 0 = off)"),
    ("api_rate_burst", int, "HTTP API requests a client address may make at once"),
    ("min_free_bytes", int, "free disk space below which /readyz answers 503 (0 = off)"),
    ("jwks_file", str, "JWKS file of public keys chosen by kid; re-read when it changes"),
    ("jwt_audience", str, "the aud tokens must carry (unset: tokens with an aud are refused)"),
    ("jwt_issuer", str, "the iss tokens must carry (unset: not checked)"),
    ("log_level", str, "debug | info | warning | error"),
    ("log_format", str, "text | json (one JSON object a line)"),
    ("certfile", str, "PEM certificate chain: serve HTTPS and WSS (with --keyfile)"),
    ("keyfile", str, "PEM private key of --certfile"),
    ("base_path", str, "URL prefix the whole server is served under, e.g. /collab"),
    ("redis_url", str, "cluster mode: documents in this Redis (redis://HOST:PORT/DB), not on disk"),
    ("redis_prefix", str, "prefix of every Redis key (clusters can share a Redis)"),
    ("redis_timeout", float, "seconds an update may wait for Redis before 1013"),
    ("redis_heartbeat_ttl", float, "seconds until a silent process counts as dead"),
    ("redis_retention", float, "seconds of compacted stream kept for lagging readers"),
    ("redis_durability", str, "strict (refuse a Redis that may lose acked updates) | relaxed"),
    ("workers", int, "processes serving one port (SO_REUSEPORT; needs --redis-url above 1)"),
    ("history_idle", float, "seconds of quiet after which edits become a version"),
    ("history_max_interval", float, "longest stretch of editing one version covers (seconds)"),
    ("history_keep_all", float, "seconds during which every automatic version is kept"),
    ("history_max_versions", int, "automatic versions kept per document (named ones always are)"),
    ("webhook_debounce", float, "seconds without changes before document.changed is sent"),
    ("webhook_max_wait", float, "most seconds from a change to its document.changed"),
    ("webhook_timeout", float, "seconds a webhook receiver has to answer"),
    ("webhook_retries", int, "retries of an undelivered webhook event before it is dropped"),
    ("webhook_retry_delay", float, "seconds before the first retry (doubling, with jitter)"),
    ("webhook_retry_max", float, "longest wait between retries (also caps Retry-After)"),
    ("webhook_queue", int, "undelivered events kept per webhook (oldest dropped above)"),
    ("webhook_grace", float, "seconds at shutdown to deliver what is pending"),
]
_CHOICES = {
    "fsync": ("always", "interval", "never"),
    "log_level": ("debug", "info", "warning", "error"),
    "redis_durability": ("strict", "relaxed"),
}


def _env(option: str) -> str | None:
    return os.environ.get("COLLAB_" + option.upper())


class _Parser(argparse.ArgumentParser):
    """Reports a bad command line in one line, status 2 (subcommands inherit it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"collab: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="collab", description="Real-time collaborative editing server.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the server")
    for option, kind, text in _OPTIONS:
        default = getattr(_DEFAULTS, option)
        flag = "--" + option.replace("_", "-")
        serve.add_argument(
            flag,
            type=kind,
            default=None,  # then COLLAB_<OPTION>, then Config's: see _resolve
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
        "--jwt-secret",
        action="append",
        dest="jwt_secrets",
        default=None,
        help="HS256 secret (at least 32 bytes); with any key every request needs a JWT; "
        "repeat to rotate: each verifies (env COLLAB_JWT_SECRET, comma-separated)",
    )
    serve.add_argument(
        "--jwt-public-key",
        action="append",
        dest="jwt_public_keys",
        default=None,
        metavar="FILE",
        help="PEM public key (RSA: RS256, EC: ES256/384/512, Ed25519: EdDSA), repeatable "
        "(env COLLAB_JWT_PUBLIC_KEY, comma-separated)",
    )
    serve.add_argument(
        "--trusted-proxy",
        action="append",
        dest="trusted_proxies",
        default=None,
        metavar="CIDR",
        help="reverse proxy network whose Forwarded / X-Forwarded-For / X-Real-IP headers "
        "name the client, repeatable (env COLLAB_TRUSTED_PROXY, comma-separated; "
        "default none: those headers are ignored)",
    )
    serve.add_argument(
        "--webhook",
        action="append",
        dest="webhooks",
        default=None,
        metavar="URL",
        help="POST signed events to this http(s) URL, repeatable "
        "(env COLLAB_WEBHOOK, comma-separated)",
    )
    serve.add_argument(
        "--webhook-secret",
        action="append",
        dest="webhook_secrets",
        default=None,
        metavar="whsec_...",
        help="Standard Webhooks secret, required with --webhook; repeat or comma-separate "
        "to rotate: each signs (env COLLAB_WEBHOOK_SECRET, comma-separated)",
    )
    serve.add_argument(
        "--webhook-events",
        default=None,
        metavar="TYPES",
        help="comma-separated event types to send (env COLLAB_WEBHOOK_EVENTS; default "
        f"{','.join(_DEFAULTS.webhook_events)}; also connection.opened,connection.closed)",
    )
    serve.add_argument(
        "--webhook-include-text",
        action="store_true",
        default=None,
        help="put the document's text in document.changed (env COLLAB_WEBHOOK_INCLUDE_TEXT=1)",
    )
    serve.add_argument(
        "--memory",
        action="store_true",
        default=None,
        help="keep documents in memory only, nothing on disk (env COLLAB_MEMORY=1)",
    )
    serve.add_argument(
        "--history",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep a version history of every document (env COLLAB_HISTORY=0/1; default on)",
    )
    serve.add_argument(
        "--compression",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="permessage-deflate with clients that offer it, for messages of 16 KiB and more "
        "(env COLLAB_COMPRESSION=0/1; default on)",
    )
    commands.add_parser(
        "webhook-secret", help="print a new random whsec_ secret for --webhook-secret"
    )
    compact = commands.add_parser("compact", help="compact every document (server stopped)")
    compact.add_argument("--data-dir", default=_env("data_dir") or _DEFAULTS.data_dir)
    admin.add_parsers(commands, _env("data_dir") or _DEFAULTS.data_dir or "./data")
    return parser


def _resolve(args: argparse.Namespace) -> None:
    """Fill in each option from its flag, else ``COLLAB_<OPTION>``, else the default.

    Raises:
        SystemExit: with a one-line reason naming the flag or variable at fault.
    """
    args.data_dir_given = args.data_dir is not None or _env("data_dir") is not None
    for option, kind, _ in _OPTIONS:
        value, where = getattr(args, option), "--" + option.replace("_", "-")
        env = _env(option)
        if value is None and env is not None:
            where = f"COLLAB_{option.upper()}"
            try:
                value = kind(env)
            except ValueError:
                message = f"invalid {kind.__name__} value: {env!r}"
                raise SystemExit(f"collab: {where}: {message}") from None
        if value is None:
            value = getattr(_DEFAULTS, option)
        elif isinstance(value, int | float) and not 0 <= value < float("inf"):
            raise SystemExit(f"collab: {where}: must be a number >= 0, not {value!r}")
        elif option == "port" and value > 65535:
            raise SystemExit(f"collab: {where}: not a port number: {value}")
        elif option in _CHOICES and value not in _CHOICES[option]:
            choices = ", ".join(_CHOICES[option])
            raise SystemExit(f"collab: {where}: must be one of {choices}, not {value!r}")
        elif option == "base_path":
            try:
                value = check_base_path(value)
            except ValueError as exc:
                raise SystemExit(f"collab: {where}: {exc}") from None
        setattr(args, option, value)
    if args.memory is None:
        env = (_env("memory") or "").strip().lower()
        if env not in ("", "0", "1", "true", "false", "yes", "no", "on", "off"):
            raise SystemExit(f"collab: COLLAB_MEMORY: invalid boolean value: {env!r}")
        args.memory = env in ("1", "true", "yes", "on")
    if args.history is None:
        env = (_env("history") or "").strip().lower()
        if env not in ("", "0", "1", "true", "false", "yes", "no", "on", "off"):
            raise SystemExit(f"collab: COLLAB_HISTORY: invalid boolean value: {env!r}")
        args.history = env in ("", "1", "true", "yes", "on")
    if args.compression is None:
        env = (_env("compression") or "").strip().lower()
        if env not in ("", "0", "1", "true", "false", "yes", "no", "on", "off"):
            raise SystemExit(f"collab: COLLAB_COMPRESSION: invalid boolean value: {env!r}")
        args.compression = env in ("", "1", "true", "yes", "on")
    if args.webhook_include_text is None:
        env = (_env("webhook_include_text") or "").strip().lower()
        if env not in ("", "0", "1", "true", "false", "yes", "no", "on", "off"):
            raise SystemExit(f"collab: COLLAB_WEBHOOK_INCLUDE_TEXT: invalid boolean value: {env!r}")
        args.webhook_include_text = env in ("1", "true", "yes", "on")


def _listed(values: list[str] | None, option: str) -> tuple[str, ...]:
    """Repeated flags (each may be comma-separated), else ``COLLAB_<OPTION>``'s commas."""
    joined = ",".join(values) if values is not None else _env(option) or ""
    return tuple(v.strip() for v in joined.split(",") if v.strip())


def _webhooks(args: argparse.Namespace) -> dict[str, Any]:
    """The ``webhook*`` settings that are not plain numbers, checked."""
    from .core import webhooks

    urls = _listed(args.webhooks, "webhook")
    secrets = _listed(args.webhook_secrets, "webhook_secret")
    try:
        for url in urls:
            webhooks.check_url(url)
        for secret in secrets:
            webhooks.parse_secret(secret)
        events = _DEFAULTS.webhook_events
        if args.webhook_events is not None or _env("webhook_events") is not None:
            events = webhooks.parse_events(_listed(
                None if args.webhook_events is None else [args.webhook_events], "webhook_events"
            ))  # fmt: skip
    except ValueError as exc:
        raise SystemExit(f"collab: {exc}") from None
    if urls and not secrets:
        raise SystemExit("collab: --webhook needs --webhook-secret whsec_... to sign with")
    return {
        "webhooks": urls,
        "webhook_secrets": secrets,
        "webhook_events": events,
        "webhook_include_text": args.webhook_include_text,
    }


def _operations(args: argparse.Namespace) -> dict[str, Any]:
    """``trusted_proxies``, checked, and the TLS files, read to check them."""
    from .core.clients import TrustedProxies
    from .tornado.listener import tls_context

    proxies, where = args.trusted_proxies, "--trusted-proxy"
    if proxies is None:
        proxies = [c.strip() for c in (_env("trusted_proxy") or "").split(",") if c.strip()]
        where = "COLLAB_TRUSTED_PROXY"
    try:
        TrustedProxies(proxies)
    except ValueError as exc:
        raise SystemExit(f"collab: {where}: {exc}") from None
    try:
        tls_context(args.certfile, args.keyfile)
    except ValueError as exc:
        raise SystemExit(f"collab: {exc}") from None
    except (OSError, ssl.SSLError) as exc:
        raise SystemExit(f"collab: cannot use --certfile/--keyfile: {exc}") from None
    return {"trusted_proxies": tuple(proxies)}


def _config(args: argparse.Namespace) -> Config:
    _resolve(args)
    values = {option: getattr(args, option) for option, _, _ in _OPTIONS}
    values.update(_operations(args))
    values.update(_webhooks(args))
    origins = args.allow_origins
    if origins is None:  # the flags win over the variable, as for every option
        origins = [o.strip() for o in (_env("allow_origin") or "").split(",") if o.strip()]
    values["allow_origins"] = tuple(origins)
    secrets = args.jwt_secrets  # verbatim: only the variable is split, at commas
    if secrets is None:
        secrets = [s for s in (_env("jwt_secret") or "").split(",") if s]
    if any(len(s.encode()) < MIN_SECRET_BYTES for s in secrets):
        raise SystemExit(f"collab: --jwt-secret must be at least {MIN_SECRET_BYTES} bytes")
    values["jwt_secrets"] = tuple(secrets)
    keys = args.jwt_public_keys
    if keys is None:
        keys = [k.strip() for k in (_env("jwt_public_key") or "").split(",") if k.strip()]
    values["jwt_public_keys"] = tuple(keys)
    if args.log_format not in ("text", "json"):
        raise SystemExit(f"collab: --log-format must be text or json, not {args.log_format!r}")
    values["history"] = args.history
    values["compression"] = args.compression
    if args.memory:
        values["data_dir"] = None
    if args.redis_url:
        if args.memory or args.data_dir_given:
            where = "--memory" if args.memory else "--data-dir"
            raise SystemExit(
                f"collab: --redis-url keeps documents in Redis: give it or {where}, not both"
            )
        values["data_dir"] = None
    if args.workers < 1:
        raise SystemExit("collab: --workers must be at least 1")
    if args.workers > 1 and not args.redis_url:
        raise SystemExit(
            "collab: --workers above 1 needs --redis-url (processes share documents through Redis)"
        )
    if args.workers > 1 and args.port == 0:
        raise SystemExit("collab: --workers above 1 needs a fixed --port, not 0")
    config = dataclasses.replace(_DEFAULTS, **values)
    try:  # an unreadable or unusable key stops the server here, with a reason
        from .server.tokens import JwtAuthorizer

        JwtAuthorizer.from_config(config)
    except ValueError as exc:
        raise SystemExit(f"collab: {exc}") from None
    return config


class _CannotListen(Exception):
    """The address is taken or not ours: said in one log line, status 1."""


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name, or "" (every interface)


async def _serve(config: Config) -> None:
    from .server import heap
    from .server.hub import Hub
    from .server.tokens import JwtAuthorizer
    from .tornado.app import make_app
    from .tornado.listener import listen

    hub = Hub(config)
    try:
        await hub.start()  # a Redis that cannot keep the promise stops us here
    except Exception:
        await hub.close()
        raise
    app = make_app(config, hub)
    try:
        server = listen(app, config, hub)  # limits, backlog and TLS as documented there
    except OSError as exc:
        await hub.close()
        raise _CannotListen(f"cannot listen on {config.host}:{config.port}: {exc}") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    heap.tune()  # started: what exists now lives as long as the server
    where = config.data_dir or (f"Redis {config.redis_url}" if config.redis_url else "memory")
    url = f"{server.scheme}://{config.host}:{server.port}{config.base_path}/"
    log.info("collab serving on %s (data: %s)", url, where, extra={"event": "server_started"})
    if not _loopback(config.host) and JwtAuthorizer.from_config(config) is None:
        log.warning(
            "access control is off on %s: anyone who can reach port %d can read and write "
            "every document (set --jwt-secret or --jwt-public-key)",
            config.host or "every interface",
            server.port,
        )
    await stop.wait()
    log.info("shutting down: flushing documents", extra={"event": "server_stopping"})
    await server.close(timeout=5)  # WebSockets get 5 s to finish their closing handshake
    log.info("stopped", extra={"event": "server_stopped"})


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
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.command in admin.COMMANDS:
        return admin.run(args)
    if args.command == "compact":
        return _compact(args.data_dir)
    if args.command == "webhook-secret":
        from .core.webhooks import encode_secret

        print(encode_secret(os.urandom(32)))
        return 0
    try:
        config = _config(args)
    except SystemExit as exc:  # a reason: bad configuration, status 2 as for bad flags
        if not isinstance(exc.code, str):
            raise
        print(exc.code, file=sys.stderr)
        return 2
    # Neither format prints where a call was made, nor thread or process: not looked up.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    output = BatchedStreamHandler()
    output.setFormatter(JsonFormatter() if config.log_format == "json" else TextFormatter())
    logging.basicConfig(level=config.log_level.upper(), handlers=[output])
    if config.workers > 1 and not os.environ.get(WORKER_ENV):
        return supervise(argv, config.workers)
    try:
        asyncio.run(_serve(config))
    except RedisMisconfigured as exc:
        log.error("%s", exc)
        return 2
    except (StoreLocked, _CannotListen, StoreUnavailable) as exc:
        log.error("%s", exc)
        return 1
    return 0
