"""A real server process killed mid-stream loses nothing any client was shown.

A SIGKILL ends the process but keeps the OS page cache, so these tests show what
the server wrote (to the OS) before it relayed; they cannot show what an fsync
made durable, which needs a lost page cache (a store whose fsync can be held).
"""

from __future__ import annotations

import asyncio
import re
import urllib.request

import pytest

from tests.server import ServerProcess
from tests.wait import eventually
from tests.yclient import YClient

TOKEN = re.compile(r"c\d+i\d+;")


async def in_thread(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def stream(writer: YClient, cycle: int, stop: asyncio.Event) -> None:
    """Append tokens as fast as the socket takes them until ``stop``."""
    for i in range(100_000):
        if stop.is_set() or not writer.connected:
            return
        writer.text.insert(len(writer.text), f"c{cycle}i{i};")
        await asyncio.sleep(0.001 if i % 5 == 0 else 0)  # pacing: let the observer read


@pytest.mark.timeout(seconds=120)
@pytest.mark.parametrize("fsync", ["never", "interval", "always"])
async def test_sigkill_loses_nothing_shown_as_updates_reach_the_os_before_relay(tmp_path, fsync):
    """Every fsync policy writes an update through to the OS before relaying it."""
    server = ServerProcess(tmp_path / "data", "--fsync", fsync)
    await in_thread(server.start)
    url = f"{server.ws}/crashy"
    writer = await YClient(url).connect()
    observer = await YClient(url).connect()
    cycles = 8
    try:
        for cycle in range(cycles):
            stop = asyncio.Event()
            task = asyncio.ensure_future(stream(writer, cycle, stop))
            await eventually(lambda c=cycle: str(observer.text).count(f"c{c}i") >= 50, 20)
            server.kill()
            stop.set()
            await task
            await asyncio.wait_for(observer.closed.wait(), 10)
            seen = TOKEN.findall(str(observer.text))

            await in_thread(server.start)
            fresh = await YClient(url).connect()
            recovered = set(TOKEN.findall(str(fresh.text)))
            missing = [t for t in seen if t not in recovered]
            assert not missing, f"cycle {cycle}: lost {len(missing)} of {len(seen)}: {missing[:5]}"
            assert len(TOKEN.findall(str(fresh.text))) == len(recovered), "content doubled"
            await fresh.close()
            await writer.connect()
            await observer.connect()
    finally:
        await in_thread(server.stop)  # in a thread: the clients answer its close frames


@pytest.mark.timeout(seconds=60)
async def test_clients_with_offline_edits_merge_exactly_once_after_restart(tmp_path):
    server = ServerProcess(tmp_path / "data")
    await in_thread(server.start)
    url = f"{server.ws}/merge"
    a = await YClient(url).connect()
    b = await YClient(url).connect()
    a.text.insert(0, "base")
    await eventually(lambda: str(b.text) == "base")

    assert await in_thread(server.stop) == 0  # graceful: SIGTERM flushes, exits 0
    await asyncio.wait_for(asyncio.gather(a.closed.wait(), b.closed.wait()), 10)
    assert {a.close_code, b.close_code} == {1001}
    a.text.insert(len(a.text), " +a")  # offline edits on both sides
    b.text.insert(0, "b+ ")

    await in_thread(server.start)
    await a.connect()
    await b.connect()
    expected = "b+ base +a"
    await eventually(lambda: str(a.text) == str(b.text) == expected)
    with urllib.request.urlopen(f"{server.http}/api/docs/merge/text") as r:
        assert r.read().decode() == expected
    fresh = await YClient(url).connect()
    assert str(fresh.text) == expected
    await in_thread(server.stop)


@pytest.mark.timeout(seconds=60)
@pytest.mark.parametrize(
    "tear",
    [
        pytest.param(lambda data: data[:-3], id="cut-short"),  # the crash came mid-append
        pytest.param(lambda data: data[:-4] + b"\xde\xad\xbe\xef", id="garbled"),
    ],
)
async def test_server_starts_with_a_torn_log_tail(tmp_path, tear):
    data = tmp_path / "data"
    server = ServerProcess(data, "--fsync", "always")
    await in_thread(server.start)
    url = f"{server.ws}/torn"
    client = await YClient(url).connect()
    for word in ("one ", "two ", "three "):
        client.text.insert(len(client.text), word)
    await eventually(lambda: _rest_text(server, "torn") == "one two three ")
    server.kill()
    (log,) = data.glob("torn.*.log")
    log.write_bytes(tear(log.read_bytes()))  # the last record, and only it, is damaged

    await in_thread(server.start)
    assert _rest_text(server, "torn") == "one two "
    assert "bytes of torn tail after 2 records" in server.output()
    await in_thread(server.stop)


def _rest_text(server: ServerProcess, name: str) -> str:
    with urllib.request.urlopen(f"{server.http}/api/docs/{name}/text") as r:
        return r.read().decode()
