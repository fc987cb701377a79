"""How much one client may send, hold open and leave waiting: pure rules.

Rule: pure. No I/O, no tornado, no asyncio, no clock (callers pass ``now``).
The shell (``handler``) asks these objects and turns a refusal into a close
code; nothing here knows about sockets.

* ``TokenBucket``: a rate with a burst, for messages and bytes per connection
  (close 1008 when empty).
* ``Counter``: connections per key (an IP address), refused past a cap, and
  in total (HTTP 503 past ``max_connections``).
* ``KeyedBuckets``: a ``TokenBucket`` per client address (the HTTP API rate),
  forgetting idle ones so memory stays bounded.
* ``message_bound``: the largest WebSocket message a client may send, which
  is ``max_document_bytes`` (a reconnecting client's step 2 can carry its whole
  offline state), not a frame cap of its own.
* ``StateBudget``: an upper estimate of a document's encoded size, so an
  update that would grow it past ``max_document_bytes`` is refused without
  encoding the document for each update.
* ``Outbox``: the frames a slow reader has not taken yet; document updates are
  merged with ``pycrdt.merge_updates`` and awareness keeps the newest state per
  client (``awareness.newer``, the room's rule), so a lagging reader costs the
  size of what changed, not of every message; past its bound the connection is
  closed (1013).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable

from pycrdt import merge_updates

from . import protocol
from .awareness import newer
from .config import Config
from .errors import DocumentTooLarge, Overloaded, PolicyViolation, ProtocolError
from .protocol import AwarenessEntry, AwarenessUpdate, Update

__all__ = [
    "CONNECTIONS_RETRY_AFTER",
    "Counter",
    "KeyedBuckets",
    "Outbox",
    "StateBudget",
    "TokenBucket",
    "coalesce",
    "message_bound",
    "update_cost",
]

CONNECTIONS_RETRY_AFTER = 5.0  # seconds a client refused for a connection cap is told to wait


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

    def wait(self, cost: float) -> float:
        """Seconds from the last ``take`` until ``cost`` units are saved up (0: now)."""
        if self.rate <= 0 or cost <= self.level:
            return 0.0
        return (min(cost, self.burst) - self.level) / self.rate

    def full(self, now: float) -> bool:
        """True if the bucket has refilled to its burst by ``now`` (nothing to remember)."""
        return self.level + max(0.0, now - self.stamp) * self.rate >= self.burst


class KeyedBuckets:
    """A ``TokenBucket`` per key (a client address); ``rate <= 0`` is no limit.

    A bucket that has refilled holds nothing worth keeping, so such buckets are
    forgotten whenever the map has doubled since the last sweep; past
    ``max_keys`` even then, the oldest are forgotten (they start afresh, full).
    """

    def __init__(self, rate: float, burst: float, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = max(burst, 1.0)
        self.max_keys = max_keys
        self.buckets: dict[Hashable, TokenBucket] = {}
        self._swept = 0  # size after the last sweep

    def take(self, key: Hashable, now: float, cost: float = 1.0) -> float:
        """Spend ``cost`` of ``key``'s bucket at ``now``.

        Returns:
            0.0 if allowed, else the seconds to wait before asking again (the
            ``Retry-After``); nothing was spent.
        """
        if self.rate <= 0:
            return 0.0
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= max(2 * self._swept, 1024):
                self._sweep(now)
            bucket = self.buckets[key] = TokenBucket(self.rate, self.burst, now)
        if bucket.take(cost, now):
            return 0.0
        return max(bucket.wait(cost), 1e-3)

    def _sweep(self, now: float) -> None:
        self.buckets = {k: b for k, b in self.buckets.items() if not b.full(now)}
        while len(self.buckets) >= self.max_keys:
            del self.buckets[next(iter(self.buckets))]
        self._swept = len(self.buckets)


class Counter:
    """Open connections per key, at most ``cap`` each and ``total_cap`` in all (<= 0: unlimited)."""

    def __init__(self, cap: int, total_cap: int = 0) -> None:
        self.cap = cap
        self.total_cap = total_cap
        self.total = 0
        self.counts: dict[Hashable, int] = {}

    def acquire(self, key: Hashable) -> None:
        """Count one more for ``key``.

        Raises:
            Overloaded: ``total_cap`` are counted already (HTTP 503).
            PolicyViolation: ``key`` already holds ``cap`` (HTTP 429).
            Either way nothing was counted, and the error's ``retry_after`` is set.
        """
        if 0 < self.total_cap <= self.total:
            raise Overloaded(
                f"server has too many connections (limit {self.total_cap})",
                retry_after=CONNECTIONS_RETRY_AFTER,
            )
        count = self.counts.get(key, 0)
        if 0 < self.cap <= count:
            raise PolicyViolation(
                f"too many connections from {key} (limit {self.cap})",
                retry_after=CONNECTIONS_RETRY_AFTER,
            )
        self.counts[key] = count + 1
        self.total += 1

    def release(self, key: Hashable) -> None:
        """Count one fewer for ``key`` (forgotten at zero, so memory stays bounded)."""
        count = self.counts.get(key, 0) - 1
        if count >= 0:
            self.total -= 1
        if count > 0:
            self.counts[key] = count
        else:
            self.counts.pop(key, None)


ENVELOPE_BYTES = 64  # a y-protocols message's type and length varuints, with room to spare


def message_bound(config: Config) -> int:
    """The largest WebSocket message (after decompression) a socket accepts; 0: no limit.

    ``max_document_bytes`` is the real bound: no message larger than the
    largest document can be a legitimate update or step 2, and anything up to
    it may be (a client reconnecting with its offline edits sends them as one
    step 2). ``StateBudget`` then decides whether the document may grow by
    it. ``max_message_bytes`` bounds messages only when documents are
    unlimited (``max_document_bytes`` 0); it still bounds HTTP request bodies.
    """
    if config.max_document_bytes > 0:
        return config.max_document_bytes + ENVELOPE_BYTES
    return config.max_message_bytes


def update_cost(size: int) -> int:
    """An upper bound of what an update of ``size`` bytes can add to a document's encoding.

    Applying an update can split items already in the document, each split
    costing a struct header the update does not carry; measured, that stays
    well under the update's own size plus a few dozen bytes.
    """
    return 2 * size + 64


class StateBudget:
    """Keeps a document's encoded size (``Doc.get_update()``) at most ``limit`` bytes.

    ``estimate`` is an upper bound of the encoded size: exact after a
    measurement, raised by ``update_cost`` of each update applied since. An
    update is admitted at once while the estimate has room; near the limit the
    real size is measured (once per change), and the update is refused if it
    could pass the limit. ``limit <= 0`` admits everything.
    """

    __slots__ = ("estimate", "exact", "limit")

    def __init__(self, limit: int, estimate: int = 0) -> None:
        self.limit = limit
        self.estimate = estimate
        self.exact = estimate == 0

    def admit(self, cost: int, measure: Callable[[], int]) -> None:
        """Check an update that may add ``cost`` bytes; ``measure()`` is the exact size.

        Call ``grow(cost)`` once it is applied.

        Raises:
            DocumentTooLarge: it could grow the document past ``limit``; apply nothing.
        """
        if self.limit <= 0 or self.estimate + cost <= self.limit:
            return
        if not self.exact:
            self.estimate, self.exact = measure(), True
        if self.estimate + cost > self.limit:
            raise DocumentTooLarge(f"document too large: limit {self.limit} bytes")

    def grow(self, cost: int) -> None:
        """An update that may add ``cost`` bytes was applied."""
        self.estimate += cost
        self.exact = False


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
    """Frames waiting for a slow reader: once merged, at most ``bound`` bytes beyond the
    largest frame put (one message larger than the bound, a large paste or a step 2
    the document admitted, is held whole rather than closing the reader)."""

    __slots__ = ("bound", "frames", "largest", "merged", "size")

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self.frames: list[bytes] = []
        self.size = 0
        self.merged = 0  # ``size`` right after the last merge
        self.largest = 0

    def put(self, frame: bytes) -> bool:
        """Queue ``frame``; False when even merged the waiting frames pass the bound.

        Merging runs each time the queue has doubled since the last merge, so
        its cost stays proportional to what arrives.
        """
        self.frames.append(frame)
        self.size += len(frame)
        self.largest = max(self.largest, len(frame))
        limit = self.bound + self.largest
        if self.size > max(limit, 2 * self.merged):
            self.frames = coalesce(self.frames)
            self.size = self.merged = sum(map(len, self.frames))
        return self.size <= limit

    def take(self) -> list[bytes]:
        """Everything waiting, merged, and an empty queue."""
        frames = coalesce(self.frames) if len(self.frames) > 1 else self.frames
        self.frames, self.size, self.merged, self.largest = [], 0, 0, 0
        return frames
