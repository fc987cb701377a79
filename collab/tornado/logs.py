"""Log lines without secrets: request handlers that hide ``?token=`` values."""

from __future__ import annotations

import logging
from typing import Any

import tornado.web

from ..core.auth import redact

__all__ = ["TokenSafeLogs"]

log = logging.getLogger("collab")


class TokenSafeLogs(tornado.web.RequestHandler):
    """Logs a request without the ``token=`` in its URL (access log and errors)."""

    def _request_summary(self) -> str:
        return f"{self.request.method} {redact(self.request.uri or '')} ({self.request.remote_ip})"

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, tornado.web.HTTPError):
            super().log_exception(typ, value, tb)
        else:  # Tornado's own would print the whole request, token included
            log.error("uncaught exception %s", self._request_summary(), exc_info=(typ, value, tb))
