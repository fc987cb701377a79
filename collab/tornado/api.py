"""HTTP endpoints: the document API, health and metrics."""

from __future__ import annotations

import contextlib
import json
import logging
from datetime import UTC, datetime
from typing import Any

import tornado.web

from ..core import names
from ..core.auth import Authorize, Permission, allow_all
from ..core.errors import CollabError, Forbidden, Unauthorized
from ..server.hub import Hub
from ..server.tokens import permit
from .logs import TokenSafeLogs

__all__ = ["DocHandler", "DocsHandler", "HealthHandler", "MetricsHandler", "TextHandler"]

log = logging.getLogger("collab.api")


@tornado.web.stream_request_body
class _ApiHandler(TokenSafeLogs):
    """Authorizes in ``prepare``, before any of the body is read.

    A refused request never has its body read (Tornado closes the connection
    after the error response); an accepted one may send a body only to ``PUT``,
    at most ``max_message_bytes``.
    """

    def initialize(self, hub: Hub, authorize: Authorize = allow_all) -> None:
        self.hub = hub
        self.authorize = authorize
        self.permission = Permission()
        self._chunks: list[bytes] = []

    async def prepare(self) -> None:
        await self._authorize()
        limit = self.hub.config.max_message_bytes if self.request.method == "PUT" else 0
        self.request.connection.set_max_body_size(limit)  # type: ignore[union-attr]

    async def _authorize(self) -> None:
        """Check the caller may read (``GET``) or change the named document."""
        await self._permit(self.path_args[0], write=self.request.method in ("PUT", "DELETE"))

    def data_received(self, chunk: bytes) -> None:
        if not self._finished:
            self._chunks.append(chunk)

    @property
    def body(self) -> bytes:
        return b"".join(self._chunks)

    async def _call(self, name: str) -> Permission:
        return await permit(self.authorize, self.request, name)

    async def _permit(self, name: str, write: bool = False) -> str:
        """Validate ``name`` and check the caller may read (or write) it."""
        name = names.validate(name)
        self.permission = permission = await self._call(name)
        if write and not permission.writable:
            raise Forbidden("read-only token")
        return name

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(exc.reason if isinstance(exc, CollabError) else self._reason)

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, CollabError):
            log.info("refused %s %s: %s", self.request.remote_ip, self.request.path, e.reason)
            self.set_status(e.http_status)
            if isinstance(e, Unauthorized):
                self.set_header("WWW-Authenticate", "Bearer")
            self.write_error(e.http_status, exc_info=(type(e), e, None))
            return
        super()._handle_request_exception(e)


class DocsHandler(_ApiHandler):
    """``GET /api/docs``: the documents the caller may open, with size, last change, clients.

    ``authorize(request, "")`` may refuse the caller (``Unauthorized``); each
    document is then listed only if ``authorize(request, name)`` grants it.
    """

    async def _authorize(self) -> None:
        with contextlib.suppress(Forbidden):  # a token for some documents: filtered below
            await self._call("")

    async def get(self) -> None:
        docs = [
            {
                "name": d.name,
                "size": d.size,
                "modified": datetime.fromtimestamp(d.modified, UTC).isoformat(),
                "clients": d.clients,
            }
            for d in await self.hub.list()
            if await self._grants(d.name)
        ]
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(docs))

    async def _grants(self, name: str) -> bool:
        try:
            await self._call(name)
        except CollabError:
            return False
        return True


class TextHandler(_ApiHandler):
    """``GET``/``PUT /api/docs/<name>/text``: the ``content`` text as plain text."""

    async def get(self, name: str) -> None:
        text = await self.hub.get_text(name)
        if text is None:
            raise tornado.web.HTTPError(404, "no such document")
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(text.encode())

    async def put(self, name: str) -> None:
        try:
            text = self.body.decode()
        except UnicodeDecodeError:
            raise tornado.web.HTTPError(400, "body is not UTF-8") from None
        await self.hub.set_text(name, text, author=self.permission.user or "api")
        self.set_status(204)
        self.finish()


class DocHandler(_ApiHandler):
    """``DELETE /api/docs/<name>``: delete a document; its editors get 4404."""

    async def delete(self, name: str) -> None:
        if not await self.hub.delete(name):
            raise tornado.web.HTTPError(404, "no such document")
        self.set_status(204)
        self.finish()


class HealthHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish("ok")


class MetricsHandler(tornado.web.RequestHandler):
    def initialize(self, hub: Hub) -> None:
        self.hub = hub

    def get(self) -> None:
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.finish(self.hub.metrics.render())
