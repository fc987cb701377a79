"""What was made from a large message (its compressed fragments, its parts), kept for the
next socket that sends the same message.

Looked up by the message's identity (a fresh client's step 2 is one bytes object
until the document changes) and a key (the window size); the oldest go first once
the messages kept pass ``bound`` bytes. Holding the message keeps its ``id`` unique.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["Kept"]

T = TypeVar("T")


class Kept(Generic[T]):
    """``value``s made from messages, at most ``bound`` bytes of messages (the last one always)."""

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self.size = 0  # bytes of the messages kept
        self._items: OrderedDict[tuple[int, Hashable], tuple[bytes, T]] = OrderedDict()

    def get(self, data: bytes, key: Hashable = None) -> T | None:
        """What was kept for ``data`` (and ``key``), now the most recent; None if nothing."""
        entry = self._items.get((id(data), key))
        if entry is None or entry[0] is not data:
            return None
        self._items.move_to_end((id(data), key))
        return entry[1]

    def put(self, data: bytes, value: T, key: Hashable = None) -> None:
        """Keep ``value`` for ``data``; drop the oldest past the bound."""
        self.discard(data, key)
        self._items[(id(data), key)] = (data, value)
        self.size += len(data)
        while self.size > self.bound and len(self._items) > 1:
            _, (old, _) = self._items.popitem(last=False)
            self.size -= len(old)

    def discard(self, data: bytes, key: Hashable = None) -> None:
        entry = self._items.get((id(data), key))
        if entry is not None and entry[0] is data:
            del self._items[(id(data), key)]
            self.size -= len(data)
