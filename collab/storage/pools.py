"""Thread pools whose threads all start together, before the first job.

``ThreadPoolExecutor`` starts a thread lazily, at a ``submit`` that finds no
idle one, and ``Thread.start`` then waits until the new thread has run, which
needs the GIL. On the event loop that wait can last as long as another
thread's GIL-holding call: a document store's pool growing from one thread to
two while a large document was merged stalled every room for 0.4 s. A pool
from ``started_pool`` never starts a thread after it is made.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

__all__ = ["started_pool"]


def started_pool(workers: int, prefix: str) -> ThreadPoolExecutor:
    """A pool of ``workers`` threads named ``prefix``, all running when it returns.

    Blocks the caller until they started (a few ms): make the pool before the
    loop has heavy work, or at its first use. Shut it down as usual.
    """
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=prefix)
    barrier = threading.Barrier(workers + 1)
    for _ in range(workers):  # each job waits, so each submit finds no idle thread
        pool.submit(barrier.wait)
    barrier.wait(timeout=30)
    return pool
