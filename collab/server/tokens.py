"""Signed tokens and the authorize hook: what runs before a client is let in.

``JwtAuthorizer`` is the implementation behind ``--jwt-secret``,
``--jwt-public-key`` and ``--jwks-file``: PyJWT verifies the signature, then
``core.auth.grant`` reads the claims. ``permit`` runs any ``Authorize`` hook,
sync or async.

Which algorithm a token may use is decided by the key that verifies it, never
by the token's header: a secret verifies HS256 only, an RSA key RS256, an EC
key the ES algorithm of its curve, an Ed25519/Ed448 key EdDSA. The header's
``alg`` and ``kid`` only pick which keys to try, so ``alg: none``, an HS256
token "signed" with a public key, or any algorithm no key has is refused.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from ..core.auth import MIN_SECRET_BYTES, Authorize, Permission, Request, grant, token_of
from ..core.config import Config
from ..core.errors import Unauthorized

__all__ = ["JwtAuthorizer", "VerifyingKey", "load_public_key", "permit"]

log = logging.getLogger("collab.auth")

MIN_RSA_BITS = 2048
_CURVES = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
# What a JWKS key may verify: public-key algorithms only (HS256 only with secrets).
_JWKS_ALGORITHMS = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
_JWKS_ALGORITHMS |= {"ES256", "ES384", "ES512", "EdDSA"}
_PUBLIC_KEYS = (
    rsa.RSAPublicKey,
    ec.EllipticCurvePublicKey,
    ed25519.Ed25519PublicKey,
    ed448.Ed448PublicKey,
)


@dataclass(frozen=True, slots=True)
class VerifyingKey:
    """One key and the one algorithm it verifies; ``kid`` from a JWKS, else None."""

    key: Any  # a secret (bytes) or a cryptography public key
    algorithm: str
    kid: str | None = None


def load_public_key(pem: str | bytes) -> VerifyingKey:
    """A PEM public key (or certificate) and the algorithm its type allows.

    Raises:
        ValueError: not a PEM public key, a private key, an RSA key under 2048
            bits, or a key type no JWT algorithm here uses.
    """
    data = pem.encode() if isinstance(pem, str) else pem
    if b"PRIVATE KEY" in data:
        raise ValueError("this is a private key: give the server only the public key")
    if b"-----BEGIN CERTIFICATE-----" in data:
        key: Any = x509.load_pem_x509_certificate(data).public_key()
    else:
        key = serialization.load_pem_public_key(data)
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"an RSA key must have at least {MIN_RSA_BITS} bits")
        return VerifyingKey(key, "RS256")
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _CURVES:
        return VerifyingKey(key, _CURVES[key.curve.name])
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return VerifyingKey(key, "EdDSA")
    raise ValueError(f"unsupported key type {type(key).__name__} (RSA, EC P-256/384/521, Ed25519)")


class _JwksFile:
    """The keys of a JWKS file, read again whenever the file changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._failed: tuple[int, int, int] | None = None  # a version that did not load
        try:
            self._seen = self._version()  # (inode, size, mtime) of what ``keys`` came from
        except OSError as exc:
            raise ValueError(f"cannot load JWKS file {path}: {exc}") from None
        self.keys = self._read()  # at startup a bad file is an error (ValueError)

    def current(self) -> list[VerifyingKey]:
        """The keys, re-read first if the file changed; a bad new version keeps the old keys."""
        try:
            version = self._version()
        except OSError as exc:  # removed: keep serving with what was there
            version = (0, 0, 0)
            if self._failed != version:
                log.error("cannot read the JWKS file %s: %s; keeping its keys", self.path, exc)
                self._failed = version
        if version != self._seen and version != self._failed:
            try:
                self.keys = self._read()
            except ValueError as exc:  # e.g. half written: try again once it changes
                log.error("the JWKS file %s is invalid: %s; keeping its keys", self.path, exc)
                self._failed = version
            else:
                self._seen, self._failed = version, None
                log.info("JWKS file %s reloaded: %d keys", self.path, len(self.keys))
        return self.keys

    def _version(self) -> tuple[int, int, int]:
        stat = os.stat(self.path)
        return (stat.st_ino, stat.st_size, stat.st_mtime_ns)

    def _read(self) -> list[VerifyingKey]:
        try:
            with open(self.path, "rb") as file:
                document = json.loads(file.read())
            keyset = jwt.PyJWKSet.from_dict(document)
        except (OSError, ValueError, AttributeError, jwt.PyJWTError) as exc:
            raise ValueError(f"cannot load JWKS file {self.path}: {exc}") from None
        keys = [
            VerifyingKey(k.key, k.algorithm_name, k.key_id)
            for k in keyset
            if k.algorithm_name in _JWKS_ALGORITHMS
            and k.public_key_use in (None, "sig")
            and isinstance(k.key, _PUBLIC_KEYS)  # a private JWK does not belong here
        ]
        skipped = len(document.get("keys", [])) - len(keys)
        if skipped:
            log.warning(
                "JWKS file %s: %d keys skipped (not signing public keys)", self.path, skipped
            )
        if not keys:
            raise ValueError(f"JWKS file {self.path} has no usable signing public key")
        return keys


class JwtAuthorizer:
    """Check a JWT's signature and grant what its claims say (see ``core.auth.grant``).

    Every key may verify: several secrets (rotation), PEM public keys and the
    keys of a JWKS file (chosen by the token's ``kid``). ``nbf`` and ``iat``
    are checked when present. With ``audience`` set a token's ``aud`` must
    name it; without, a token carrying an ``aud`` is refused (it was meant for
    someone else). With ``issuer`` set, ``iss`` must equal it.

    Args:
        secret: an HS256 secret or a sequence of them, each at least 32 bytes.
        clock: the time source for ``exp`` (seconds since the epoch).
        public_keys: PEM public keys (RSA ≥ 2048 bits, EC, Ed25519/Ed448).
        jwks_file: a JWKS JSON file, re-read when it changes.
        audience: the ``aud`` tokens must carry.
        issuer: the ``iss`` tokens must carry.

    Raises:
        ValueError: no key, a secret shorter than 32 bytes, or a key that
            cannot be loaded.
    """

    def __init__(
        self,
        secret: str | Sequence[str] | None = None,
        clock: Callable[[], float] = time.time,
        *,
        public_keys: Iterable[str | bytes] = (),
        jwks_file: str | None = None,
        audience: str | None = None,
        issuer: str | None = None,
    ) -> None:
        secrets = [secret] if isinstance(secret, str) else list(secret or ())
        for value in secrets:
            if len(value.encode()) < MIN_SECRET_BYTES:
                raise ValueError(f"the JWT secret must be at least {MIN_SECRET_BYTES} bytes")
        self.keys = [VerifyingKey(s.encode(), "HS256") for s in secrets]
        self.keys += [load_public_key(pem) for pem in public_keys]
        self.jwks = _JwksFile(jwks_file) if jwks_file else None
        if not self.keys and self.jwks is None:
            raise ValueError("a JWT authorizer needs a secret, a public key or a JWKS file")
        self.secret = secrets[0] if secrets else None
        self.audience = audience
        self.issuer = issuer
        self.clock = clock

    @classmethod
    def from_config(cls, config: Config) -> JwtAuthorizer | None:
        """The authorizer ``config``'s keys ask for, or None if it has none (auth off).

        Raises:
            ValueError: a key cannot be read or is unusable, or an audience or
                issuer is set without any key.
        """
        secrets = [*([config.jwt_secret] if config.jwt_secret else []), *config.jwt_secrets]
        if not (secrets or config.jwt_public_keys or config.jwks_file):
            if config.jwt_audience or config.jwt_issuer:
                raise ValueError("--jwt-audience/--jwt-issuer need a key to verify tokens with")
            return None
        pems = []
        for path in config.jwt_public_keys:
            try:
                with open(path, "rb") as file:
                    pems.append(file.read())
                load_public_key(pems[-1])
            except (OSError, ValueError) as exc:
                raise ValueError(f"cannot use the public key {path}: {exc}") from None
        return cls(
            secrets,
            public_keys=pems,
            jwks_file=config.jwks_file,
            audience=config.jwt_audience,
            issuer=config.jwt_issuer,
        )

    def __call__(self, request: Request, name: str) -> Permission:
        token = token_of(request)
        if not token:
            raise Unauthorized("missing token")
        return self.check(token, name)

    def check(self, token: str, name: str) -> Permission:
        """Return the permission ``token`` grants on ``name``.

        Raises:
            Unauthorized: bad signature, an algorithm no key verifies, wrong
                or unexpected audience, wrong issuer, malformed claims or expired.
            Forbidden: valid, but ``docs`` does not match ``name``.
        """
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        for key in self._candidates(header):
            try:
                claims = jwt.decode(
                    token,
                    key.key,
                    algorithms=[key.algorithm],  # the key's, whatever the header says
                    audience=self.audience,
                    issuer=self.issuer,
                    options={"require": ["exp"], "verify_exp": False},
                )
            except jwt.InvalidSignatureError:
                continue  # maybe the next key (rotation)
            except jwt.PyJWTError as exc:
                raise Unauthorized(f"invalid token: {exc}") from None
            return grant(claims, name, self.clock())
        raise Unauthorized("invalid token: Signature verification failed")

    def _candidates(self, header: dict[str, Any]) -> list[VerifyingKey]:
        """The keys that may verify a token with this header (its ``alg``, its ``kid``)."""
        keys = [*self.keys, *(self.jwks.current() if self.jwks is not None else ())]
        alg, kid = header.get("alg"), header.get("kid")
        usable = [k for k in keys if k.algorithm == alg]
        if not usable:
            raise Unauthorized("invalid token: The specified alg value is not allowed")
        if kid is not None:
            named = [k for k in usable if k.kid == kid]
            usable = named or [k for k in usable if k.kid is None]
            if not usable:
                raise Unauthorized("invalid token: no key has this kid")
        return usable


async def permit(authorize: Authorize, request: Any, name: str) -> Permission:
    """Run the ``authorize`` hook (sync or async) and check what it returned.

    Raises:
        CollabError: the hook refused (``Unauthorized``, ``Forbidden``, ...).
        TypeError: the hook returned something other than a ``Permission``.
    """
    result = authorize(request, name)
    return checked(await result if inspect.isawaitable(result) else result)


def checked(permission: object) -> Permission:
    """What an ``authorize`` hook returned (awaited), if it is a ``Permission``.

    Raises:
        TypeError: it is something else.
    """
    if not isinstance(permission, Permission):
        raise TypeError(f"authorize() returned {permission!r}, not a Permission")
    return permission
