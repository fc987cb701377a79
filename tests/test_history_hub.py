"""History inside one hub: when versions are cut, who they name, retention, failures."""

from __future__ import annotations

import json
from typing import Any

from pycrdt import Doc, Text

from collab import Config, Hub
from collab.core import protocol
from collab.core.auth import Permission
from collab.core.history import VersionMeta
from collab.core.protocol import AwarenessEntry, AwarenessUpdate, Update
from collab.storage.history import MemoryHistory
from tests.peers import RecordingPeer
from tests.wait import eventually


def hub_with(tmp_path, **settings: Any) -> Hub:
    settings.setdefault("history_idle", 3600.0)
    return Hub(Config(data_dir=str(tmp_path / "data"), **settings))


class Typist:
    """A client doc whose edits are sent to the hub as update frames."""

    def __init__(self) -> None:
        self.doc: Doc[Any] = Doc()
        self.text = self.doc.get("content", type=Text)

    def type(self, session: Any, text: str) -> None:
        before = self.doc.get_state()
        self.text.insert(len(str(self.text).encode()), text)
        session.receive(protocol.encode(Update(self.doc.get_update(before))))


def presence(client_id: int, name: str, color: str) -> bytes:
    state = json.dumps({"user": {"name": name, "color": color}})
    entry = AwarenessEntry(client_id, 1, state)
    return protocol.encode(AwarenessUpdate(protocol.encode_awareness([entry])))


async def listed(hub: Hub, name: str) -> list[VersionMeta]:
    assert hub.history is not None
    return await hub.history.versions(name)


async def test_quiet_period_and_awareness_authors(tmp_path):
    hub = hub_with(tmp_path, history_idle=0.05)
    ann = await hub.join("doc", RecordingPeer("ann"), Permission(user="ann"))
    anon = await hub.join("doc", RecordingPeer("anon"))
    ann.receive(presence(11, "Ann", "#3e63dd"))
    anon.receive(presence(12, "Zed", "not a colour"))
    typist = Typist()
    typist.type(ann, "hello ")
    typist.type(anon, "world")
    await eventually(lambda: hub.history.cuts == 1)
    (version,) = await listed(hub, "doc")
    assert version.reason == "quiet" and version.updates == 2 and version.chars == 11
    assert [(a.user, a.name, a.color) for a in version.authors] == [
        ("ann", "Ann", "#3e63dd"),
        (None, "Zed", None),  # not verified, and a colour that is not one is dropped
    ]
    await hub.close()


async def test_a_long_stretch_is_cut_at_the_maximum(tmp_path):
    hub = hub_with(tmp_path, history_idle=10.0, history_max_interval=0.1)
    session = await hub.join("doc", RecordingPeer())
    typist = Typist()
    typist.type(session, "a")
    await eventually(lambda: hub.history.cuts == 1)
    assert [v.reason for v in await listed(hub, "doc")] == ["max"]
    await hub.close()


async def test_an_unloaded_document_is_cut_without_being_kept_in_memory(tmp_path):
    hub = hub_with(tmp_path, idle_timeout=0.01)
    session = await hub.join("doc", RecordingPeer())
    Typist().type(session, "kept after unload")
    await hub.extensions.drain()
    session.leave()
    await eventually(lambda: hub.document("doc") is None and hub.history.cuts == 1)
    (version,) = await listed(hub, "doc")
    assert version.reason == "leave"
    assert (await hub.history.read("doc", version.id))[1] == "kept after unload"
    await hub.close()


async def test_shutdown_cuts_what_is_pending_and_an_unchanged_text_cuts_nothing(tmp_path):
    hub = hub_with(tmp_path)
    await hub.set_text("doc", "one")
    await hub.close()
    again = hub_with(tmp_path)
    assert [v.reason for v in await listed(again, "doc")] == ["stop"]
    await again.set_text("doc", "one")  # no change: no version
    await again.close()
    third = hub_with(tmp_path)
    assert len(await listed(third, "doc")) == 1
    await third.close()


async def test_retention_keeps_named_versions_and_the_newest(tmp_path):
    hub = hub_with(tmp_path, history_max_versions=2)  # all young: only the cap applies
    await hub.set_text("doc", "v0")
    await hub.name_version("doc", "Named")
    for i in range(1, 6):
        await hub.set_text("doc", f"v{i}")
        await hub.history.cut("doc", "quiet")
    kept = await listed(hub, "doc")  # newest first
    assert (kept[-1].label, kept[-1].reason) == ("Named", "named")
    assert len([v for v in kept if v.label is None]) == 2
    assert (await hub.history.read("doc", kept[0].id))[1] == "v5"
    await hub.close()


class BrokenHistory(MemoryHistory):
    async def save(self, name: str, meta: VersionMeta, state: bytes, text: str) -> VersionMeta:
        raise OSError(28, "No space left on device")


async def test_a_failing_history_store_never_hurts_the_document(tmp_path, caplog):
    hub = Hub(Config(data_dir=str(tmp_path / "data"), history_idle=0.01), history=BrokenHistory())
    peer = RecordingPeer()
    session = await hub.join("doc", peer)
    other = RecordingPeer("other")
    await hub.join("doc", other)
    Typist().type(session, "still here")
    await eventually(lambda: hub.history.failures == 1)
    assert other.text == "still here" and hub.document("doc").room.text == "still here"
    assert "could not store a version of 'doc'" in caplog.text
    await hub.close()
    reopened = hub_with(tmp_path)
    assert await reopened.get_text("doc") == "still here"
    await reopened.close()


async def test_a_server_stopping_with_clients_cuts_stop_versions(tmp_path):
    hub = hub_with(tmp_path)
    session = await hub.join("doc", RecordingPeer())
    Typist().type(session, "typed before the stop")
    await hub.extensions.drain()
    await hub.registry.close()  # what Hub.close does first; then it waits for the sockets
    pending = hub.history._pending["doc"]
    assert pending.doc is None and pending.timer is None  # nothing fires "leave" meanwhile
    await hub.close()
    again = hub_with(tmp_path)
    assert [v.reason for v in await listed(again, "doc")] == ["stop"]
    await again.close()
