"""Every way a client can be refused, and what it is told.

Each error carries the WebSocket close code (and, for errors raised before the
upgrade, the HTTP status) that the shell uses. This table is the one place that
maps situations to codes; the handler only reads ``close_code``/``http_status``.

===========================  ======  ======  ==========================================
error                        close   HTTP    situation
===========================  ======  ======  ==========================================
``BadName``                  --      400     document name invalid (before upgrade)
``Unauthorized``             4401    401     missing, invalid or expired token
``Forbidden``                4403    403     token does not grant this document / write
``UnsupportedData``          1003    --      text frame where binary is required
``ProtocolError``            1007    --      undecodable y-protocols message
``BadUpdate``                1007    --      Yjs update that the CRDT rejects
``PolicyViolation``          1008    429     rate limit or connection cap exceeded
``MessageTooBig``            1009    413     frame or awareness state over its limit
``DocumentTooLarge``         1009    413     update would grow the document past its limit
``SlowConsumer``             1013    --      outgoing queue over its bound
``Overloaded``               1013    503     too many documents loaded; try again later
``DocumentUnavailable``      1011    503     stored document unreadable; refuses to open
``StoreUnavailable``         1013    503     the store (Redis) cannot take writes now
``DocumentDeleted``          4404    404     document deleted while connected
``ShuttingDown``             1001    503     server stopping
===========================  ======  ======  ==========================================

An error may carry ``retry_after`` (seconds): the shell sends it as the HTTP
``Retry-After`` header of the refusal (rate limits, connection caps).
"""

from __future__ import annotations

__all__ = [
    "BadName",
    "BadUpdate",
    "CollabError",
    "DocumentDeleted",
    "DocumentTooLarge",
    "DocumentUnavailable",
    "Forbidden",
    "MessageTooBig",
    "NotFound",
    "Overloaded",
    "PolicyViolation",
    "ProtocolError",
    "ShuttingDown",
    "SlowConsumer",
    "StoreUnavailable",
    "Unauthorized",
    "UnsupportedData",
]


class CollabError(Exception):
    """Base of every error a client can be told about."""

    close_code: int = 1011
    http_status: int = 500

    def __init__(self, reason: str = "", retry_after: float | None = None) -> None:
        super().__init__(reason or self.__class__.__name__)
        self.reason = reason or self.__class__.__name__
        self.retry_after = retry_after  # seconds, for an HTTP ``Retry-After``


class BadName(CollabError):
    close_code, http_status = 1008, 400


class Unauthorized(CollabError):
    close_code, http_status = 4401, 401


class Forbidden(CollabError):
    close_code, http_status = 4403, 403


class UnsupportedData(CollabError):
    close_code, http_status = 1003, 400


class BadFrame(CollabError):
    """A frame the WebSocket protocol refuses (as websockets does: 1002)."""

    close_code, http_status = 1002, 400


class ProtocolError(CollabError):
    close_code, http_status = 1007, 400


class BadUpdate(ProtocolError):
    pass


class PolicyViolation(CollabError):
    close_code, http_status = 1008, 429


class MessageTooBig(CollabError):
    close_code, http_status = 1009, 413


class DocumentTooLarge(MessageTooBig):
    pass


class SlowConsumer(CollabError):
    close_code, http_status = 1013, 503


class Overloaded(CollabError):
    close_code, http_status = 1013, 503


class DocumentUnavailable(CollabError):
    close_code, http_status = 1011, 503


class StoreUnavailable(CollabError):
    close_code, http_status = 1013, 503


class DocumentDeleted(CollabError):
    close_code, http_status = 4404, 404


class ShuttingDown(CollabError):
    close_code, http_status = 1001, 503


class NotFound(CollabError):
    """No such thing (a version of a document): HTTP 404."""

    close_code, http_status = 4404, 404
