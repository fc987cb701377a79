"""The WebSocket glue: one failing room or connection never affects another."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import pytest
from pycrdt import Doc, Text

from collab.core import protocol
from collab.core.protocol import Update
from collab.core.room import Room
from tests.wait import eventually
from tests.wire import client_frame, raw_connect
from tests.yclient import YClient


async def test_an_internal_error_closes_only_that_connection(ws_url, hub, monkeypatch, caplog):
    healthy_a = await YClient(ws_url("healthy")).connect()
    healthy_b = await YClient(ws_url("healthy")).connect()
    victim = await YClient(ws_url("cursed")).connect()
    bystander = await YClient(ws_url("cursed")).connect()

    original = Room.receive
    victim_peer = next(iter(hub.document("cursed").room.peers))

    def explode(self, peer, data, *, writable=True):
        if peer is victim_peer:
            raise RuntimeError("boom")
        return original(self, peer, data, writable=writable)

    monkeypatch.setattr(Room, "receive", explode)
    victim.text.insert(0, "x")
    await eventually(lambda: victim.closed.is_set())
    assert victim.close_code == 1011
    assert "boom" in caplog.text

    healthy_a.text.insert(0, "still fine")
    await eventually(lambda: str(healthy_b.text) == "still fine")
    bystander.text.insert(0, "me too")
    await bystander.roundtrip()
    assert hub.document("cursed").room.text == "me too"


@pytest.mark.parametrize("name", ["a b", "ünï/côde", "100%"])
async def test_raw_and_encoded_names_reach_one_document(ws_url, name, hub):
    raw = await YClient(ws_url(quote(name, safe="/%"))).connect()  # "/" and "%" unescaped
    encoded = await YClient(ws_url(quote(name, safe=""))).connect()
    raw.text.insert(0, "same")
    await eventually(lambda: str(encoded.text) == "same")
    assert list(hub.registry.documents) == [name]


async def test_updates_arriving_together_are_relayed_merged(ws_url, port, hub):
    """A burst of updates read in one go reaches the other peers as far fewer frames."""
    watcher = await YClient(ws_url("burst")).connect()
    received: list[bytes] = []
    watcher.on_frame = received.append

    writer: Doc = Doc()
    text = writer.get("content", type=Text)
    updates: list[bytes] = []
    writer.observe(lambda event: updates.append(event.update))
    for i in range(50):
        text.insert(len(text), f"<{i}>")
    burst = b"".join(client_frame(0x82, protocol.encode(Update(u))) for u in updates)

    sock = await raw_connect(port, "/ws/burst")
    await asyncio.get_running_loop().sock_sendall(sock, burst)  # 50 frames in one write
    await eventually(lambda: str(watcher.text) == str(text))
    relayed = [f for f in received if isinstance(protocol.decode(f), Update)]
    assert len(relayed) < len(updates) / 5
    assert hub.metrics.merged >= len(updates) - 5 * len(relayed)
    sock.close()
