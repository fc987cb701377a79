"""HTTP endpoints: the document API, health and metrics."""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import math
from datetime import UTC, datetime
from typing import Any

import tornado.web

from ..core import names
from ..core.auth import Authorize, Permission, allow_all
from ..core.errors import CollabError, Forbidden, Unauthorized
from ..server.hub import DocSummary, Hub
from ..server.tokens import permit
from .clients import client_ip
from .logs import TokenSafeLogs

__all__ = [
    "DocHandler",
    "DocsHandler",
    "HealthHandler",
    "MetricsHandler",
    "ReadyHandler",
    "TextHandler",
]

log = logging.getLogger("collab.api")


@tornado.web.stream_request_body
class _ApiHandler(TokenSafeLogs):
    """Authorizes in ``prepare``, before any of the body is read.

    A refused request never has its body read (Tornado closes the connection
    after the error response); an accepted one may send a body only to ``PUT``,
    at most ``max_message_bytes``. ``admin_methods`` are destructive: they
    need ``Permission.admin`` (403 ``admin role required``).
    """

    admin_methods: frozenset[str] = frozenset({"DELETE"})

    def initialize(self, hub: Hub, authorize: Authorize = allow_all) -> None:
        self.hub = hub
        self.authorize = authorize
        self.permission = Permission()
        self._chunks: list[bytes] = []

    async def prepare(self) -> None:
        self.hub.quotas.api.charge(client_ip(self))  # 429 before anything else is done
        await self._authorize()
        limit = self.hub.config.max_message_bytes if self.request.method == "PUT" else 0
        self.request.connection.set_max_body_size(limit)  # type: ignore[union-attr]

    async def _authorize(self) -> None:
        """Check the caller may read (``GET``) or change the named document."""
        method = self.request.method or ""
        write, admin = method in ("PUT", "DELETE"), method in self.admin_methods
        await self._permit(self.path_args[0], write=write, admin=admin)

    def data_received(self, chunk: bytes) -> None:
        if not self._finished:
            self._chunks.append(chunk)

    @property
    def body(self) -> bytes:
        return b"".join(self._chunks)

    async def _call(self, name: str) -> Permission:
        return await permit(self.authorize, self.request, name)

    async def _permit(self, name: str, write: bool = False, admin: bool = False) -> str:
        """Validate ``name`` and check the caller may read it (or write it, or destroy it)."""
        name = names.validate(name)
        self.permission = permission = await self._call(name)
        if admin and not permission.admin:
            raise Forbidden("admin role required")
        if write and not permission.writable:
            raise Forbidden("read-only token")
        return name

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(exc.reason if isinstance(exc, CollabError) else self._reason)

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, CollabError):
            log.info(
                "refused %s %s: %s",
                client_ip(self),
                self.request.path,
                e.reason,
                extra={
                    "event": "api_refused",
                    **self.log_fields(),
                    "status": e.http_status,
                    "reason": e.reason,
                },
            )
            self.set_status(e.http_status)
            if isinstance(e, Unauthorized):
                self.set_header("WWW-Authenticate", "Bearer")
            if e.retry_after is not None:
                self.set_header("Retry-After", str(math.ceil(e.retry_after)))
            self.write_error(e.http_status, exc_info=(type(e), e, None))
            return
        super()._handle_request_exception(e)


MAX_PAGE = 1000  # the largest ``limit`` of one page of ``GET /api/docs``


class DocsHandler(_ApiHandler):
    """``GET /api/docs[?limit=N&cursor=C]``: the documents the caller may open, by name.

    Each entry has the name, size, last change and clients. Without ``limit``
    the whole list is one JSON array (as before pages existed). With it, at
    most ``limit`` (capped at ``MAX_PAGE``) entries; when there are more, a
    ``Link: <...?limit=N&cursor=C>; rel="next"`` header gives the next page.
    The cursor is opaque (the last name listed, base64url); names created
    or deleted meanwhile appear or not, nothing is listed twice.

    ``authorize(request, "")`` may refuse the caller (``Unauthorized``); each
    document is then listed only if ``authorize(request, name)`` grants it.
    """

    async def _authorize(self) -> None:
        with contextlib.suppress(Forbidden):  # a token for some documents: filtered below
            await self._call("")

    async def get(self) -> None:
        limit, after = self._page()
        docs: list[dict[str, Any]] = []
        more = False
        while not more:
            page = await self.hub.list(after, limit)
            for d in page:
                if limit is not None and len(docs) == limit:
                    more = True
                    break
                after = d.name
                if await self._grants(d.name):
                    docs.append(_entry(d))
            if limit is None or len(page) < limit:
                break
        if more and after is not None:
            cursor = base64.urlsafe_b64encode(after.encode()).decode().rstrip("=")
            link = f"{self.request.path}?limit={limit}&cursor={cursor}"
            self.set_header("Link", f'<{link}>; rel="next"')
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(docs))

    def _page(self) -> tuple[int | None, str | None]:
        """``limit`` and the name to list after, from the query (400 if malformed)."""
        raw_limit = self.get_query_argument("limit", None)
        raw_cursor = self.get_query_argument("cursor", None)
        limit = None
        if raw_limit is not None:
            if not raw_limit.isdigit() or int(raw_limit) < 1:
                raise tornado.web.HTTPError(400, "limit must be a positive integer")
            limit = min(int(raw_limit), MAX_PAGE)
        if raw_cursor is None:
            return limit, None
        try:
            padded = raw_cursor + "=" * (-len(raw_cursor) % 4)
            raw = base64.b64decode(padded.encode("ascii"), altchars=b"-_", validate=True)
            return limit, raw.decode()
        except (ValueError, binascii.Error):
            raise tornado.web.HTTPError(400, "malformed cursor") from None

    async def _grants(self, name: str) -> bool:
        try:
            await self._call(name)
        except CollabError:
            return False
        return True


def _entry(d: DocSummary) -> dict[str, Any]:
    return {
        "name": d.name,
        "size": d.size,
        "modified": datetime.fromtimestamp(d.modified, UTC).isoformat(),
        "clients": d.clients,
    }


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
        user = self.permission.user
        await self.hub.set_text(name, text, user or "api", user, client_ip(self))
        self.set_status(204)
        self.finish()


class DocHandler(_ApiHandler):
    """``DELETE /api/docs/<name>``: delete a document; its editors get 4404."""

    async def delete(self, name: str) -> None:
        if not await self.hub.delete(name, self.permission.user, client_ip(self)):
            raise tornado.web.HTTPError(404, "no such document")
        self.set_status(204)
        self.finish()


class HealthHandler(TokenSafeLogs):  # its access log names the forwarded client
    def get(self) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish("ok")


class ReadyHandler(TokenSafeLogs):
    """``GET /readyz``: 200 ``ready`` while writes can be taken and persisted, else 503 and why.

    ``/healthz`` is liveness (the process answers); this is readiness: the
    data directory takes fsynced writes, has free space and is still locked
    by this server (``Hub.readiness``). A memory store is always ready.
    """

    def initialize(self, hub: Hub) -> None:
        self.hub = hub

    async def get(self) -> None:
        reason = await self.hub.readiness()
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        if reason is not None:
            self.set_status(503)
        self.finish(reason or "ready")


class MetricsHandler(TokenSafeLogs):
    def initialize(self, hub: Hub) -> None:
        self.hub = hub

    def get(self) -> None:
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.finish(self.hub.metrics.render())
