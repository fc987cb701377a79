"""The cyclic garbage collector, tuned for a server holding many connections.

Why: CPython's collector walks every tracked object of the older generations
when it runs, and a full collection runs each time they grow by a quarter.
With 5,000 idle connections (about 33 tracked objects each, plus ~50,000 from
the imports) a full collection stopped the event loop for 60-110 ms, which was
most of the handshake p99 in ``make bench``'s connections step; it found no
garbage (the server's objects are freed by reference counting).

``tune`` freezes what exists once the server is started (modules, the app,
the hub: never garbage) so no collection walks it again, and lets the young
generation grow to ``YOUNG_OBJECTS`` allocations before a collection. Cycles
are still collected, just less often. ``collab serve`` calls it; a host that
embeds collab owns its process and decides for itself.
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_OBJECTS", "tune"]

YOUNG_OBJECTS = 10_000  # allocations between young collections (CPython's default: 700)


def tune() -> None:
    """Freeze the objects alive now and space out young collections; call once, after start."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_OBJECTS, middle, old)
