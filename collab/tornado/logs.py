"""Log lines without secrets: request handlers that hide ``?token=`` values.

``log_request`` is the access log (``make_app`` sets it as Tornado's
``log_function``; an embedding application may too): the line Tornado writes,
with every ``token=`` hidden, plus structured fields for ``--log-format json``
(``method``, ``path``, ``status``, ``duration_ms``, ``remote``, and
``document``/``sub`` when the handler knows them).
"""

from __future__ import annotations

import logging
from typing import Any

import tornado.web

from ..core.auth import Permission, redact
from .clients import client_ip

__all__ = ["TokenSafeLogs", "log_request"]

log = logging.getLogger("collab")
access_log = logging.getLogger("tornado.access")


class TokenSafeLogs(tornado.web.RequestHandler):
    """Logs a request without the ``token=`` in its URL (access log and errors)."""

    def _request_summary(self) -> str:
        return f"{self.request.method} {redact(self.request.uri or '')} ({client_ip(self)})"

    def log_fields(self) -> dict[str, Any]:
        """What a log line about this request says, as ``extra=`` fields."""
        fields: dict[str, Any] = {
            "method": self.request.method,
            "path": redact(self.request.path),
            "remote": client_ip(self),
        }
        if self.path_args:
            fields["document"] = str(self.path_args[0])[:200]
        permission = getattr(self, "permission", None)
        if isinstance(permission, Permission) and permission.user is not None:
            fields["sub"] = permission.user
        return fields

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, tornado.web.HTTPError):
            super().log_exception(typ, value, tb)
        else:  # Tornado's own would print the whole request, token included
            log.error("uncaught exception %s", self._request_summary(), exc_info=(typ, value, tb))


def log_request(handler: tornado.web.RequestHandler) -> None:
    """Write ``handler``'s access log line (Tornado's ``log_function`` setting)."""
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    duration = 1000.0 * handler.request.request_time()
    if isinstance(handler, TokenSafeLogs):
        fields = handler.log_fields()
    else:  # static files, redirects
        fields = {"method": handler.request.method, "path": redact(handler.request.path)}
        fields["remote"] = client_ip(handler)
    fields.update(event="request", status=status, duration_ms=round(duration, 2))
    summary = redact(handler._request_summary())
    access_log.log(level, "%d %s %.2fms", status, summary, duration, extra=fields)
