"""Cluster mode as operators run it: several ``collab serve --redis-url`` processes.

Real processes, a real redis-server (its own per test where the test kills it),
stock y-websocket clients under Node and pycrdt clients. What Redis holds is
read back with the store's own load transaction, as a fresh process would.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from collab.storage.redis.store import RedisStore
from tests.crdt import text_of
from tests.jsclient import JsPeers
from tests.redis_server import RedisServer, require_redis
from tests.server import ROOT, ServerProcess, env_without_collab, free_port
from tests.wait import eventually, eventually_sync
from tests.yclient import YClient


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own (the test may kill it)."""
    require_redis()
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def processes(tmp_path: Path, redis: RedisServer, count: int, *args: str) -> list[ServerProcess]:
    made = []
    for i in range(count):
        server = ServerProcess(tmp_path / f"p{i}", "--redis-url", redis.url, *args)
        made.append(server.start())
    return made


def stop_all(servers: list[ServerProcess]) -> None:
    for server in servers:
        if server.proc is not None:
            server.stop()


async def stored_text(redis: RedisServer, name: str) -> str:
    """The text Redis holds for ``name``, read as a fresh process loads it."""
    store = RedisStore(redis.url)
    try:
        loaded = await store.log(name).load()
        return text_of(loaded.updates)
    finally:
        await store.close()


def tokens(text: str) -> list[str]:
    return re.findall(r"t\d+\.", text)


async def test_clients_spread_over_three_processes_converge(tmp_path, redis):
    servers = processes(tmp_path, redis, 3)
    try:
        async with JsPeers() as js:
            peers = [await js.peer(s.ws, "shared", name=f"js{i}") for i, s in enumerate(servers)]
            python = await YClient(f"{servers[1].ws}/shared").connect()
            python.text.insert(0, "py ")
            await asyncio.gather(
                *(p.request("edit", seed=i, ops=60, label=f"n{i}-", timeout=30) for i, p in
                  enumerate(peers))
            )  # fmt: skip

            async def converged() -> bool:
                texts = {(await p.state())["text"] for p in peers} | {str(python.text)}
                return len(texts) == 1

            await eventually(converged, timeout=20)
            final = (await peers[0].state())["text"]
            assert final and final == await stored_text(redis, "shared")
            for server in servers:  # a fresh client on any process gets the exact text
                fresh = await YClient(f"{server.ws}/shared").connect()
                assert str(fresh.text) == final
                await fresh.close()
            await python.close()
    finally:
        stop_all(servers)


async def test_sigkill_of_a_process_loses_nothing_anyone_saw(tmp_path, redis):
    a, b, c = processes(tmp_path, redis, 3)
    try:
        writer = await YClient(f"{a.ws}/doc").connect()
        observers = [await YClient(f"{s.ws}/doc").connect() for s in (b, c)]
        for i in range(120):
            writer.text.insert(len(writer.text), f"t{i}.")
            if i % 10 == 0:
                await asyncio.sleep(0.01)  # let frames flow while the stream runs
            if i == 80:
                a.kill()  # mid-stream: no flush, no goodbye
        await eventually(lambda: writer.closed.is_set(), timeout=10)
        await asyncio.sleep(0.3)  # what was in flight to observers has landed or never will
        seen = set().union(*(tokens(str(o.text)) for o in observers))
        held = set(tokens(await stored_text(redis, "doc")))
        assert seen <= held, f"observers saw {sorted(seen - held)} that Redis lost"
        writer.url = f"{b.ws}/doc"  # the writer reconnects elsewhere: offline edits merge once
        await writer.connect()
        expected = [f"t{i}." for i in range(120)]

        async def merged() -> bool:
            return tokens(await stored_text(redis, "doc")) == expected

        await eventually(merged, timeout=10)
        await eventually(lambda: all(tokens(str(o.text)) == expected for o in observers))
        await writer.close()
        for observer in observers:
            await observer.close()
    finally:
        stop_all([b, c])


async def test_a_redis_restart_mid_stream_loses_nothing_and_holds_writers(tmp_path, redis):
    a, b = processes(tmp_path, redis, 2, "--redis-timeout", "10")
    try:
        writer = await YClient(f"{a.ws}/doc").connect()
        observer = await YClient(f"{b.ws}/doc").connect()
        for i in range(40):
            writer.text.insert(len(writer.text), f"t{i}.")
        await eventually(lambda: len(tokens(str(observer.text))) == 40)
        redis.kill()  # SIGKILL: AOF always, so everything acknowledged is on disk
        for i in range(40, 60):
            writer.text.insert(len(writer.text), f"t{i}.")
        await asyncio.sleep(0.5)
        assert len(tokens(str(observer.text))) == 40  # held, not relayed, while Redis is down
        redis.start()
        expected = [f"t{i}." for i in range(60)]
        await eventually(lambda: tokens(str(observer.text)) == expected, timeout=15)
        assert tokens(await stored_text(redis, "doc")) == expected
        assert writer.connected and observer.connected  # held, never dropped
        await writer.close()
        await observer.close()
    finally:
        stop_all([a, b])


async def test_after_redis_lost_its_data_processes_push_back_what_they_hold(tmp_path, redis):
    a, b = processes(tmp_path, redis, 2)
    try:
        writer = await YClient(f"{a.ws}/doc").connect()
        observer = await YClient(f"{b.ws}/doc").connect()
        writer.text.insert(0, "survives a wiped Redis")
        await eventually(lambda: str(observer.text) == "survives a wiped Redis")
        redis.kill()
        shutil.rmtree(redis.dir / "appendonlydir")  # a Redis that comes back empty
        redis.start()
        await eventually(lambda: _stored(redis, "survives a wiped Redis"), timeout=15)
        assert "Redis restarted" in a.output() and "writing them back" in a.output() + b.output()
        writer.text.insert(len(writer.text), "!")  # and the cluster goes on
        await eventually(lambda: str(observer.text) == "survives a wiped Redis!")
        await writer.close()
        await observer.close()
    finally:
        stop_all([a, b])


async def _stored(redis: RedisServer, text: str) -> bool:
    return await stored_text(redis, "doc") == text


async def test_redis_down_past_the_timeout_closes_1013_and_answers_503(tmp_path, redis):
    (a,) = processes(tmp_path, redis, 1, "--redis-timeout", "1")
    try:
        client = await YClient(f"{a.ws}/doc").connect()
        client.text.insert(0, "kept ")
        await client.roundtrip()
        redis.kill()
        client.text.insert(len(client.text), "offline")
        await eventually(lambda: client.closed.is_set(), timeout=10)
        assert client.close_code == 1013
        assert a.get("/readyz")[0] == 503
        assert b"collab_redis_up 0.0" in a.get("/metrics")[1]
        assert a.get("/api/docs/doc/text")[0] == 503
        with pytest.raises(Exception, match="503"):
            await YClient(f"{a.ws}/other").connect()
        assert "Redis is unreachable" in a.output()
        redis.start()
        eventually_sync(lambda: a.get("/readyz")[0] == 200, timeout=15)
        metrics = a.get("/metrics")[1]
        assert b"collab_redis_up 1.0" in metrics
        assert b'collab_redis_durability{appendfsync="always"} 1.0' in metrics
        await client.connect()  # the client resends what the server did not keep
        await eventually(lambda: a.get("/api/docs/doc/text") == (200, b"kept offline"))
        await client.close()
    finally:
        stop_all([a])


async def test_presence_crosses_processes_and_dies_with_its_process(tmp_path, redis):
    a, b = processes(tmp_path, redis, 2, "--redis-heartbeat-ttl", "2")
    try:
        async with JsPeers() as js:
            ann = await js.peer(a.ws, "doc", name="ann")
            await ann.request("awareness", state={"user": {"name": "Ann"}})
            bob = await js.peer(b.ws, "doc", name="bob")  # joins after: sees ann at once

            async def names() -> set[str]:
                states = (await bob.state())["awareness"].values()
                return {s["user"]["name"] for s in states if s and "user" in s}

            await eventually(lambda: _has(names, "Ann"), timeout=10)
            a.kill()
            started = asyncio.get_running_loop().time()
            await eventually(lambda: _lacks(names, "Ann"), timeout=6)  # TTL 2 s, not 30 s
            assert asyncio.get_running_loop().time() - started < 6
    finally:
        stop_all([b])


async def _has(names, name: str) -> bool:  # type: ignore[no-untyped-def]
    return name in await names()


async def _lacks(names, name: str) -> bool:  # type: ignore[no-untyped-def]
    return name not in await names()


async def test_workers_share_one_port_and_count_clients_cluster_wide(tmp_path, redis):
    port = free_port()
    command = [sys.executable, "-m", "collab", "serve", "--host", "127.0.0.1", "--port",
               str(port), "--redis-url", redis.url, "--workers", "2"]  # fmt: skip
    with open(tmp_path / "workers.log", "wb") as log:  # the children keep their own copy
        proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env=env_without_collab())  # fmt: skip
    try:
        client = redis.client()
        eventually_sync(lambda: client.zcard("collab:procs") == 2, timeout=20)
        url = f"ws://127.0.0.1:{port}/ws/doc"
        clients = [await YClient(url).connect() for _ in range(8)]
        clients[0].text.insert(0, "hello")
        await eventually(lambda: all(str(c.text) == "hello" for c in clients))

        def listed() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/docs", timeout=5) as res:
                return b'"clients": 8' in res.read()

        eventually_sync(listed, timeout=10)
        for c in clients:
            await c.close()
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
    assert client.zcard("collab:procs") == 0  # each worker left the process set


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (("--appendfsync", "everysec"), "appendfsync is 'everysec'"),
        (("--maxmemory-policy", "allkeys-lru"), "maxmemory-policy is 'allkeys-lru'"),
        (("--appendonly", "no"), "appendonly is no"),
    ],
)
def test_collab_refuses_a_redis_that_cannot_keep_the_promise(tmp_path, setting, message):
    require_redis()
    server = RedisServer(tmp_path / "redis", *setting).start()
    try:
        command = [sys.executable, "-m", "collab", "serve", "--port", "0", "--redis-url",
                   server.url]  # fmt: skip
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=30,
                              env=env_without_collab())  # fmt: skip
        assert done.returncode == 2 and message in done.stderr, done.stderr
        if "maxmemory" not in message:  # relaxed durability starts, and says what it means
            relaxed = ServerProcess(tmp_path / "p", "--redis-url", server.url,
                                    "--redis-durability", "relaxed")  # fmt: skip
            with relaxed:
                assert f"relaxed: {message}" in relaxed.output()
    finally:
        server.stop()


async def test_import_moves_a_data_dir_into_redis_and_export_reads_while_serving(tmp_path, redis):
    data = tmp_path / "data"
    with ServerProcess(data) as single:  # documents made by a single-process server
        for name, text in (("one", "first"), ("two/b", "second")):
            assert single.request("PUT", f"/api/docs/{quote(name, safe='')}/text",
                                  text.encode()) == 204  # fmt: skip
    collab = [sys.executable, "-m", "collab"]
    done = subprocess.run([*collab, "import", "--data-dir", str(data), "--redis-url", redis.url],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    again = subprocess.run([*collab, "import", "--data-dir", str(data), "--redis-url", redis.url],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert again.returncode == 1 and "exists in Redis" in again.stderr  # never silently merged
    (server,) = processes(tmp_path, redis, 1)
    try:
        client = await YClient(f"{server.ws}/one").connect()
        assert str(client.text) == "first"
        client.text.insert(len(client.text), " edited")
        await client.roundtrip()
        exported = subprocess.run([*collab, "export", "one", "--redis-url", redis.url],
                                  cwd=ROOT, capture_output=True, timeout=60)  # fmt: skip
        assert exported.returncode == 0 and exported.stdout == b"first edited"
        assert server.get("/api/docs/two%2Fb/text") == (200, b"second")
        await client.close()
    finally:
        stop_all([server])


def test_redis_url_with_a_data_dir_is_a_clear_error(tmp_path):
    command = [sys.executable, "-m", "collab", "serve", "--data-dir", str(tmp_path),
               "--redis-url", "redis://127.0.0.1:1/0"]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=30,
                          env=env_without_collab())  # fmt: skip
    assert done.returncode == 2 and "not both" in done.stderr
