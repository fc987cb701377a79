"""The collector tuning ``collab serve`` applies once started."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from collab.server import heap


@pytest.fixture
def restored_collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_objects_alive_at_start_are_never_walked_again(restored_collector: None) -> None:
    started = object.__new__(type("Started", (), {}))
    heap.tune()
    assert gc.get_freeze_count() > 0
    assert not any(o is started for o in gc.get_objects())  # frozen: out of every generation


def test_young_collections_wait_for_more_allocations(restored_collector: None) -> None:
    _, middle, old = gc.get_threshold()
    heap.tune()
    assert gc.get_threshold() == (heap.YOUNG_OBJECTS, middle, old)
    assert heap.YOUNG_OBJECTS > 700  # CPython's default


def test_cycles_made_after_start_are_still_collected(restored_collector: None) -> None:
    heap.tune()

    class Node:
        partner: object

    a, b = Node(), Node()
    a.partner, b.partner = b, a
    del a, b
    assert gc.collect() >= 2
