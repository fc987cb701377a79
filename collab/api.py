"""HTTP endpoints: the document API, health and metrics."""

from __future__ import annotations

import inspect
import json
from datetime import UTC, datetime
from typing import Any

import tornado.web

from . import names
from .auth import Authorize, Permission, allow_all
from .errors import CollabError, Forbidden
from .hub import Hub

__all__ = ["DocHandler", "DocsHandler", "HealthHandler", "MetricsHandler", "TextHandler"]


class _ApiHandler(tornado.web.RequestHandler):
    def initialize(self, hub: Hub, authorize: Authorize = allow_all) -> None:
        self.hub = hub
        self.authorize = authorize

    async def _permit(self, name: str, write: bool = False) -> str:
        """Validate ``name`` and check the caller may read (or write) it."""
        name = names.validate(name)
        result = self.authorize(self.request, name)
        permission: Permission = await result if inspect.isawaitable(result) else result
        if write and not permission.writable:
            raise Forbidden("read-only token")
        return name

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(exc.reason if isinstance(exc, CollabError) else self._reason)

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, CollabError):
            self.set_status(e.http_status)
            self.write_error(e.http_status, exc_info=(type(e), e, None))
            return
        super()._handle_request_exception(e)


class DocsHandler(_ApiHandler):
    """``GET /api/docs``: every document with size, last change and clients."""

    async def get(self) -> None:
        await self._permit_list()
        docs = [
            {
                "name": d.name,
                "size": d.size,
                "modified": datetime.fromtimestamp(d.modified, UTC).isoformat(),
                "clients": d.clients,
            }
            for d in await self.hub.list()
        ]
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(docs))

    async def _permit_list(self) -> None:
        result = self.authorize(self.request, "")
        if inspect.isawaitable(result):
            await result


class TextHandler(_ApiHandler):
    """``GET``/``PUT /api/docs/<name>/text``: the ``content`` text as plain text."""

    async def get(self, name: str) -> None:
        name = await self._permit(name)
        text = await self.hub.get_text(name)
        if text is None:
            raise tornado.web.HTTPError(404, "no such document")
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(text.encode())

    async def put(self, name: str) -> None:
        name = await self._permit(name, write=True)
        try:
            text = self.request.body.decode()
        except UnicodeDecodeError:
            raise tornado.web.HTTPError(400, "body is not UTF-8") from None
        await self.hub.set_text(name, text)
        self.set_status(204)
        self.finish()


class DocHandler(_ApiHandler):
    """``DELETE /api/docs/<name>``: delete a document; its editors get 4404."""

    async def delete(self, name: str) -> None:
        name = await self._permit(name, write=True)
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
