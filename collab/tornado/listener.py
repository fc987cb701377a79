"""Listening the way ``collab serve`` does, and stopping the same way: ``listen``.

A host application that mounts ``routes`` (or serves ``make_app``) calls
``server = listen(app, config, hub)`` inside its event loop and, on shutdown,
``await server.close()``. It gets the limits ``collab serve`` applies before a
client is authenticated (request head size and time, body size), a listen
backlog sized for a crowd reconnecting at once, TLS from ``config.certfile`` /
``config.keyfile``, and the shutdown order that keeps data safe: stop
accepting, close the hub (sockets get 1001, documents are flushed), then close
the HTTP connections still open. Without TLS, upgrades to the sync endpoint
skip Tornado's request pipeline (``upgrade.FastUpgrades``: same checks, about
half the CPU per handshake); every other request is Tornado's as before.
"""

from __future__ import annotations

import asyncio
import logging
import ssl

import tornado.httpserver
import tornado.netutil
import tornado.web

from ..core.config import Config
from ..server.hub import Hub
from .upgrade import FastUpgrades

__all__ = ["BACKLOG", "Server", "listen", "tls_context"]

log = logging.getLogger("collab")

# Room for every client of a restarted server reconnecting at once, instead of
# a second of SYN retries past Tornado's default of 128.
BACKLOG = 1024


def tls_context(certfile: str | None, keyfile: str | None) -> ssl.SSLContext | None:
    """The server's TLS context from a PEM certificate chain and its key, or None without them.

    Raises:
        ValueError: only one of the two files is given.
        OSError: a file cannot be read.
        ssl.SSLError: the files are not a certificate chain and its private key.
    """
    if (certfile is None) != (keyfile is None):
        raise ValueError("--certfile and --keyfile go together: give both or neither")
    if certfile is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    return context


class Server:
    """A listening collab application; ``await close()`` stops it.

    Attributes:
        http: the Tornado ``HTTPServer``.
        hub: the hub closed with it.
        port: the port it listens on (the one chosen when ``config.port`` is 0).
        scheme: ``"https"`` with TLS, else ``"http"``.
    """

    def __init__(
        self,
        http: tornado.httpserver.HTTPServer,
        hub: Hub,
        port: int,
        scheme: str,
        fast: FastUpgrades | None = None,
    ) -> None:
        self.http = http
        self.hub = hub
        self.port = port
        self.scheme = scheme
        self.fast = fast

    async def close(self, timeout: float = 5.0) -> None:
        """Stop accepting, close the hub, then the HTTP connections left.

        WebSockets are closed with 1001 and get ``timeout`` seconds to answer;
        every document is flushed. Call it once.
        """
        self.http.stop()
        if self.fast is not None:
            await self.fast.close()
        await self.hub.close(timeout=timeout)
        try:
            await asyncio.wait_for(self.http.close_all_connections(), timeout=timeout)
        except TimeoutError:
            log.warning("some connections did not close in time")


def listen(app: tornado.web.Application, config: Config, hub: Hub) -> Server:
    """Serve ``app`` on ``config.host``/``config.port`` with collab's server settings.

    Call it on the running event loop. The settings: ``max_header_bytes`` and
    ``header_timeout`` bound what a client may make the server hold before it
    is authenticated; ``max_message_bytes`` bounds request bodies (the sync and
    API handlers read none before authorizing); ``xheaders`` stays off, since
    ``--trusted-proxy`` decides which forwarding headers count. With
    ``workers > 1`` the port is bound with ``SO_REUSEPORT``: the kernel
    spreads connections over the processes listening on it.

    Returns:
        The ``Server``; ``await server.close()`` on shutdown (it closes ``hub``).

    Raises:
        ValueError: only one of ``certfile``/``keyfile``.
        OSError: the address cannot be bound, or a TLS file cannot be read.
        ssl.SSLError: the TLS files are not a certificate and its key.
    """
    context = tls_context(config.certfile, config.keyfile)
    http = tornado.httpserver.HTTPServer(
        app,
        xheaders=False,
        ssl_options=context,
        max_header_size=config.max_header_bytes or None,
        idle_connection_timeout=config.header_timeout or None,
        max_body_size=config.max_message_bytes or None,
    )
    sockets = tornado.netutil.bind_sockets(
        config.port, config.host or None, backlog=BACKLOG, reuse_port=config.workers > 1
    )
    port = int(sockets[0].getsockname()[1])
    fast = FastUpgrades(app, http, config) if context is None else None
    if fast is not None and fast.rules:
        fast.start(sockets, BACKLOG)  # sync upgrades answered here, the rest by ``http``
    else:
        fast = None
        http.add_sockets(sockets)
    return Server(http, hub, port, "https" if context else "http", fast)
