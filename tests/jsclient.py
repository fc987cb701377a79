"""Drive stock Yjs clients (Node scripts in ``tests/js``) from pytest.

Each script is one ``node`` process speaking JSON lines: events and replies on
stdout, commands (with an ``id``) on stdin. ``JsPeers`` starts them and, on
exit, ends every process it started, so no test leaks a node process.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from .needs import require

JS_DIR = Path(__file__).resolve().parent / "js"
_LINE_LIMIT = 16 << 20  # a state reply carries the whole text


def require_node() -> str:
    """Return the path of ``node``; skip (or fail when ``CI`` is set) without it."""
    node = shutil.which("node")
    if node is None:
        missing = "node is not installed"
    elif not (JS_DIR / "node_modules" / "y-websocket").is_dir():
        missing = "tests/js/node_modules is missing (run `make install-test`)"
    else:
        return node
    require(False, f"{missing}: JS interop tests need it")
    raise AssertionError("unreachable")  # require() skipped or failed


class JsPeer:
    """One node process running a script from ``tests/js``."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.client_id = 0  # the Y.Doc's clientID, for peer.mjs
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.stderr = ""
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._tasks = [
            asyncio.ensure_future(self._read_stdout()),
            asyncio.ensure_future(self._read_stderr()),
        ]

    async def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            message = json.loads(raw)
            future = self._pending.pop(message.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(message)
            elif "id" not in message:
                self.events.put_nowait(message)
        gone = RuntimeError(f"{self.name} exited ({self.proc.returncode}); stderr: {self.stderr}")
        for future in self._pending.values():
            if not future.done():
                future.set_exception(gone)
        self._pending.clear()
        self.events.put_nowait({"event": "exit"})

    async def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        async for raw in self.proc.stderr:
            self.stderr = (self.stderr + raw.decode(errors="replace"))[-8000:]

    async def request(self, cmd: str, timeout: float = 10.0, **fields: Any) -> dict[str, Any]:
        """Send one command and return its reply.

        Raises:
            AssertionError: the script reported an error, or no reply came.
        """
        assert self.proc.stdin is not None
        ident = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        line = json.dumps({"id": ident, "cmd": cmd, **fields}) + "\n"
        self.proc.stdin.write(line.encode())
        try:
            reply = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise AssertionError(f"{self.name}: no reply to {cmd} within {timeout}s") from None
        finally:
            self._pending.pop(ident, None)
        assert "error" not in reply, f"{self.name}: {cmd} failed: {reply['error']}"
        return reply

    async def event(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        """Return the next event named ``kind``, skipping others."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                message = await asyncio.wait_for(self.events.get(), max(remaining, 0.0))
            except TimeoutError:
                raise AssertionError(
                    f"{self.name}: no {kind!r} within {timeout}s; stderr: {self.stderr}"
                ) from None
            if message.get("event") == kind:
                return message
            if message.get("event") == "exit":
                raise AssertionError(f"{self.name} exited waiting for {kind!r}: {self.stderr}")

    async def state(self) -> dict[str, Any]:
        return await self.request("state")

    def kill(self) -> None:
        """SIGKILL: the OS closes the TCP connection, no WebSocket close frame."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)

    async def close(self) -> None:
        """End the process (politely first) and reap it."""
        if self.proc.returncode is None and self.proc.stdin is not None:
            with contextlib.suppress(Exception):
                self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 3)
            except TimeoutError:
                self.kill()
        await self.proc.wait()
        for task in self._tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 3)


class JsPeers:
    """Starts node scripts; ``async with`` ends all of them on the way out."""

    def __init__(self) -> None:
        self.node = require_node()
        self.peers: list[JsPeer] = []

    async def start(self, script: str, *args: str, name: str | None = None) -> JsPeer:
        proc = await asyncio.create_subprocess_exec(
            self.node,
            str(JS_DIR / script),
            *args,
            cwd=JS_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=_LINE_LIMIT,
        )
        peer = JsPeer(name or f"{script}#{len(self.peers)}", proc)
        self.peers.append(peer)
        return peer

    async def peer(self, server_url: str, room: str, name: str | None = None) -> JsPeer:
        """Start ``peer.mjs`` on ``room`` and wait until its provider is synced."""
        peer = await self.start("peer.mjs", server_url, room, name=name)
        ready = await peer.event("ready")
        peer.client_id = int(ready["clientID"])
        await peer.event("synced")
        return peer

    async def __aenter__(self) -> JsPeers:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(peer.close() for peer in self.peers))


# A stock y-websocket provider that authenticates with ?token= and prints what it hears:
# node --input-type=module -e STOCK_CLIENT URL ROOM TOKEN (run with cwd=JS_DIR).
STOCK_CLIENT = r"""
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws'
const [url, room, token] = process.argv.slice(1)
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
console.warn = (...args) => emit({ event: 'warn', text: args.join(' ') })
const doc = new Y.Doc()
const provider = new WebsocketProvider(url, room, doc, {
  WebSocketPolyfill: WebSocket, disableBc: true, params: { token }
})
provider.on('sync', (synced) => {
  if (synced) emit({ event: 'synced', text: doc.getText('content').toString() })
})
let closed = false  // destroy() emits connection-close again
provider.on('connection-close', (event) => {
  if (closed) return
  closed = true
  emit({ event: 'close', code: event && event.code, reason: event && event.reason })
  provider.destroy()
  process.exit(0)
})
"""
