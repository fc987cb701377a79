"""Timing and size rules, as pure functions of their inputs.

Rule: pure; no I/O, no clock (callers pass ``now``).
"""

from __future__ import annotations

__all__ = ["COMPACT_SHARE", "backoff_delay", "debounce_delay", "should_compact"]


# A log may grow to this share of the document's encoded size before a compaction.
COMPACT_SHARE = 0.25


def should_compact(log_bytes: int, limit: int, state_bytes: int = 0) -> bool:
    """True once a document's log has grown past ``limit`` bytes and past a quarter
    of the document's size (``state_bytes``: its last snapshot's).

    A compaction encodes the whole document, which for a large one holds the
    GIL for a tenth of a second or more (every room waits). Relative to its
    size, a large document compacts as rarely per byte logged as a small one:
    at most 1 + 1/COMPACT_SHARE bytes written per byte logged, and a load
    replays at most a quarter of the state on top of the snapshot.
    """
    return log_bytes > max(limit, int(state_bytes * COMPACT_SHARE))


def backoff_delay(attempt: int, base: float = 0.1, cap: float = 10.0) -> float:
    """Upper bound of the wait before retry number ``attempt`` (0-based)."""
    return min(cap, base * 2.0**attempt)


def debounce_delay(first: float, last: float, now: float, quiet: float, max_delay: float) -> float:
    """Seconds from ``now`` until a debounced call is due (0: now).

    Due ``quiet`` seconds after the ``last`` trigger, but never later than
    ``max_delay`` after the ``first`` one of the burst.
    """
    return max(0.0, min(last + quiet, first + max_delay) - now)
