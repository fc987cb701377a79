"""A client's membership of one document, and what the server needs of a client.

``Hub.join`` returns a ``Session``; the socket layer calls ``receive`` with
each message and ``leave`` once when it goes. Nothing here parses bytes: the
document's room does.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, Protocol

from ..core.auth import Permission

if TYPE_CHECKING:
    from .document import Document

__all__ = ["Peer", "Session"]


class Peer(Hashable, Protocol):
    """A connected client as the server sees it (a WebSocket, or a test's recorder)."""

    def send(self, data: bytes) -> None:
        """Queue ``data`` (one y-protocols message) as one frame; never blocks, never raises."""

    def close(self, code: int, reason: str) -> None:
        """Start closing with ``code``; the peer calls ``Session.leave`` when it is gone."""


class Session:
    """``peer`` editing ``document`` with ``permission``.

    ``author`` is who the document's records name: the token's ``sub`` when
    access control is on, else the connection's ``id``. ``remote`` is the
    client's address, if known (for the audit trail).
    """

    __slots__ = ("author", "document", "id", "peer", "permission", "remote", "writable")

    def __init__(
        self,
        document: Document,
        peer: Peer,
        permission: Permission,
        id: str,
        remote: str | None = None,
    ) -> None:
        self.document = document
        self.peer = peer
        self.permission = permission
        self.id = id
        self.remote = remote
        self.author = permission.user or id
        self.writable = permission.writable

    @property
    def name(self) -> str:
        return self.document.name

    def receive(self, data: bytes) -> None:
        """Apply one message; what it causes is logged, answered and relayed.

        Raises:
            CollabError: the message was refused; close the peer with its code.
        """
        self.document.receive(self, data)

    def leave(self) -> None:
        """The peer is gone: drop its presence; the document may unload when idle."""
        self.document.leave(self)

    def __repr__(self) -> str:
        return f"<Session {self.author} {self.name!r}>"
