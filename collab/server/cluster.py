"""What a loaded document does with other processes' news (cluster mode).

A shared store (``storage.redis``) tells each loaded ``Document`` of records
other processes appended, of deletes, and of a Redis that may have lost
writes (``LogWatcher``); its presence channel brings other processes'
awareness (``PresenceListener``). ``Backplane`` turns each into room effects
relayed to local clients. States another process relayed are owned by a
``Process`` in the room, so they vanish together when it stops beating.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..core.errors import CollabError
from ..storage.base import Loaded, Record

if TYPE_CHECKING:
    from .document import Document

__all__ = ["Backplane", "Process"]

log = logging.getLogger("collab.hub")


@dataclass(frozen=True, slots=True)
class Process:
    """Another collab process, as the owner of the awareness states it relayed."""

    pid: str


class Backplane:
    """The ``LogWatcher`` and ``PresenceListener`` of one loaded document."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc

    # -- LogWatcher --------------------------------------------------------------

    def records(self, records: Sequence[Record]) -> None:
        self.doc.remote(records)

    def deleted(self) -> None:
        self.doc.deleted_elsewhere()

    def resync(self, loaded: Loaded) -> None:
        self.doc.resync(loaded)

    # -- PresenceListener ----------------------------------------------------------

    def frame(self, owner: str, frame: bytes) -> None:
        doc = self.doc
        try:
            effects = doc.room.remote_awareness(Process(owner), frame)
        except CollabError as exc:
            log.warning("awareness of %r from process %s refused: %s", doc.name, owner, exc.reason)
            return
        doc.relay_local(effects.relay)

    def query(self) -> None:
        doc = self.doc
        frame = doc.room.local_awareness(Process)
        if frame is not None and doc.presence is not None:
            doc.presence.publish(doc.name, frame)

    def gone(self, owner: str) -> None:
        self.doc.relay_local(self.doc.room.leave(Process(owner)).relay)
