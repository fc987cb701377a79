"""Who may open which document, and whether they may write.

Rule: pure; no tornado, no asyncio. ``now`` is passed in. An ``Authorize``
callable (the embedding hook) gets the request and the document name and
returns a ``Permission`` or raises ``Unauthorized``/``Forbidden``;
``JwtAuthorizer`` is the implementation behind ``--jwt-secret``.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import jwt

from .errors import Forbidden, Unauthorized

__all__ = ["Authorize", "JwtAuthorizer", "Permission", "Request", "allow_all"]


@dataclass(frozen=True)
class Permission:
    """What one connection may do."""

    user: str | None = None
    writable: bool = True
    expires: float | None = None  # Unix time; the connection is closed then


class Request(Protocol):
    """The parts of an HTTP request an authorizer reads (tornado's fits)."""

    headers: Mapping[str, str]
    query_arguments: dict[str, list[bytes]]


Authorize = Callable[[Any, str], "Permission | Awaitable[Permission]"]


def allow_all(request: Any, name: str) -> Permission:
    """Everyone may read and write every document (the default on loopback)."""
    return Permission()


def token_of(request: Request) -> str | None:
    """The token from ``Authorization: Bearer`` or ``?token=``, if any."""
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    values = request.query_arguments.get("token")
    return values[-1].decode("utf-8", "replace") if values else None


class JwtAuthorizer:
    """Check an HS256 JWT with claims ``exp`` (required), ``sub``, ``docs``, ``mode``."""

    def __init__(self, secret: str, clock: Callable[[], float] = time.time) -> None:
        self.secret = secret
        self.clock = clock

    def __call__(self, request: Request, name: str) -> Permission:
        token = token_of(request)
        if not token:
            raise Unauthorized("missing token")
        return self.check(token, name)

    def check(self, token: str, name: str) -> Permission:
        """Return the permission ``token`` grants on ``name``.

        Raises:
            Unauthorized: bad signature, wrong algorithm, malformed or expired.
            Forbidden: valid, but not for this document.
        """
        try:
            claims = jwt.decode(
                token,
                self.secret,
                algorithms=["HS256"],
                options={"require": ["exp"], "verify_exp": False},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        expires = claims["exp"]
        if not isinstance(expires, int | float) or expires <= self.clock():
            raise Unauthorized("token expired")
        patterns = claims.get("docs", ["*"])
        if not isinstance(patterns, list) or not any(
            isinstance(p, str) and fnmatch.fnmatchcase(name, p) for p in patterns
        ):
            raise Forbidden("token does not grant this document")
        mode = claims.get("mode", "rw")
        if mode not in ("rw", "ro"):
            raise Unauthorized("token mode must be 'rw' or 'ro'")
        sub = claims.get("sub")
        return Permission(str(sub) if sub is not None else None, mode == "rw", float(expires))
