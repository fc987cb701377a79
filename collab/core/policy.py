"""Timing and size rules, as pure functions of their inputs.

Rule: pure; no I/O, no clock (callers pass ``now``).
"""

from __future__ import annotations

__all__ = ["backoff_delay", "should_compact"]


def should_compact(log_bytes: int, limit: int) -> bool:
    """True once a document's log has grown past ``limit`` bytes."""
    return log_bytes > limit


def backoff_delay(attempt: int, base: float = 0.1, cap: float = 10.0) -> float:
    """Upper bound of the wait before retry number ``attempt`` (0-based)."""
    return min(cap, base * (2**attempt))
