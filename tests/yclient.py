"""A small, real Yjs client in Python (pycrdt + tornado websocket) for tests."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Sequence

from pycrdt import Doc, Text, TransactionEvent
from tornado.httpclient import HTTPRequest
from tornado.websocket import WebSocketClientConnection, WebSocketClosedError, websocket_connect

from collab.core import protocol
from collab.core.protocol import (
    AwarenessEntry,
    AwarenessUpdate,
    SyncStep1,
    SyncStep2,
    Update,
)

from .wait import eventually

__all__ = ["YClient", "eventually"]  # eventually: for tests that import it from here


class YClient:
    """Speaks y-websocket to one document; ``text`` is its ``content`` Y.Text."""

    def __init__(
        self,
        url: str,
        client_id: int | None = None,
        headers: dict[str, str] | None = None,
        ssl_options: ssl.SSLContext | None = None,
    ) -> None:
        self.url = url
        self.headers = headers or {}
        self.ssl_options = ssl_options
        self.doc: Doc = Doc(client_id=client_id) if client_id is not None else Doc()
        self.text = self.doc.get("content", type=Text)
        self.awareness: dict[int, AwarenessEntry] = {}
        self.synced = asyncio.Event()
        self.received: list[bytes] = []
        self.ws: WebSocketClientConnection | None = None
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.closed = asyncio.Event()
        self.on_frame: Callable[[bytes], None] | None = None
        self._remote = False
        self._reader: asyncio.Task[None] | None = None
        self.doc.observe(self._on_change)

    def _on_change(self, event: TransactionEvent) -> None:
        if not self._remote and self.ws is not None:
            self.send(protocol.encode(Update(event.update)))

    async def connect(self, wait_synced: bool = True, first: Sequence[bytes] = ()) -> YClient:
        """Open the socket and sync (again: offline edits are sent on reconnect).

        ``first``: frames to send before anything else (before sync step 1).
        """
        self.synced.clear()
        self.closed.clear()
        request = HTTPRequest(self.url, headers=self.headers, ssl_options=self.ssl_options)
        self.ws = await websocket_connect(request)
        self._reader = asyncio.ensure_future(self._read())
        for frame in first:
            self.send(frame)
        self.send(protocol.encode(SyncStep1(self.doc.get_state())))
        if wait_synced:
            await asyncio.wait_for(self.synced.wait(), 10)
        return self

    async def roundtrip(self) -> None:
        """Return once the server has handled everything this client sent so far."""
        self.synced.clear()
        self.send(protocol.encode(SyncStep1(self.doc.get_state())))
        await asyncio.wait_for(self.synced.wait(), 10)

    @property
    def connected(self) -> bool:
        return self.ws is not None and not self.closed.is_set()

    def send(self, data: bytes) -> None:
        """Send one frame; while disconnected, edits stay local until ``connect``."""
        if self.connected:
            assert self.ws is not None
            try:
                sent = self.ws.write_message(data, binary=True)
            except WebSocketClosedError:
                return  # the server is gone: the edit stays in the doc for the next sync
            sent.add_done_callback(lambda f: f.exception())  # the same, noticed later

    def set_awareness(self, client_id: int, clock: int, state: str) -> None:
        payload = protocol.encode_awareness([AwarenessEntry(client_id, clock, state)])
        self.send(protocol.encode(AwarenessUpdate(payload)))

    async def _read(self) -> None:
        assert self.ws is not None
        while True:
            data = await self.ws.read_message()
            if data is None:
                self.close_code = self.ws.close_code
                self.close_reason = self.ws.close_reason
                self.ws.close()  # closed by the server: release the client's side too
                self.closed.set()
                return
            assert isinstance(data, bytes)
            self.received.append(data)
            if self.on_frame is not None:
                self.on_frame(data)
            self._handle(protocol.decode(data))

    def _handle(self, message: protocol.Message) -> None:
        match message:
            case SyncStep1(state_vector):
                self.send(protocol.encode(SyncStep2(self.doc.get_update(state_vector))))
            case SyncStep2(update) | Update(update):
                self._remote = True
                try:
                    self.doc.apply_update(update)
                finally:
                    self._remote = False
                if isinstance(message, SyncStep2):
                    self.synced.set()
            case AwarenessUpdate(payload):
                for entry in protocol.decode_awareness(payload):
                    self.awareness[entry.client_id] = entry

    def present(self) -> dict[int, str]:
        return {cid: e.state for cid, e in self.awareness.items() if not e.removed}

    async def close(self) -> None:
        if self.ws is not None:
            self.ws.close()
            await asyncio.wait_for(self.closed.wait(), 5)
