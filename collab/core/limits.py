"""How much one client may send, hold open and leave waiting: pure rules.

Rule: pure. No I/O, no tornado, no asyncio, no clock (callers pass ``now``).
The shell (``handler``) asks these objects and turns a refusal into a close
code; nothing here knows about sockets.

* ``TokenBucket``: a rate with a burst, for messages and bytes per connection
  (close 1008 when empty).
* ``Counter``: connections per key (an IP address), refused past a cap.
* ``Outbox``: the frames a slow reader has not taken yet; document updates are
  merged with ``pycrdt.merge_updates`` and awareness keeps the newest state per
  client (``awareness.newer``, the room's rule), so a lagging reader costs the
  size of what changed, not of every message; past its bound the connection is
  closed (1013).
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable

from pycrdt import merge_updates

from . import protocol
from .awareness import newer
from .errors import PolicyViolation, ProtocolError
from .protocol import AwarenessEntry, AwarenessUpdate, Update

__all__ = ["Counter", "Outbox", "TokenBucket", "coalesce"]


class TokenBucket:
    """``rate`` units per second, at most ``burst`` saved up; ``rate <= 0`` is no limit.

    Args:
        rate: units added per second.
        burst: the bucket's size, and its level at ``now``.
        now: the time the bucket starts full (any monotonic clock, in seconds).
    """

    __slots__ = ("burst", "level", "rate", "stamp")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = max(burst, 0.0)
        self.level = self.burst
        self.stamp = now

    def take(self, cost: float, now: float) -> bool:
        """Spend ``cost`` units at ``now``; False (and nothing spent) if there are too few."""
        if self.rate <= 0:
            return True
        elapsed = max(0.0, now - self.stamp)
        self.stamp = max(self.stamp, now)
        self.level = min(self.burst, self.level + elapsed * self.rate)
        if cost > self.level:
            return False
        self.level -= cost
        return True


class Counter:
    """Open connections per key, at most ``cap`` each (``cap <= 0``: unlimited)."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.counts: dict[Hashable, int] = {}

    def acquire(self, key: Hashable) -> None:
        """Count one more for ``key``.

        Raises:
            PolicyViolation: ``key`` already holds ``cap``; nothing was counted.
        """
        count = self.counts.get(key, 0)
        if 0 < self.cap <= count:
            raise PolicyViolation(f"too many connections from {key} (limit {self.cap})")
        self.counts[key] = count + 1

    def release(self, key: Hashable) -> None:
        """Count one fewer for ``key`` (forgotten at zero, so memory stays bounded)."""
        count = self.counts.get(key, 0) - 1
        if count > 0:
            self.counts[key] = count
        else:
            self.counts.pop(key, None)


def coalesce(frames: list[bytes]) -> list[bytes]:
    """Merge waiting frames: every update into one, awareness to the newest per client.

    Other frames (sync step 1/2, auth, anything unreadable) keep their order
    and come first. The result means the same to a Yjs client as ``frames``
    did: updates commute, and per client the entry kept is the first of those
    no later one is ``newer`` than, the one a client applying them all keeps.
    """
    others: list[bytes] = []
    updates: list[bytes] = []
    states: dict[int, AwarenessEntry] = {}
    for frame in frames:
        try:
            message = protocol.decode(frame)
            if isinstance(message, AwarenessUpdate):
                for entry in protocol.decode_awareness(message.payload):
                    current = states.get(entry.client_id)
                    if current is None or newer(entry, current):
                        states[entry.client_id] = entry
                continue
        except ProtocolError:
            others.append(frame)
            continue
        if isinstance(message, Update):
            updates.append(message.update)
        else:
            others.append(frame)
    if len(updates) > 1:
        with contextlib.suppress(ValueError):  # else keep them; the bound still holds
            updates = [merge_updates(*updates)]
    out = others + [protocol.encode(Update(u)) for u in updates]
    if states:
        payload = protocol.encode_awareness(list(states.values()))
        out.append(protocol.encode(AwarenessUpdate(payload)))
    return out


class Outbox:
    """Frames waiting for a slow reader, at most ``bound`` bytes once merged."""

    __slots__ = ("bound", "frames", "merged", "size")

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self.frames: list[bytes] = []
        self.size = 0
        self.merged = 0  # ``size`` right after the last merge

    def put(self, frame: bytes) -> bool:
        """Queue ``frame``; False when even merged the waiting frames pass ``bound``.

        Merging runs each time the queue has doubled since the last merge, so
        its cost stays proportional to what arrives.
        """
        self.frames.append(frame)
        self.size += len(frame)
        if self.size > max(self.bound, 2 * self.merged):
            self.frames = coalesce(self.frames)
            self.size = self.merged = sum(map(len, self.frames))
        return self.size <= self.bound

    def take(self) -> list[bytes]:
        """Everything waiting, merged, and an empty queue."""
        frames = coalesce(self.frames) if len(self.frames) > 1 else self.frames
        self.frames, self.size, self.merged = [], 0, 0
        return frames
