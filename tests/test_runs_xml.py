"""Long typing runs in rich text: ProseMirror / Tiptap paragraphs (Y.XmlText in a Y.XmlFragment).

y-prosemirror keeps each paragraph's text in a Y.XmlText inside a Y.XmlElement
inside a root Y.XmlFragment (``prosemirror``; Tiptap's is ``default``). Typing at
the end of a paragraph is the same run as in ``content`` (``tests/test_runs.py``)
and costs the same O(run) per keystroke in yrs, so the room breaks it the same
way. These tests check that it does (the writer's blocks stay short), and that
nobody can tell: the XML stays exact, peers converge, the log reloads.

The last test does it end to end: a real server process and stock Yjs clients
under Node (``tests/js/prose_peer.mjs``), across a restart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pycrdt import Doc, XmlElement, XmlFragment, XmlText

from collab.core import protocol
from collab.core.protocol import Update
from collab.core.room import RUN_BOUND, Room

from .crdt import client_blocks, feed, payloads, state_vector, xml_end_appends
from .jsclient import JsPeer, JsPeers
from .server import ServerProcess
from .wait import eventually

WRITER = 3_000_000_000  # a client id like a real Yjs client's (random 32-bit)


def chunks(n: int) -> list[str]:
    return [f"[p{i}é]" for i in range(n)]  # a two-byte character: offsets are UTF-8 bytes


def xml(doc: Doc, root: str = "prosemirror") -> str:
    return str(doc.get(root, type=XmlFragment))


def test_a_long_run_in_a_paragraph_is_broken_and_every_peer_sees_the_exact_xml() -> None:
    room, writer = Room("doc"), object()
    room.join(writer)
    typed = chunks(3000)
    head, appends = xml_end_appends(typed, WRITER)
    logged, frames = feed(room, writer, [head, *appends])
    relayed = payloads(frames)

    expected = "<paragraph>" + "".join(typed) + "</paragraph>"
    assert xml(room.doc) == expected
    size = len("".join(typed).encode())
    breaks = len(relayed) - 1 - len(typed)
    assert size // RUN_BOUND - 1 <= breaks <= size // RUN_BOUND + 1
    # The cost driver: yrs keeps the writer's characters in blocks of at most a
    # bound's worth now (the paragraph, its text, then one block per piece).
    assert client_blocks(room.doc, WRITER) == 2 + breaks + 1

    subscriber: Doc = Doc()
    for update in relayed:
        subscriber.apply_update(update)
    assert xml(subscriber) == expected
    assert state_vector(subscriber) == state_vector(room.doc)

    reloaded = Room("doc")
    reloaded.restore(logged)
    assert xml(reloaded.doc) == expected
    assert reloaded.doc.get_state() == room.doc.get_state()


def type_bold(room: Room, count: int) -> tuple[Doc, int]:
    """A real pycrdt writer typing bold at the end of the first of two paragraphs (in
    Tiptap's ``default``), applying the server's breaks as they come; returns it and
    how many breaks the room made."""
    peer = object()
    room.join(peer)
    writer: Doc = Doc(client_id=WRITER)
    fragment = writer.get("default", type=XmlFragment)
    outgoing: list[bytes] = []
    writer.observe(lambda event: outgoing.append(event.update))
    fragment.children.append(XmlElement("paragraph", contents=[XmlText("Title")]))
    fragment.children.append(XmlElement("paragraph", contents=[XmlText("after")]))
    title = fragment.children[0].children[0]
    assert isinstance(title, XmlText)
    breaks = 0
    for i in range(count):
        title.insert(len(title), f"<{i}>", {"bold": True})
        for update in outgoing[:]:
            effects = room.receive(peer, protocol.encode(Update(update)))
            breaks += len(effects.relay) - 1
            for frame in effects.relay[1:]:  # the server's own edits come back to everyone
                message = protocol.decode(frame)
                assert isinstance(message, Update)
                writer.apply_update(message.update)
        outgoing.clear()  # applying a remote update is not news to send
    return writer, breaks


def test_a_bold_run_at_the_end_of_the_first_paragraph_is_broken_next_to_its_last_character() -> (
    None
):
    room = Room("doc")
    writer, breaks = type_bold(room, 2500)

    run = "".join(f"<{i}>" for i in range(2500))
    assert xml(room.doc, "default") == xml(writer, "default")
    title = room.doc.get("default", type=XmlFragment).children[0].children[0]
    assert isinstance(title, XmlText)
    assert title.diff() == [("Title", None), (run, {"bold": True})]  # no stray marks
    assert state_vector(writer) == state_vector(room.doc)
    assert len(run) // RUN_BOUND - 1 <= breaks <= len(run) // RUN_BOUND + 1
    # Every break splits the run once more. A plain (unformatted) tombstone would
    # land after the mark's end, not next to the run's last character: no split.
    unbroken = Room("doc", run_bound=0)
    assert type_bold(unbroken, 2500)[1] == 0
    assert client_blocks(room.doc, WRITER) == client_blocks(unbroken.doc, WRITER) + breaks


def test_a_reloaded_fragment_breaks_a_continuing_run_at_once() -> None:
    typed = chunks(50)
    head, appends = xml_end_appends(typed, WRITER, root="default")
    room = Room("doc")
    room.restore([head, *appends[:49]])  # its root has no type until read as a fragment
    peer = object()
    room.join(peer)
    effects = room.receive(peer, protocol.encode(Update(appends[49])))
    assert len(effects.relay) == 2  # the keystroke as received, then the break
    assert xml(room.doc, "default") == "<paragraph>" + "".join(typed) + "</paragraph>"


# -- end to end: a real server, stock Yjs clients -----------------------------------------------


async def prose_peer(peers: JsPeers, url: str, room: str) -> JsPeer:
    peer = await peers.start("prose_peer.mjs", url, room)
    await peer.event("ready")
    await peer.event("synced")
    return peer


async def test_stock_yjs_clients_typing_a_paragraph_get_the_same_document_after_a_restart(
    tmp_path: Path,
) -> None:
    # Typing as fast as Node can: past the per-connection message rate (1008).
    server = ServerProcess(tmp_path / "data", "--rate-messages", "0").start()
    try:
        async with JsPeers() as peers:
            writer = await prose_peer(peers, server.ws, "essay")
            watcher = await prose_peer(peers, server.ws, "essay")
            await writer.request("paragraph", text="Title")
            await writer.request("paragraph", text="")
            await writer.request("type", paragraph=1, count=3000, label="w", timeout=30)
            mine = await writer.state()
            ((client, clock),) = mine["sv"].items()

            async def watcher_has_it() -> dict[str, Any] | None:
                seen = await watcher.state()
                return seen if seen["sv"].get(client) == clock else None

            # The sender is not sent the server's tombstones (it gets them at its next
            # sync); the watcher is relayed them after the keystrokes they follow.
            seen = await eventually(watcher_has_it, timeout=20)
            typed = "".join(f"w{i} " for i in range(3000))
            assert seen["texts"] == mine["texts"] == ["Title", typed]
            assert seen["xml"] == mine["xml"]
            breaks = sum(n for c, n in seen["sv"].items() if c != client)
            assert len(typed) // RUN_BOUND - 1 <= breaks <= len(typed) // RUN_BOUND + 1
            # Yjs splits the run at the tombstones too: the writer's characters are in
            # pieces (two paragraphs, their texts and "Title", then one block a piece).
            assert seen["structs"][client] == 5 + breaks + 1
            await writer.request("quit")
            await watcher.request("quit")

        server.stop()
        server.start()
        async with JsPeers() as peers:
            reader = await prose_peer(peers, server.ws, "essay")
            back = await reader.state()
            assert back["sv"] == seen["sv"]
            assert back["xml"] == seen["xml"]
            assert back["texts"] == ["Title", typed]
            assert back["structs"] == seen["structs"]
    finally:
        server.stop()
