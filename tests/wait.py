"""Wait for a condition, never for a fixed time: the one polling helper of the tests.

``predicate`` says "not yet" by returning something falsy or by raising
``AssertionError``; at the deadline the last ``AssertionError`` is re-raised, so
a failure says what was still wrong. Whatever truthy value it returns is
returned. ``eventually`` is for tests on the event loop (the predicate may be a
coroutine function); ``eventually_sync`` blocks, for code with no loop (a
server process starting, Playwright's sync API).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

__all__ = ["eventually", "eventually_sync"]


async def eventually(
    predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02
) -> Any:
    """Poll ``predicate()`` (awaiting it if it returns an awaitable) until it is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        error: AssertionError | None = None
        try:
            result = predicate()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result
        except AssertionError as exc:
            error = exc
        if time.monotonic() > deadline:
            raise error or AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def eventually_sync(
    predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05
) -> Any:
    """Block, polling ``predicate()`` until it is truthy; for callers with no event loop."""
    deadline = time.monotonic() + timeout
    while True:
        error: AssertionError | None = None
        try:
            result = predicate()
            if result:
                return result
        except AssertionError as exc:
            error = exc
        if time.monotonic() > deadline:
            raise error or AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)
