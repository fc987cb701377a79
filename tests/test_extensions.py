"""Extension hooks: before hooks refuse; after hooks observe off the hot path, never break sync."""

from __future__ import annotations

import pytest

from collab import Config, Extension, Forbidden, Hub, make_app
from collab.core.auth import Permission
from collab.core.policy import debounce_delay
from collab.server.extensions import (
    ChangeEvent,
    ConnectEvent,
    DisconnectEvent,
    LoadEvent,
    StoredEvent,
)
from tests.peers import Editor, RecordingPeer
from tests.readme import example
from tests.yclient import YClient, eventually


class Recorder(Extension):
    def __init__(self, tag: str, calls: list[str]) -> None:
        self.tag, self.calls = tag, calls

    async def on_load(self, event: LoadEvent) -> None:
        self.calls.append(f"{self.tag} load {event.document}")

    def on_change(self, event: ChangeEvent) -> None:
        self.calls.append(f"{self.tag} change {event.document} by {event.author}")

    def on_joined(self, event: ConnectEvent) -> None:
        self.calls.append(f"{self.tag} joined {event.connection}")

    async def on_stored(self, event: StoredEvent) -> None:
        self.calls.append(f"{self.tag} stored {event.document}")

    def on_disconnect(self, event: DisconnectEvent) -> None:
        self.calls.append(f"{self.tag} left {event.connection}")


class Broken(Extension):
    def on_change(self, event: ChangeEvent) -> None:
        raise RuntimeError("receiver down")


async def test_hooks_run_in_order_with_what_happened():
    calls: list[str] = []
    hub = Hub(Config(data_dir=None), extensions=[Recorder("1", calls), Recorder("2", calls)])
    session = await hub.join("doc", RecordingPeer(), Permission(user="ann"), id="c9")
    session.receive(Editor().type("x"))
    session.leave()
    await hub.close(timeout=1)
    assert calls == [
        "1 load doc",
        "2 load doc",
        "1 joined c9",
        "2 joined c9",
        "1 change doc by ann",
        "2 change doc by ann",
        "1 left c9",
        "2 left c9",
        "1 stored doc",
        "2 stored doc",
    ]


async def test_after_hooks_wait_for_the_message_path():
    calls: list[str] = []
    hub = Hub(Config(data_dir=None), extensions=[Recorder("r", calls)])
    session = await hub.join("doc", RecordingPeer())
    calls.clear()
    session.receive(Editor().type("x"))
    assert calls == []  # queued, not run inside receive
    await hub.extensions.drain()
    assert calls == ["r joined c1", "r change doc by c1"]
    await hub.close(timeout=1)


async def test_a_failing_after_hook_is_logged_and_sync_goes_on(caplog):
    hub = Hub(Config(data_dir=None), extensions=[Broken()])
    writer = await hub.join("doc", RecordingPeer())
    reader = RecordingPeer()
    await hub.join("doc", reader)
    editor = Editor()
    writer.receive(editor.type("one "))
    writer.receive(editor.type("two"))
    await eventually(lambda: reader.text == "one two")
    await hub.extensions.drain()
    assert hub.extensions.errors == 2 and "receiver down" in caplog.text
    assert b"collab_extension_errors_total 2.0" in hub.metrics.render()
    await hub.close(timeout=1)


async def test_a_before_hook_refuses_a_load_and_the_document_stays_closed():
    class NoArchive(Extension):
        def on_load(self, event: LoadEvent) -> None:
            if event.document.startswith("archive/"):
                raise Forbidden("archived")

    hub = Hub(Config(data_dir=None), extensions=[NoArchive()])
    with pytest.raises(Forbidden):
        await hub.join("archive/2019", RecordingPeer())
    assert hub.registry.documents == {}
    await hub.join("current", RecordingPeer())
    await hub.close(timeout=1)


def test_debounce_is_due_after_the_quiet_period_but_never_past_the_max_delay():
    assert debounce_delay(first=0, last=0, now=0, quiet=2, max_delay=10) == 2
    assert debounce_delay(first=0, last=5, now=5, quiet=2, max_delay=10) == 2
    assert debounce_delay(first=0, last=9, now=9, quiet=2, max_delay=10) == 1
    assert debounce_delay(first=0, last=12, now=12, quiet=2, max_delay=10) == 0


async def test_the_readme_example_refuses_anonymous_private_joins_and_notes_bursts():
    hub, audit = example("extension")["make_audited_hub"]()
    with pytest.raises(Forbidden, match="log in"):
        await hub.join("private/plans", RecordingPeer())
    ann = await hub.join("notes", RecordingPeer(), Permission(user="ann"))
    bob = await hub.join("notes", RecordingPeer(), Permission(user="bob"))
    ann.receive(Editor(1).type("a"))
    bob.receive(Editor(2).type("b"))
    await eventually(lambda: audit.noted == ["notes changed by ['ann', 'bob']"])
    await hub.close(timeout=1)


@pytest.fixture
def app(tmp_path):
    calls: list[str] = []
    app = make_app(Config(data_dir=str(tmp_path / "data")), extensions=[Recorder("app", calls)])
    app.calls = calls
    return app


async def test_make_app_takes_extensions_for_real_clients(app, port):
    client = await YClient(f"ws://127.0.0.1:{port}/ws/live").connect()
    client.text.insert(0, "typed")
    await eventually(lambda: any("change live" in c for c in app.calls))
    await client.close()
    assert app.calls[0] == "app load live"
