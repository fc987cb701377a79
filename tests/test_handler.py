"""The WebSocket glue: one failing room or connection never affects another."""

from __future__ import annotations

import pytest

from collab.room import Room
from tests.yclient import YClient, eventually


async def test_an_internal_error_closes_only_that_connection(ws_url, hub, monkeypatch, caplog):
    healthy_a = await YClient(ws_url("healthy")).connect()
    healthy_b = await YClient(ws_url("healthy")).connect()
    victim = await YClient(ws_url("cursed")).connect()
    bystander = await YClient(ws_url("cursed")).connect()

    original = Room.receive
    victim_peer = next(iter(hub.rooms["cursed"].room.peers))

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
    assert hub.rooms["cursed"].room.text == "me too"


@pytest.mark.parametrize("name", ["a b", "ünï/côde", "100%"])
async def test_raw_and_encoded_names_reach_one_document(ws_url, name, hub):
    from urllib.parse import quote

    raw = await YClient(ws_url(quote(name, safe="/%"))).connect()  # "/" and "%" unescaped
    encoded = await YClient(ws_url(quote(name, safe=""))).connect()
    raw.text.insert(0, "same")
    await eventually(lambda: str(encoded.text) == "same")
    assert list(hub.rooms) == [name]
