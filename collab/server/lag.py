"""How late the event loop runs what is due: ``collab_loop_lag_seconds``.

A timer asks to wake every ``interval`` seconds and measures how much later
than asked it did. On an idle server that is a fraction of a millisecond;
anything that holds the loop (a huge apply, a slow callback) shows at once,
for every document, which is what a per-document latency figure hides.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

__all__ = ["LagMonitor"]


class LagMonitor:
    """Samples loop lag into ``observe`` (a Prometheus histogram's ``observe``)."""

    def __init__(self, observe: Callable[[float], None], interval: float = 0.25) -> None:
        self._observe = observe
        self.interval = interval
        self.worst = 0.0  # since start: for logs and tests
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            lag = max(0.0, loop.time() - due)
            self.worst = max(self.worst, lag)
            self._observe(lag)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
