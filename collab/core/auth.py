"""Who may open which document, and whether they may write.

Rule: pure; no tornado, no asyncio, no clock, no I/O. An ``Authorize`` callable
(the embedding hook) gets the request and the document name and returns a
``Permission``, or an awaitable of one, or raises ``Unauthorized`` (401 / close
4401) or ``Forbidden`` (403 / close 4403). It runs before any WebSocket upgrade
and before any HTTP API request body is read. ``grant`` turns verified token
claims into a ``Permission``; ``server.tokens.JwtAuthorizer`` (behind
``--jwt-secret``) verifies the signature and calls it.

The document list (``GET /api/docs``) calls it with ``name=""`` (raise
``Unauthorized`` to refuse the caller) and then once per document, showing
only those it grants.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import math
import re
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from .errors import Forbidden, Unauthorized

__all__ = [
    "MIN_SECRET_BYTES",
    "Authorize",
    "Permission",
    "Request",
    "allow_all",
    "grant",
    "origin_allowed",
    "redact",
    "token_of",
]

MIN_SECRET_BYTES = 32  # RFC 7518 3.2: an HS256 key is at least as long as the hash


@dataclass(frozen=True)
class Permission:
    """What one connection may do.

    Attributes:
        user: who, for logs and presence (``sub``); None if anonymous.
        writable: False for read-only: updates are dropped, awareness flows.
        expires: Unix time at which an open connection is closed (4401).
        admin: may make destructive API calls (``DELETE /api/docs/<name>``);
            without it they get 403 ``admin role required``.
    """

    user: str | None = None
    writable: bool = True
    expires: float | None = None
    admin: bool = False


class Request(Protocol):
    """The parts of an HTTP request an authorizer reads (tornado's fits)."""

    headers: Mapping[str, str]
    query_arguments: dict[str, list[bytes]]


Authorize = Callable[[Any, str], "Permission | Awaitable[Permission]"]
"""``authorize(request, name)``: the permission, or raise ``Unauthorized``/``Forbidden``."""


def allow_all(request: Any, name: str) -> Permission:
    """Everyone may do everything, deleting included (the default without keys)."""
    return Permission(admin=True)


def token_of(request: Request) -> str | None:
    """The token from ``Authorization: Bearer`` or else ``?token=``, if any."""
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    values = request.query_arguments.get("token")
    return values[-1].decode("utf-8", "replace") if values else None


_TOKEN_RE = re.compile(r"(?i)([?&]token=)[^&#\s]*")


def redact(uri: str) -> str:
    """``uri`` (or a log line holding URLs) with every ``token=`` query value hidden."""
    if "=" not in uri:
        return uri  # most lines: nothing to hide, and no regex run
    return _TOKEN_RE.sub(r"\1***", uri)


def origin_allowed(origin: str, host: str | None, allowed: Collection[str]) -> bool:
    """May a browser page from ``origin`` open a WebSocket on this server?

    Yes for the same origin (its host and port are the request's ``Host``),
    for any origin on a loopback host, and for ``allowed`` (lower-case, no
    trailing slash; ``"*"`` allows any). A malformed origin is refused.
    """
    try:
        parts = urlsplit(origin)
        hostname = parts.hostname or ""
    except ValueError:
        return False
    if "*" in allowed or origin.rstrip("/").lower() in allowed:
        return True
    if host is not None and parts.netloc.lower() == host.lower():
        return True
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def grant(claims: Mapping[str, Any], name: str, now: float) -> Permission:
    """The permission verified token ``claims`` give on ``name`` at ``now``.

    Claims: ``exp`` (required, Unix time), ``sub`` (who), ``docs`` (a list of
    ``fnmatch`` glob patterns over document names, where ``*`` also matches
    ``/``; absent means every document), ``mode`` (``"rw"``, the default, or
    ``"ro"``), ``admin`` (``true`` allows destructive API calls on the
    documents ``docs`` grants; only with ``mode`` ``"rw"``; default ``false``).

    Raises:
        Unauthorized: malformed claims, or expired at ``now``.
        Forbidden: valid, but ``docs`` does not match ``name``.
    """
    expires = claims.get("exp")
    if isinstance(expires, bool) or not isinstance(expires, int | float):
        raise Unauthorized("invalid token: exp is not a number")
    if not math.isfinite(expires) or expires <= now:
        raise Unauthorized("token expired")
    mode = claims.get("mode", "rw")
    if mode not in ("rw", "ro"):
        raise Unauthorized("invalid token: mode must be 'rw' or 'ro'")
    patterns = claims.get("docs", ["*"])
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        raise Unauthorized("invalid token: docs must be a list of patterns")
    admin = claims.get("admin", False)
    if not isinstance(admin, bool):
        raise Unauthorized("invalid token: admin must be true or false")
    if admin and mode != "rw":
        raise Unauthorized("invalid token: an admin token cannot be read-only")
    if not any(fnmatch.fnmatchcase(name, p) for p in patterns):
        raise Forbidden("token does not grant this document")
    sub = claims.get("sub")
    # With a token, presence always carries a verified (maybe empty) sub: never a claimed one.
    user = str(sub) if sub is not None else ""
    return Permission(user, mode == "rw", float(expires), admin)
