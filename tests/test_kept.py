"""``Kept``: what was made from a large message, found again by that very message."""

from __future__ import annotations

from collab.server.kept import Kept


def test_found_by_the_same_message_and_key_only() -> None:
    kept: Kept[str] = Kept(bound=100)
    message = bytes(10)
    kept.put(message, "fifteen", key=15)
    assert kept.get(message, 15) == "fifteen"
    assert kept.get(message, 9) is None  # another window
    assert kept.get(bytes(10), 15) is None  # equal bytes, another message


def test_the_oldest_go_first_past_the_bound_and_the_last_always_stays() -> None:
    kept: Kept[int] = Kept(bound=25)
    a, b, c = bytes(10), bytes(10), bytes(10)
    kept.put(a, 1)
    kept.put(b, 2)
    assert kept.get(a) == 1  # now the most recent
    kept.put(c, 3)  # 30 bytes: b, the least recent, goes
    assert (kept.get(a), kept.get(b), kept.get(c)) == (1, None, 3)
    assert kept.size == 20
    huge = bytes(50)
    kept.put(huge, 4)  # over the bound alone: kept, the rest dropped
    assert (kept.get(a), kept.get(c), kept.get(huge)) == (None, None, 4)
    kept.discard(huge)
    assert kept.get(huge) is None and kept.size == 0
