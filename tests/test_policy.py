"""When a document's log is folded into a new snapshot."""

from __future__ import annotations

from collab.core.policy import should_compact


def test_a_small_document_compacts_once_its_log_passes_the_limit():
    assert not should_compact(1000, limit=1024, state_bytes=2000)
    assert should_compact(1025, limit=1024, state_bytes=2000)


def test_a_large_document_compacts_once_its_log_passes_a_quarter_of_it():
    state = 80 << 20
    assert not should_compact(19 << 20, limit=1 << 20, state_bytes=state)
    assert should_compact(21 << 20, limit=1 << 20, state_bytes=state)


def test_a_document_without_a_snapshot_compacts_at_the_limit():
    assert should_compact(2 << 20, limit=1 << 20)
