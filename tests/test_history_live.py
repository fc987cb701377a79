"""History against a real server process: stock y-websocket peers, access control on, SIGKILL.

* Versions name their authors (the token's ``sub`` and the awareness name and colour).
* Restoring over HTTP while a peer keeps typing: both peers converge to the
  version's text plus what was typed after the restore took its snapshot,
  neither reconnects; the pre-restore version is listed and restoring it undoes.
* SIGKILL while versions are being cut under load: every listed version is
  readable (text and Yjs state agree), the document loads intact, the log stays bounded.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import jwt
import pytest
from pycrdt import Doc, Text

from tests.jsclient import JsPeer, JsPeers
from tests.server import ServerProcess
from tests.wait import eventually
from tests.yclient import YClient

SECRET = "history-live-secret-0123456789abcdefgh"


def token(sub: str, mode: str = "rw") -> str:
    return str(jwt.encode({"sub": sub, "mode": mode, "exp": time.time() + 600}, SECRET, "HS256"))


async def in_thread(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def call(server: ServerProcess, method: str, path: str, tok: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {tok}"} if tok else {}
    request = urllib.request.Request(f"{server.url}{path}", method=method, headers=headers)
    if method == "POST":
        request.data = b""
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
    return json.loads(body) if response.headers["Content-Type"] == "application/json" else body


async def versions(server: ServerProcess, name: str, tok: str) -> list[dict[str, Any]]:
    answer = await in_thread(call, server, "GET", f"/api/docs/{name}/versions", tok)
    return list(answer["versions"])


async def peer(peers: JsPeers, server: ServerProcess, name: str, sub: str, user: dict) -> JsPeer:
    found = await peers.start("peer.mjs", f"{server.ws}", name, token(sub), name=sub)
    await found.event("ready")
    await found.event("synced")
    await found.request("awareness", state={"user": user})
    return found


@pytest.mark.timeout(seconds=90)
async def test_authors_and_a_restore_while_someone_types(tmp_path: Path):
    server = ServerProcess(tmp_path / "data", "--jwt-secret", SECRET, "--history-idle", "0.4")
    await in_thread(server.start)
    reader = token("observer", "ro")
    ann_user = {"name": "Ann", "color": "#3e63dd"}
    try:
        async with JsPeers() as peers:
            ann = await peer(peers, server, "plan", "ann", ann_user)
            bob = await peer(peers, server, "plan", "bob", {"name": "Bob", "color": "#e5484d"})
            first = "héllo 😀\nthe plan\n"
            await ann.request("insert", index=0, text=first)
            listed: list[dict[str, Any]] = []

            async def count(n: int) -> bool:
                listed[:] = await versions(server, "plan", reader)
                return len(listed) == n

            await eventually(lambda: count(1), 15)
            assert listed[0]["authors"] == [{"user": "ann", **ann_user}]
            await bob.request(
                "insert",
                index=len("héllo 😀\nthe plan\n".encode("utf-16-le")) // 2,
                text="bob was here\n",
            )
            await eventually(lambda: count(2), 15)
            assert [a["user"] for a in listed[0]["authors"]] == ["bob"]
            assert listed[0]["authors"][0]["name"] == "Bob"
            v1 = listed[1]["id"]

            typed = "".join(chr(ord("a") + i % 26) for i in range(120))
            typing = asyncio.ensure_future(ann.request("type", text=typed, delay=15, timeout=30))
            await eventually(lambda: _typed_some(bob), 10)
            done = await in_thread(
                call, server, "POST", f"/api/docs/plan/versions/{v1}/restore", token("bob")
            )
            assert done["changed"] and done["before"]["kind"] == "pre-restore"
            await typing
            await eventually(lambda: _same(ann, bob), 10)
            a, b = await ann.state(), await bob.state()
            assert a["text"] == b["text"]
            assert a["text"].startswith(first)
            after = a["text"][len(first) :]
            assert (
                after and typed.endswith(after) and after != typed
            )  # typing after the fork merged
            assert a["connects"] == b["connects"] == 1 and a["connected"] and b["connected"]

            listed = await versions(server, "plan", reader)
            reasons = [v["reason"] for v in listed]
            assert "restore" in reasons and "pre-restore" in reasons
            before = done["before"]
            assert before["id"] in [v["id"] for v in listed]
            kept = await in_thread(
                call, server, "GET", f"/api/docs/plan/versions/{before['id']}/text", reader
            )
            assert kept.decode().startswith(first + "bob was here\n")
            undo = await in_thread(
                call,
                server,
                "POST",
                f"/api/docs/plan/versions/{before['id']}/restore",
                token("ann"),
            )
            assert undo["changed"]
            await eventually(lambda: _text_is(bob, kept.decode()), 10)
            await eventually(lambda: _text_is(ann, kept.decode()), 10)
            assert (await bob.state())["connects"] == 1
    finally:
        await in_thread(server.stop)


async def _typed_some(p: JsPeer) -> bool:
    return "abcde" in (await p.state())["text"]


async def _same(a: JsPeer, b: JsPeer) -> bool:
    return (await a.state())["text"] == (await b.state())["text"]


async def _text_is(p: JsPeer, text: str) -> bool:
    return (await p.state())["text"] == text


async def stream(writer: YClient, stop: asyncio.Event, typed: list[str]) -> None:
    for i in range(100_000):
        if stop.is_set() or not writer.connected:
            return
        piece = f"w{i};"
        writer.text.insert(len(str(writer.text).encode()), piece)
        typed.append(piece)
        await asyncio.sleep(0.002)


@pytest.mark.timeout(seconds=90)
async def test_sigkill_during_version_cuts_leaves_every_listed_version_readable(tmp_path: Path):
    data = tmp_path / "data"
    args = ("--history-idle", "0.05", "--history-max-interval", "0.1", "--compact-bytes", "4096")
    server = ServerProcess(data, *args)
    await in_thread(server.start)
    try:
        for cycle in range(4):
            writer = await YClient(f"{server.ws}/busy").connect()
            stop, typed = asyncio.Event(), []
            start = await _count(server) if cycle else 0
            task = asyncio.ensure_future(stream(writer, stop, typed))
            await eventually(lambda start=start: _more(server, start + 2), 20)
            server.kill()  # while it cuts versions every 0.1 s
            stop.set()
            await task
            await writer.close()
            await in_thread(server.start)
            listed = await in_thread(call, server, "GET", "/api/docs/busy/versions?limit=1000")
            assert listed["versions"]
            current = (await in_thread(call, server, "GET", "/api/docs/busy/text")).decode()
            for v in listed["versions"]:
                text = (
                    await in_thread(call, server, "GET", f"/api/docs/busy/versions/{v['id']}/text")
                ).decode()
                state = await in_thread(
                    call, server, "GET", f"/api/docs/busy/versions/{v['id']}/update"
                )
                doc = Doc()
                doc.apply_update(state)
                assert str(doc.get("content", type=Text)) == text
                assert current.startswith(text) and len(text) == v["chars"]
            logs = sum(p.stat().st_size for p in data.glob("busy.*.log"))
            assert logs < 4 * 4096, logs  # the live log is still compacted
    finally:
        await in_thread(server.stop)


async def _count(server: ServerProcess) -> int:
    listed = await in_thread(call, server, "GET", "/api/docs/busy/versions?limit=1000")
    return len(listed["versions"])


async def _more(server: ServerProcess, n: int) -> bool:
    return await _count(server) >= n
