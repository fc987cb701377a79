"""One webhook endpoint's undelivered events: bounded, and ``document.changed``
coalesced per document.

Rule: pure; no I/O, no clock (callers pass ``now``).

Each ``Pending`` event is waiting (``due`` is when it may be sent: at once, or
after a retry delay) or in flight. While a ``document.changed`` of a document
waits, a newer one for it is merged into it (``webhooks.merge``: counts
summed), so a receiver that was down gets one event per document, not a
backlog; one that is in flight stays as it is and the newer one waits beside
it. Past ``limit`` waiting events the oldest waiting one is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

from .webhooks import Event, merge

__all__ = ["Outbox", "Pending"]

CHANGED = "document.changed"


@dataclass
class Pending:
    event: Event
    due: float
    attempt: int = 0  # attempts made so far
    in_flight: bool = False


class Outbox:
    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.items: list[Pending] = []

    def __len__(self) -> int:
        return len(self.items)

    def put(self, event: Event, now: float) -> Event | None:
        """Queue ``event`` (due ``now``, or merged into a waiting change); the
        event dropped to stay within ``limit``, if any."""
        if event.type == CHANGED:
            waiting = self._waiting_change(event.name)
            if waiting is not None:
                waiting.event = merge(waiting.event, event)
                return None
        dropped = None
        if sum(not p.in_flight for p in self.items) >= self.limit:
            oldest = next(p for p in self.items if not p.in_flight)
            self.items.remove(oldest)
            dropped = oldest.event
        self.items.append(Pending(event, now))
        return dropped

    def next_due(self, now: float) -> Pending | None:
        """The first waiting event that is due at ``now``, marked in flight."""
        for pending in self.items:
            if not pending.in_flight and pending.due <= now:
                pending.in_flight = True
                return pending
        return None

    def earliest(self) -> float | None:
        """When the next waiting event falls due (None: nothing waits)."""
        dues = [p.due for p in self.items if not p.in_flight]
        return min(dues) if dues else None

    def done(self, pending: Pending) -> None:
        """``pending`` was delivered, or given up."""
        self.items.remove(pending)

    def retry(self, pending: Pending, due: float) -> None:
        """``pending`` failed: it waits until ``due``; a change that arrived for the
        same document meanwhile absorbs it (and keeps its own due time)."""
        pending.attempt += 1
        pending.in_flight = False
        pending.due = due
        if pending.event.type == CHANGED:
            newer = self._waiting_change(pending.event.name, after=pending)
            if newer is not None:
                newer.event = merge(pending.event, newer.event)
                newer.attempt = max(newer.attempt, pending.attempt)
                newer.due = max(newer.due, due)
                self.items.remove(pending)

    def clear(self) -> list[Event]:
        """Drop everything waiting (the endpoint is gone); what was dropped."""
        waiting = [p for p in self.items if not p.in_flight]
        self.items = [p for p in self.items if p.in_flight]
        return [p.event for p in waiting]

    def _waiting_change(self, name: str, after: Pending | None = None) -> Pending | None:
        for pending in self.items:
            if pending is after or pending.in_flight:
                continue
            if pending.event.type == CHANGED and pending.event.name == name:
                return pending
        return None
