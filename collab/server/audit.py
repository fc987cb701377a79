"""The audit trail: who created, replaced, deleted or restored which document.

``AuditLog`` is an extension every ``Hub`` runs (first): each ``AuditEvent``
becomes one ``info`` line on the ``collab.audit`` logger, with the JSON fields
``event: "audit"``, ``action``, ``document``, ``sub`` (``-`` if anonymous),
``remote`` (``-`` if unknown) and, for a WebSocket, ``connection``. Like every
"after" hook it runs off the message path, and only for these rare actions,
never per update. Send it elsewhere or silence it with the ``logging`` module
(``logging.getLogger("collab.audit")``).
"""

from __future__ import annotations

import logging
from typing import Any

from .extensions import AuditEvent, Extension

__all__ = ["AuditLog"]

log = logging.getLogger("collab.audit")


class AuditLog(Extension):
    """Logs every ``AuditEvent`` as one line."""

    def on_audit(self, event: AuditEvent) -> None:
        sub, remote = event.sub or "-", event.remote or "-"
        fields: dict[str, Any] = {
            "event": "audit",
            "action": event.action,
            "document": event.document,
            "sub": sub,
            "remote": remote,
        }
        if event.connection is not None:
            fields["connection"] = event.connection
        log.info(
            "audit: %s %r by %s from %s", event.action, event.document, sub, remote, extra=fields
        )
