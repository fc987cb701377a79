"""Long typing runs: the room breaks them with invisible tombstones, and loads them in batches.

yrs re-measures a client's whole merged block at every append (see
``collab/core/runs.py``); these tests check the behaviour that keeps that cost
flat without changing what anybody sees: the text stays exact, every peer
converges, and what is logged restores to the same document.
"""

from __future__ import annotations

import random

from pycrdt import Doc, Map, Text, merge_updates

from collab.core import protocol
from collab.core.protocol import SyncStep2, Update
from collab.core.room import RUN_BOUND, Room
from collab.core.runs import Runs, string_append

from .crdt import end_appends, feed, payloads, state_vector, text_of

WRITER = 3_000_000_000  # a client id like a real Yjs client's (random 32-bit)


def chunks(n: int, start: int = 0) -> list[str]:
    return [f"[q{i}]" for i in range(start, start + n)]


# -- reading an update's shape ---------------------------------------------------------


def test_a_keystroke_that_continues_its_own_run_is_recognised() -> None:
    first, second = end_appends(["hé", "llo"], WRITER)
    assert string_append(first) == (WRITER, False, 3)  # no left origin: it starts the text
    assert string_append(second) == (WRITER, True, 3)


def test_a_keystroke_after_someone_elses_text_starts_a_new_run() -> None:
    doc: Doc = Doc(client_id=5)
    text = doc.get("content", type=Text)
    text += "abc"
    writer: Doc = Doc(client_id=WRITER)
    writer.apply_update(doc.get_update())
    updates: list[bytes] = []
    writer.observe(lambda event: updates.append(event.update))
    writer.get("content", type=Text).insert(3, "xyz")
    assert string_append(updates[0]) == (WRITER, False, 3)


def test_deletions_and_other_shapes_are_not_runs() -> None:
    doc: Doc = Doc(client_id=WRITER)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    text = doc.get("content", type=Text)
    text += "abc"
    del text[1:2]
    doc.get("meta", type=Map)["k"] = "v"
    assert [string_append(u) for u in updates[1:]] == [None, None]


def test_truncated_and_random_bytes_never_raise() -> None:
    update = end_appends(["ab", "cd"], WRITER)[1]
    for cut in range(len(update)):
        string_append(update[:cut])
    rng = random.Random(7)
    for _ in range(2000):
        string_append(bytes([1, 1]) + rng.randbytes(rng.randrange(0, 20)))


def test_a_run_is_due_once_it_passes_the_bound_and_counts_again_from_zero() -> None:
    runs = Runs(bound=20)
    updates = end_appends(chunks(12), WRITER)  # "[q0]" .. "[q9]": 4 bytes each, then 5
    due = [runs.should_break(u) for u in updates]
    assert due == [False] * 4 + [True] + [False] * 4 + [True] + [False] * 2


def test_a_continuing_run_the_table_never_saw_start_is_due_at_once() -> None:
    runs = Runs(bound=1000)
    later = end_appends(chunks(3), WRITER)[2]
    assert runs.should_break(later)
    assert not Runs(bound=0).should_break(later)


# -- the room breaks runs -------------------------------------------------------------------


def test_a_long_run_at_the_end_is_broken_and_every_peer_sees_the_exact_text() -> None:
    room, writer = Room("doc"), object()
    room.join(writer)
    typed = chunks(3000)
    logged, relayed = feed(room, writer, end_appends(typed, WRITER))

    expected = "".join(typed)
    assert room.text == expected
    assert text_of(payloads(relayed)) == expected  # a subscriber's copy
    breaks = len(relayed) - len(typed)
    assert breaks >= len(expected.encode()) // RUN_BOUND - 1
    assert breaks <= len(expected.encode()) // RUN_BOUND + 1

    reloaded = Room("doc")
    reloaded.restore(logged)
    assert reloaded.text == expected
    assert reloaded.doc.get_state() == room.doc.get_state()


def test_the_writer_that_applies_the_breaks_keeps_typing_into_the_same_text() -> None:
    room, peer = Room("doc"), object()
    room.join(peer)
    writer: Doc = Doc(client_id=WRITER)
    text = writer.get("content", type=Text)
    outgoing: list[bytes] = []
    writer.observe(lambda event: outgoing.append(event.update))
    for i in range(1500):
        text += f"<{i}>"
        update, outgoing[:] = outgoing[0], []
        effects = room.receive(peer, protocol.encode(Update(update)))
        for frame in effects.relay[1:]:  # the server's own edits come back to everyone
            writer.apply_update(payloads([frame])[0])
        outgoing.clear()  # applying a remote update is not news to send
    assert str(text) == room.text == "".join(f"<{i}>" for i in range(1500))
    assert state_vector(writer) == state_vector(room.doc)


def test_a_reloaded_document_breaks_a_continuing_run_at_once() -> None:
    updates = end_appends(chunks(50), WRITER)
    room = Room("doc")
    room.restore(updates[:49])
    peer = object()
    room.join(peer)
    effects = room.receive(peer, protocol.encode(Update(updates[49])))
    assert len(effects.relay) == 2  # the keystroke as received, then the break
    assert room.text == "".join(chunks(50))


def test_a_pasted_block_is_broken_at_the_first_keystroke_after_it() -> None:
    block = "".join(random.Random(1).choice("abcdefgh ") for _ in range(200_000))
    room, peer = Room("doc"), object()
    room.join(peer)
    someone: Doc = Doc(client_id=5)
    someone.get("content", type=Text).insert(0, "start ")
    room.receive(peer, protocol.encode(SyncStep2(someone.get_update())))
    writer: Doc = Doc(client_id=WRITER)
    writer.apply_update(someone.get_update())
    outgoing: list[bytes] = []
    writer.observe(lambda event: outgoing.append(event.update))
    text = writer.get("content", type=Text)
    text.insert(6, block)
    pasted = room.receive(peer, protocol.encode(Update(outgoing[0])))
    assert len(pasted.relay) == 1  # the paste alone is relayed as it came
    text += "!"
    typed = room.receive(peer, protocol.encode(Update(outgoing[1])))
    assert len(typed.relay) == 2  # the keystroke after it, then the break
    assert room.text == "start " + block + "!"


def test_content_of_another_shared_type_is_never_touched() -> None:
    room, peer = Room("doc"), object()
    room.join(peer)
    writer: Doc = Doc(client_id=WRITER)
    updates: list[bytes] = []
    writer.observe(lambda event: updates.append(event.update))
    notes = writer.get("notes", type=Text)
    for i in range(600):
        notes += f"[n{i}]"
    _, relayed = feed(room, peer, updates)
    assert len(relayed) == len(updates)  # nothing of ours was added
    assert room.text == ""
    assert str(room.doc.get("notes", type=Text)) == str(notes)


# -- loading long runs ------------------------------------------------------------------------


def test_a_log_of_40000_appends_restores_to_the_exact_text() -> None:
    typed = chunks(40_000)
    room = Room("doc")
    room.restore(end_appends(typed, WRITER))
    assert room.text == "".join(typed)


def test_merged_application_gives_the_same_document_as_one_by_one() -> None:
    rng = random.Random(3)
    updates = end_appends(chunks(1500), WRITER)
    one_by_one: Doc = Doc()
    for update in updates:
        one_by_one.apply_update(update)
    merged: Doc = Doc()
    start = 0
    while start < len(updates):  # merges of random sizes, as a group commit would make
        size = rng.randrange(1, 300)
        merged.apply_update(merge_updates(*updates[start : start + size]))
        start += size
    batched = Room("doc")
    batched.restore(updates)
    texts = {str(d.get("content", type=Text)) for d in (one_by_one, merged, batched.doc)}
    assert texts == {"".join(chunks(1500))}
    assert one_by_one.get_state() == merged.get_state() == batched.doc.get_state()
