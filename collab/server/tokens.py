"""Signed tokens and the authorize hook: what runs before a client is let in.

``JwtAuthorizer`` is the implementation behind ``--jwt-secret``: it verifies an
HS256 signature with PyJWT, then ``core.auth.grant`` reads the claims.
``permit`` runs any ``Authorize`` hook, sync or async.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any

import jwt

from ..core.auth import MIN_SECRET_BYTES, Authorize, Permission, Request, grant, token_of
from ..core.errors import Unauthorized

__all__ = ["JwtAuthorizer", "permit"]


class JwtAuthorizer:
    """Check an HS256 JWT and grant what its claims say (see ``core.auth.grant``).

    ``nbf`` and ``iat`` are checked when present; a token with an ``aud``
    claim is refused (this server has no audience).

    Args:
        secret: the shared HS256 secret, at least 32 bytes.
        clock: the time source for ``exp`` (seconds since the epoch).

    Raises:
        ValueError: the secret is shorter than 32 bytes.
    """

    def __init__(self, secret: str, clock: Callable[[], float] = time.time) -> None:
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"the JWT secret must be at least {MIN_SECRET_BYTES} bytes")
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
            Unauthorized: bad signature, algorithm other than HS256, malformed
                claims or expired.
            Forbidden: valid, but ``docs`` does not match ``name``.
        """
        try:
            claims = jwt.decode(
                token,
                self.secret,
                algorithms=["HS256"],  # never "none", never a public-key algorithm
                options={"require": ["exp"], "verify_exp": False},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        return grant(claims, name, self.clock())


async def permit(authorize: Authorize, request: Any, name: str) -> Permission:
    """Run the ``authorize`` hook (sync or async) and check what it returned.

    Raises:
        CollabError: the hook refused (``Unauthorized``, ``Forbidden``, ...).
        TypeError: the hook returned something other than a ``Permission``.
    """
    result = authorize(request, name)
    permission = await result if inspect.isawaitable(result) else result
    if not isinstance(permission, Permission):
        raise TypeError(f"authorize() returned {permission!r}, not a Permission")
    return permission
