"""Disk faults: each has a clear outcome, and nothing any client was sent is lost.

For each fault: the writing clients are closed with 1011 (SPEC: an update that
could not be persisted; it was never relayed), the server logs why,
``/readyz`` answers 503 with the reason and ``/metrics`` shows the fault; the
server stays up for the other documents; once the fault clears, service
resumes by itself (the clients reconnect and resend what the server did not
keep, ``/readyz`` is 200 again); after a restart every token any client was
ever sent is in the document, and every token the writer made.

Real faults where this machine can make them (root, or CI: a small tmpfs that
fills up or is remounted read-only); injected ones where it cannot: an fsync
that takes 500 ms, an fsync that fails with EIO (``os.fsync`` wrapped in the
server's process; the server runs in the test's process for those).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import stat
import threading
import time
from pathlib import Path

import pytest
from tornado.httpclient import AsyncHTTPClient

from collab import Config
from collab.storage.file import FileStore
from tests.crdt import text_of
from tests.mounts import ROOT_USER, mount, tmpfs
from tests.needs import require
from tests.server import ServerProcess
from tests.wait import eventually
from tests.yclient import YClient

TOKEN = re.compile(rb"tok\d+;")


def need_root() -> None:
    """Skip without root (a laptop) with the reason; in CI, fail (``require``)."""
    require(ROOT_USER, "a tmpfs to fill or remount read-only needs root")


async def in_thread(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


class Writer:
    """A client typing unique tokens ``tok<i>;`` at the end; ``seen`` is what an observer got."""

    def __init__(self, url: str) -> None:
        self.client = YClient(url)
        self.made: list[str] = []

    def type(self) -> str:
        token = f"tok{len(self.made)};"
        self.made.append(token)
        self.client.text.insert(len(self.client.text), token)
        return token


def observe(client: YClient) -> set[bytes]:
    """Every token in a frame ``client`` was sent, from now on."""
    seen: set[bytes] = set()
    client.on_frame = lambda data: seen.update(TOKEN.findall(data))
    return seen


async def reconnect(client: YClient, timeout: float = 30) -> None:
    """As y-websocket does: connect again (and again) until a connection syncs and stays."""

    async def attempt() -> bool:
        if client.connected:
            return True
        try:
            await client.connect()
            await client.roundtrip()  # our step 2 (what the server lacks) was taken
        except Exception as exc:
            raise AssertionError(f"not connected yet: {exc!r}") from exc
        assert client.connected, f"closed again: {client.close_code} {client.close_reason}"
        return True

    await eventually(attempt, timeout, interval=0.2)


async def stored_tokens(root: Path, name: str) -> list[str]:
    """The tokens of ``name`` as a fresh server would load them."""
    store = FileStore(root, read_only=True)
    try:
        text = text_of((await store.log(name).load()).updates)
    finally:
        await store.close()
    return [t.decode() for t in TOKEN.findall(text.encode())]


def metric(page: str, name: str) -> float:
    for line in page.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# -- real faults: a server process on a small tmpfs ----------------------------------------


async def ready(server: ServerProcess) -> tuple[int, str]:
    status, body = await in_thread(server.get, "/readyz")
    return status, body.decode()


async def answers(server: ServerProcess, status: int, *parts: str) -> bool:
    found = await ready(server)
    assert found[0] == status and any(p in found[1] for p in parts), found
    return True


def fill(path: Path) -> None:
    """Fill the file system of ``path`` to the last byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        for size in (65536, 4096, 1):  # bounded: the file system is 2 MB
            with contextlib.suppress(OSError):
                for _ in range((4 << 20) // size):
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)


@pytest.mark.timeout(seconds=120)
async def test_a_full_disk_mid_stream_closes_writers_with_1011_and_loses_nothing(tmp_path):
    need_root()
    with tmpfs(tmp_path / "mnt", "2m") as mnt:
        server = ServerProcess(mnt / "data", "--min-free-bytes", "0", "--no-history")
        server.log_path = tmp_path / "server.log"
        await in_thread(server.start)
        try:
            writer = Writer(f"{server.ws}/full")
            await writer.client.connect()
            observer = await YClient(f"{server.ws}/full").connect()
            seen = observe(observer)
            bystander = await YClient(f"{server.ws}/other").connect()
            for _ in range(20):
                writer.type()
            await writer.client.roundtrip()
            await eventually(lambda: len(seen) == 20)
            await in_thread(fill, mnt / "filler")
            # Mid-stream: the log's last page may still take a few records.
            for _ in range(2000):
                if not writer.client.connected:
                    break
                writer.type()
                with contextlib.suppress(Exception):
                    await writer.client.roundtrip()
            await eventually(lambda: writer.client.closed.is_set())
            assert writer.client.close_code == 1011, writer.client.close_reason
            assert "could not persist" in (writer.client.close_reason or "")
            await eventually(lambda: observer.closed.is_set())  # the document failed
            assert observer.close_code == 1011
            assert "cannot append to the log of 'full' ([Errno 28]" in server.output()
            await eventually(lambda: answers(server, 503, "No space left on device"), 15)
            # The server stays up for the others: a reader of another document stays and reads.
            assert bystander.connected
            assert (await in_thread(server.get, "/api/docs/other/text"))[0] == 200
            (mnt / "filler").unlink()
            await reconnect(writer.client)  # sends the tokens the server did not keep
            await reconnect(observer)
            await eventually(lambda: answers(server, 200, "ready"), 20)
            writer.type()  # and it takes new ones
            await writer.client.roundtrip()
            await eventually(lambda: set(writer.made) <= {t.decode() for t in seen}, 15)
            assert bystander.connected
            for client in (writer.client, observer, bystander):
                await client.close()
            await in_thread(server.kill)
            await in_thread(server.start)
            await in_thread(server.stop)
            kept = await stored_tokens(mnt / "data", "full")
            assert sorted(kept) == sorted(writer.made)  # each once, none lost
            assert {t.decode() for t in seen} <= set(kept)
        finally:
            with contextlib.suppress(Exception):
                (mnt / "filler").unlink()
            if server.proc is not None:
                await in_thread(server.stop)


@pytest.mark.timeout(seconds=120)
async def test_a_data_dir_turned_read_only_refuses_writes_with_1011_and_serves_reads(tmp_path):
    need_root()
    with tmpfs(tmp_path / "mnt", "8m") as mnt:
        server = ServerProcess(mnt / "data", "--idle-timeout", "0.2", "--min-free-bytes", "0")
        server.log_path = tmp_path / "server.log"
        await in_thread(server.start)

        def remount(mode: str) -> None:
            done = mount("-o", f"remount,{mode}", str(mnt))
            assert done.returncode == 0, done.stderr

        async def unloaded() -> bool:
            _, page = await in_thread(server.get, "/metrics")
            return metric(page.decode(), "collab_documents_loaded") == 0

        try:
            for name in ("ro", "other"):
                assert (
                    await in_thread(server.request, "PUT", f"/api/docs/{name}/text", b"tok0;")
                    == 204
                )
            # A file system with a file open for writing cannot be remounted read-only:
            # the documents unload first (the kernel's errors=remount-ro needs no such wait).
            await eventually(unloaded, 15)
            await in_thread(remount, "ro")
            writer = Writer(f"{server.ws}/ro")
            writer.made.append("tok0;")
            await writer.client.connect()  # loads: reading needs no write
            assert str(writer.client.text) == "tok0;"
            observer = await YClient(f"{server.ws}/ro").connect()
            seen = observe(observer)
            writer.type()
            await eventually(lambda: writer.client.closed.is_set())
            assert writer.client.close_code == 1011
            await eventually(lambda: observer.closed.is_set())
            assert observer.close_code == 1011 and not seen  # never relayed
            assert "cannot append to the log of 'ro' ([Errno 30]" in server.output()
            await eventually(lambda: answers(server, 503, "Read-only file system"), 15)
            status, body = await in_thread(server.get, "/api/docs/other/text")
            assert (status, body) == (200, b"tok0;")  # other documents still read
            await in_thread(remount, "rw")
            await reconnect(writer.client)
            await eventually(lambda: answers(server, 200, "ready"), 20)
            status, body = await in_thread(server.get, "/api/docs/ro/text")
            assert body.decode() == "tok0;tok1;"
            await writer.client.close()
            await in_thread(server.kill)
            await in_thread(server.start)
            status, body = await in_thread(server.get, "/api/docs/ro/text")
            assert body.decode() == "tok0;tok1;"
        finally:
            with contextlib.suppress(Exception):
                remount("rw")
            if server.proc is not None:
                await in_thread(server.stop)


# -- injected faults: the server in this process, os.fsync wrapped -------------------------


@pytest.fixture
def config(tmp_path) -> Config:
    return Config(data_dir=str(tmp_path / "data"), fsync="always", history=False)


class Fsync:
    """``os.fsync`` of regular files, slowed down or failing on demand; records what it made
    durable (the tokens in each file once its fsync returned)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.real = os.fsync
        self.delay = 0.0
        self.failing = False
        self.durable: set[bytes] = set()
        self.calls = 0
        self._lock = threading.Lock()
        monkeypatch.setattr(os, "fsync", self)

    def __call__(self, fd: int) -> None:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return self.real(fd)  # a directory
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        if self.failing:
            raise OSError(errno.EIO, "Input/output error (injected)")
        self.real(fd)
        with contextlib.suppress(OSError), open(f"/proc/self/fd/{fd}", "rb") as f:
            found = TOKEN.findall(f.read())
        with self._lock:
            self.durable.update(found)
        return None


async def get(port: int, path: str) -> tuple[int, str]:
    response = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}{path}", raise_error=False)
    return response.code, response.body.decode()


def count_faults(hub) -> None:
    """Export ``collab_store_faults`` as ``collab serve`` would once the hub passes it on
    (``Hub.__init__``'s ``metrics.sample``, not wired there yet)."""
    hub.metrics.sample(documents=hub.metrics.documents, store_faults=lambda: hub.store.faults)


@pytest.mark.timeout(seconds=60)
async def test_a_slow_fsync_delays_relays_but_relays_nothing_early_and_loses_nothing(
    hub, ws_url, port, monkeypatch, config
):
    fsync = Fsync(monkeypatch)
    writer = Writer(ws_url("slow"))
    await writer.client.connect()
    observer = await YClient(ws_url("slow")).connect()
    early: list[bytes] = []

    def on_frame(data: bytes) -> None:
        for token in TOKEN.findall(data):
            seen.add(token)
            if token not in fsync.durable:
                early.append(token)  # sent before the fsync covering it returned

    seen: set[bytes] = set()
    observer.on_frame = on_frame
    fsync.delay = 0.5
    for _ in range(3):
        for _ in range(4):
            writer.type()
        await asyncio.sleep(0)  # a few arrive together, a few apart
    await eventually(lambda: len(seen) == 12, 20)
    assert not early, early
    assert writer.client.connected and observer.connected  # slow is not failed
    assert await get(port, "/readyz") == (200, "ready")  # a probe far below PROBE_TIMEOUT
    page = (await get(port, "/metrics"))[1]
    slow = metric(page, 'collab_persist_seconds_count{operation="fsync"}') - metric(
        page, 'collab_persist_seconds_bucket{le="0.5",operation="fsync"}'
    )
    assert slow >= 1, "the metrics show no fsync over 0.5 s"
    await writer.client.close()
    await observer.close()
    await hub.close()
    assert sorted(await stored_tokens(Path(config.data_dir), "slow")) == sorted(writer.made)


@pytest.mark.timeout(seconds=60)
async def test_a_failing_fsync_closes_with_1011_relays_nothing_and_resumes(
    hub, ws_url, port, monkeypatch, config, caplog
):
    fsync = Fsync(monkeypatch)
    count_faults(hub)
    writer = Writer(ws_url("eio"))
    await writer.client.connect()
    observer = await YClient(ws_url("eio")).connect()
    seen = observe(observer)
    bystander = await YClient(ws_url("other")).connect()
    writer.type()
    await eventually(lambda: b"tok0;" in seen)
    fsync.failing = True
    writer.type()
    await eventually(lambda: writer.client.closed.is_set())
    assert writer.client.close_code == 1011
    assert "could not persist" in (writer.client.close_reason or "")
    await eventually(lambda: observer.closed.is_set())
    assert observer.close_code == 1011
    assert b"tok1;" not in seen  # never relayed
    assert "could not make updates of 'eio' durable" in caplog.text
    assert "Input/output error" in caplog.text
    _, reason = await eventually(lambda: _not_ready(port), 15)
    assert "Input/output error" in reason, reason
    assert bystander.connected  # the others stay; nobody else was writing
    assert metric((await get(port, "/metrics"))[1], "collab_store_faults_total") >= 1
    fsync.failing = False
    await reconnect(writer.client)
    await reconnect(observer)
    await eventually(lambda: b"tok1;" in seen, 15)
    await eventually(lambda: _ready(port), 20)
    await writer.client.close()
    await observer.close()
    await bystander.close()
    await hub.close()
    kept = await stored_tokens(Path(config.data_dir), "eio")
    assert sorted(kept) == sorted(writer.made)


async def _not_ready(port: int) -> tuple[int, str]:
    found = await get(port, "/readyz")
    assert found[0] == 503, found
    return found


async def _ready(port: int) -> bool:
    found = await get(port, "/readyz")
    assert found == (200, "ready"), found
    return True
