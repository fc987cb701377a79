"""Timing and size rules, as pure functions of their inputs.

Rule: pure; no I/O, no clock (callers pass ``now``).
"""

from __future__ import annotations

__all__ = ["backoff_delay", "debounce_delay", "should_compact"]


def should_compact(log_bytes: int, limit: int) -> bool:
    """True once a document's log has grown past ``limit`` bytes."""
    return log_bytes > limit


def backoff_delay(attempt: int, base: float = 0.1, cap: float = 10.0) -> float:
    """Upper bound of the wait before retry number ``attempt`` (0-based)."""
    return min(cap, base * 2.0**attempt)


def debounce_delay(first: float, last: float, now: float, quiet: float, max_delay: float) -> float:
    """Seconds from ``now`` until a debounced call is due (0: now).

    Due ``quiet`` seconds after the ``last`` trigger, but never later than
    ``max_delay`` after the ``first`` one of the burst.
    """
    return max(0.0, min(last + quiet, first + max_delay) - now)
